#include "tensor_view.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>

#include <cstdint>

namespace qkit::torch_ext {

void CheckCpuDense(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": `", name, "` is an undefined tensor");
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": `", name, "` is on device ", t.device(),
                    "; qkit's kernels run on CPU tensors only (move it with .cpu())");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, op, ": `", name, "` has layout ", t.layout(),
                    "; only dense (strided) tensors are supported");
}

namespace {

bool ToDType(at::ScalarType s, DType* out) {
  switch (s) {
    case at::kFloat:
      *out = DType::kFloat32;
      return true;
    case at::kHalf:
      *out = DType::kFloat16;
      return true;
    case at::kBFloat16:
      *out = DType::kBFloat16;
      return true;
    case at::kChar:
      *out = DType::kInt8;
      return true;
    case at::kByte:
      *out = DType::kUInt8;
      return true;
    case at::kShort:
      *out = DType::kInt16;
      return true;
    case at::kInt:
      *out = DType::kInt32;
      return true;
    default:
      return false;
  }
}

}  // namespace

TensorView ToView(const at::Tensor& t, Kind kind, const char* op, const char* name) {
  CheckCpuDense(t, op, name);
  DType dtype;
  const bool known = ToDType(t.scalar_type(), &dtype);
  if (kind == Kind::kFloating) {
    TORCH_CHECK_VALUE(known && IsFloating(dtype), op, ": `", name, "` has dtype ", t.scalar_type(),
                      "; expected float32, float16 or bfloat16");
  } else {
    TORCH_CHECK_VALUE(known && !IsFloating(dtype), op, ": `", name, "` has dtype ", t.scalar_type(),
                      "; expected int8, uint8, int16 or int32");
  }
  TORCH_CHECK_VALUE(t.dim() <= kMaxDims, op, ": `", name, "` has ", t.dim(),
                    " dims; qkit supports at most ", kMaxDims);
  TensorView v;
  v.data = t.numel() == 0 ? nullptr : t.data_ptr();
  v.dtype = dtype;
  v.ndim = static_cast<int>(t.dim());
  for (int d = 0; d < v.ndim; ++d) {
    v.shape[d] = t.size(d);
    v.strides[d] = t.stride(d);
  }
  return v;
}

at::Tensor AsComputeDtype(const at::Tensor& t, const char* op, const char* name) {
  CheckCpuDense(t, op, name);
  const auto s = t.scalar_type();
  if (s == at::kDouble) return t.to(at::kFloat);
  TORCH_CHECK_VALUE(s == at::kFloat || s == at::kHalf || s == at::kBFloat16, op, ": `", name,
                    "` has dtype ", s,
                    "; expected a floating tensor (float32, float16, bfloat16; float64 is "
                    "computed in float32)");
  return t;
}

at::Tensor ParamAsFloat(const at::Tensor& t, int64_t expected, const char* op, const char* name) {
  CheckCpuDense(t, op, name);
  TORCH_CHECK_VALUE(t.scalar_type() != at::kBool && !t.is_complex(), op, ": `", name,
                    "` has dtype ", t.scalar_type(), "; expected a real number type");
  TORCH_CHECK_VALUE(t.numel() == expected, op, ": `", name, "` has ", t.numel(),
                    " element(s) (shape ", t.sizes(), "); expected ", expected);
  return t.detach().to(at::kFloat).contiguous();
}

int64_t NumSlots(const at::Tensor& x, c10::optional<int64_t> axis, int64_t group_size,
                 const char* op) {
  if (!axis.has_value()) {
    TORCH_CHECK_VALUE(group_size == 0, op, ": `group_size`=", group_size,
                      " needs an `axis` (per-group quantization)");
    return 1;
  }
  const int64_t nd = x.dim();
  TORCH_CHECK_INDEX(nd >= 1, op,
                    ": per-channel/per-group parameters need a tensor with at "
                    "least one dim; got a 0-d tensor (`axis`=",
                    *axis, ")");
  TORCH_CHECK_INDEX(*axis >= -nd && *axis < nd, op, ": `axis`=", *axis,
                    " out of range for a tensor of shape ", x.sizes(), " (valid: [", -nd, ", ",
                    nd - 1, "])");
  const int64_t a = *axis < 0 ? *axis + nd : *axis;
  if (group_size == 0) return x.size(a);
  TORCH_CHECK_VALUE(group_size >= 1, op, ": `group_size`=", group_size, " must be >= 1");
  return x.numel() / std::max<int64_t>(x.size(a), 1) * ((x.size(a) + group_size - 1) / group_size);
}

at::Tensor EmptyOutput(const at::Tensor& t, c10::optional<at::ScalarType> dtype) {
  at::Tensor out =
      dtype.has_value() ? at::empty_like(t, t.options().dtype(*dtype)) : at::empty_like(t);
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const size_t bytes = out.nbytes();
  if (bytes >= (size_t{16} << 20)) {
#ifdef MADV_HUGEPAGE
    const uintptr_t begin = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t hi = (begin + bytes) & ~(kHuge - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only
#endif
  }
  return out;
}

Context MakeContext() {
  Context ctx;
  ctx.num_threads = std::max(1, at::get_num_threads());
  return ctx;
}

}  // namespace qkit::torch_ext
