#include "internal/strided_walk.h"

namespace qkit::internal {

int64_t NormalizeLayoutAxis(const TensorView& x, const ParamLayout& layout, const char* caller) {
  if (layout.granularity == Granularity::kPerTensor) return -1;
  const int nd = x.ndim;
  QKIT_REQUIRE(nd >= 1, OutOfRange,
               caller << ": per-channel/per-group quantization needs a tensor with at least one "
                         "dim; got a 0-d tensor (`axis`="
                      << layout.axis << ")");
  QKIT_REQUIRE(layout.axis >= -nd && layout.axis < nd, OutOfRange,
               caller << ": `axis`=" << layout.axis << " out of range for a tensor of shape "
                      << x.ShapeString() << " (valid: [" << -nd << ", " << nd - 1 << "])");
  if (layout.granularity == Granularity::kPerGroup) {
    QKIT_REQUIRE(layout.group_size >= 1, InvalidArgument,
                 caller << ": `group_size`=" << layout.group_size << " must be >= 1");
  }
  return layout.axis < 0 ? layout.axis + nd : layout.axis;
}

Walk::Walk(const TensorView* const* views, int num_operands, const ParamLayout& layout,
           const char* caller) {
  QKIT_DCHECK(num_operands >= 1 && num_operands <= kMaxOperands);
  nops_ = num_operands;
  const TensorView& x = *views[0];
  QKIT_REQUIRE(x.ndim >= 0 && x.ndim <= kMaxDims, InvalidArgument,
               caller << ": tensors may have at most " << kMaxDims << " dims; got ndim="
                      << x.ndim);
  for (int op = 0; op < nops_; ++op) {
    const TensorView& v = *views[op];
    bool same = v.ndim == x.ndim;
    for (int d = 0; same && d < x.ndim; ++d) same = v.shape[d] == x.shape[d];
    QKIT_REQUIRE(same, InvalidArgument,
                 caller << ": shape mismatch: " << v.ShapeString() << " vs " << x.ShapeString());
    for (int d = 0; d < x.ndim; ++d) {
      QKIT_REQUIRE(v.shape[d] >= 0, InvalidArgument,
                   caller << ": negative size " << v.shape[d] << " in shape " << v.ShapeString());
    }
    // No tensor can have 2^48 elements on a 48-bit address space; larger (or overflowing)
    // shapes are caller errors, rejected before any offset arithmetic.
    QKIT_REQUIRE(v.numel() < (int64_t{1} << 48), InvalidArgument,
                 caller << ": absurd shape " << v.ShapeString() << " (2^48 elements or more)");
    QKIT_REQUIRE(v.data != nullptr || v.numel() == 0, InvalidArgument,
                 caller << ": null data pointer for a non-empty tensor of shape "
                        << v.ShapeString());
    base_[op] = static_cast<char*>(v.data);
    esize_[op] = DTypeSize(v.dtype);
    dtype_[op] = v.dtype;
  }
  granularity_ = layout.granularity;
  const int64_t axis = NormalizeLayoutAxis(x, layout, caller);
  group_ = layout.granularity == Granularity::kPerGroup ? layout.group_size : 1;
  numel_ = x.numel();

  // Collect dims: drop size-1 dims except the parameter axis, then merge neighbours that are
  // contiguous in every operand (never merging the axis with anything).
  int n = 0;
  int64_t shape[kMaxDims + 1];
  int64_t stride[kMaxOperands][kMaxDims + 1];
  int axis_dim = -1;
  for (int d = 0; d < x.ndim; ++d) {
    if (x.shape[d] == 1 && d != axis) continue;
    if (d == axis) axis_dim = n;
    shape[n] = x.shape[d];
    for (int op = 0; op < nops_; ++op) stride[op][n] = views[op]->strides[d];
    ++n;
  }
  if (n == 0) {  // 0-d or all-ones: a single element
    shape[0] = 1;
    for (int op = 0; op < nops_; ++op) stride[op][0] = 1;
    n = 1;
  }
  ndim_ = 0;
  for (int d = 0; d < n; ++d) {
    if (ndim_ > 0) {
      const int prev = ndim_ - 1;
      const bool touches_axis = (d == axis_dim) || (prev == axis_dim_);
      bool mergeable = !touches_axis;
      for (int op = 0; mergeable && op < nops_; ++op) {
        mergeable = stride_[op][prev] == stride[op][d] * shape[d];
      }
      if (mergeable) {
        shape_[prev] *= shape[d];
        for (int op = 0; op < nops_; ++op) stride_[op][prev] = stride[op][d];
        continue;
      }
    }
    if (d == axis_dim) axis_dim_ = ndim_;
    shape_[ndim_] = shape[d];
    for (int op = 0; op < nops_; ++op) stride_[op][ndim_] = stride[op][d];
    ++ndim_;
  }

  switch (granularity_) {
    case Granularity::kPerTensor:
      num_params_ = 1;
      break;
    case Granularity::kPerChannel:
      num_params_ = shape_[axis_dim_];
      break;
    case Granularity::kPerGroup: {
      int64_t acc = 1;
      for (int d = ndim_ - 1; d >= 0; --d) {
        pstride_[d] = acc;
        const int64_t extent = d == axis_dim_ ? (shape_[d] + group_ - 1) / group_ : shape_[d];
        acc *= extent;
      }
      num_params_ = acc;
      break;
    }
  }
}

}  // namespace qkit::internal
