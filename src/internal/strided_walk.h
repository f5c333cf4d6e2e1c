// Strided iteration shared by every op: collapse the dims that are contiguous in all operands,
// then hand out runs along the innermost dim for a range of logical (row-major) indices,
// together with the parameter slot of each element (per tensor / channel / group).
// ForEachF32Block adds the dtype layer: runs that are float32 with unit stride are passed
// through; anything else is gathered into (and scattered from) small float32 blocks.
#ifndef QKIT_INTERNAL_STRIDED_WALK_H_
#define QKIT_INTERNAL_STRIDED_WALK_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "internal/check.h"
#include "internal/half.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit::internal {

inline constexpr int kMaxOperands = 4;

// One run of consecutive logical elements along the innermost collapsed dim.
struct Run {
  char* ptr[kMaxOperands];        // first element of each operand
  int64_t stride[kMaxOperands];   // inner stride of each operand, in elements
  int64_t count;                  // elements in the run (>= 1)
  int64_t logical_start;          // row-major index of the first element (mask bit index)
  int64_t param_index;            // parameter slot of the first element
  int param_step;                 // 0: every element uses param_index; 1: element i uses
                                  // param_index + i
};

// Normalizes `layout.axis` against x (negative counts from the end) and validates it.
// Returns the normalized axis (or -1 for per-tensor).
int64_t NormalizeLayoutAxis(const TensorView& x, const ParamLayout& layout, const char* caller);

class Walk {
 public:
  // All views must have the same shape (checked, InvalidArgument naming `caller`). The layout
  // is validated against that shape.
  Walk(const TensorView* const* views, int num_operands, const ParamLayout& layout,
       const char* caller);

  int64_t numel() const { return numel_; }
  int64_t num_params() const { return num_params_; }
  int num_operands() const { return nops_; }
  DType dtype(int op) const { return dtype_[op]; }

  // Calls fn(const Run&) for the runs covering logical indices [begin, end), in order.
  template <class Fn>
  void ForEachRun(int64_t begin, int64_t end, Fn&& fn) const {
    if (begin >= end) return;
    int64_t coord[kMaxDims];
    int64_t rem = begin;
    for (int d = ndim_ - 1; d >= 0; --d) {
      coord[d] = rem % shape_[d];
      rem /= shape_[d];
    }
    const int inner = ndim_ - 1;
    int64_t pos = begin;
    while (pos < end) {
      int64_t n = std::min(shape_[inner] - coord[inner], end - pos);
      Run run;
      for (int op = 0; op < nops_; ++op) {
        int64_t off = 0;
        for (int d = 0; d < ndim_; ++d) off += coord[d] * stride_[op][d];
        run.ptr[op] = base_[op] + off * static_cast<int64_t>(esize_[op]);
        run.stride[op] = stride_[op][inner];
      }
      run.logical_start = pos;
      if (granularity_ == Granularity::kPerTensor) {
        run.param_index = 0;
        run.param_step = 0;
      } else if (granularity_ == Granularity::kPerChannel) {
        run.param_index = coord[axis_dim_];
        run.param_step = axis_dim_ == inner ? 1 : 0;
      } else {  // per group
        int64_t p = 0;
        for (int d = 0; d < ndim_; ++d) {
          p += (d == axis_dim_ ? coord[d] / group_ : coord[d]) * pstride_[d];
        }
        run.param_index = p;
        if (axis_dim_ == inner) {
          // Constant parameter within a group: stop the run at the group boundary.
          n = std::min(n, group_ - coord[inner] % group_);
          run.param_step = 0;
        } else {
          run.param_step = 1;  // the innermost dim is not the axis: pstride_[inner] == 1
        }
      }
      run.count = n;
      fn(static_cast<const Run&>(run));
      pos += n;
      coord[inner] += n;
      for (int d = inner; d > 0 && coord[d] == shape_[d]; --d) {
        coord[d] = 0;
        ++coord[d - 1];
      }
    }
  }

 private:
  int nops_ = 0;
  int ndim_ = 1;
  int64_t numel_ = 0;
  int64_t shape_[kMaxDims] = {};
  int64_t stride_[kMaxOperands][kMaxDims] = {};
  char* base_[kMaxOperands] = {};
  size_t esize_[kMaxOperands] = {};
  DType dtype_[kMaxOperands] = {};
  Granularity granularity_ = Granularity::kPerTensor;
  int axis_dim_ = -1;      // the parameter axis in collapsed dims
  int64_t group_ = 1;
  int64_t pstride_[kMaxDims] = {};  // row-major strides of the per-group parameter array
  int64_t num_params_ = 1;
};

// Converts one element of `dtype` at p to float (exact for every supported dtype except int32
// beyond 2^24).
inline float LoadAsF32(const char* p, DType dtype) {
  switch (dtype) {
    case DType::kFloat32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::kFloat16: { uint16_t h; std::memcpy(&h, p, 2); return F32FromF16Bits(h); }
    case DType::kBFloat16: { uint16_t h; std::memcpy(&h, p, 2); return F32FromBF16Bits(h); }
    case DType::kInt8: return static_cast<float>(*reinterpret_cast<const int8_t*>(p));
    case DType::kUInt8: return static_cast<float>(*reinterpret_cast<const uint8_t*>(p));
    case DType::kInt16: { int16_t v; std::memcpy(&v, p, 2); return static_cast<float>(v); }
    case DType::kInt32: { int32_t v; std::memcpy(&v, p, 4); return static_cast<float>(v); }
  }
  return 0.0f;
}

// Stores float v as `dtype` at p: float types round to nearest-even; integer types require an
// integral v inside the type's range (the caller clamps).
inline void StoreFromF32(char* p, DType dtype, float v) {
  switch (dtype) {
    case DType::kFloat32: std::memcpy(p, &v, 4); return;
    case DType::kFloat16: { uint16_t h = F16BitsFromF32(v); std::memcpy(p, &h, 2); return; }
    case DType::kBFloat16: { uint16_t h = BF16BitsFromF32(v); std::memcpy(p, &h, 2); return; }
    case DType::kInt8: *reinterpret_cast<int8_t*>(p) = static_cast<int8_t>(v); return;
    case DType::kUInt8: *reinterpret_cast<uint8_t*>(p) = static_cast<uint8_t>(v); return;
    case DType::kInt16: { int16_t s = static_cast<int16_t>(v); std::memcpy(p, &s, 2); return; }
    case DType::kInt32: { int32_t s = static_cast<int32_t>(v); std::memcpy(p, &s, 4); return; }
  }
}

inline constexpr int64_t kBlock = 1024;  // floats per gather/scatter block (4 KiB, in L1)

// Element-wise driver over float32 data. Operands [0, num_inputs) are read, the rest are
// written. For every piece of a run, calls
//   fn(const float* const* in, float* const* out, const Run& piece)
// where in[i] / out[j] are contiguous float32 arrays of piece.count elements: the tensor's own
// memory when it is float32 with unit inner stride, otherwise a block gathered (converted) from
// it / scattered (converted) back to it after fn returns. piece.ptr/stride are those of the
// tensor. An output that aliases an input exactly is safe (element-wise in place).
template <class Fn>
void ForEachF32Block(const Walk& walk, int num_inputs, int64_t begin, int64_t end, Fn&& fn) {
  const int nops = walk.num_operands();
  walk.ForEachRun(begin, end, [&](const Run& run) {
    bool direct[kMaxOperands];
    bool all_direct = true;
    for (int op = 0; op < nops; ++op) {
      direct[op] = walk.dtype(op) == DType::kFloat32 && (run.stride[op] == 1 || run.count == 1);
      all_direct = all_direct && direct[op];
    }
    const float* in[kMaxOperands];
    float* out[kMaxOperands];
    if (all_direct) {
      for (int op = 0; op < num_inputs; ++op) in[op] = reinterpret_cast<const float*>(run.ptr[op]);
      for (int op = num_inputs; op < nops; ++op) {
        out[op - num_inputs] = reinterpret_cast<float*>(run.ptr[op]);
      }
      fn(in, out, run);
      return;
    }
    alignas(64) float buf[kMaxOperands][kBlock];
    for (int64_t done = 0; done < run.count; done += kBlock) {
      Run piece = run;
      piece.count = std::min(kBlock, run.count - done);
      piece.logical_start = run.logical_start + done;
      piece.param_index = run.param_index + (run.param_step ? done : 0);
      for (int op = 0; op < nops; ++op) {
        const size_t es = DTypeSize(walk.dtype(op));
        piece.ptr[op] = run.ptr[op] + done * run.stride[op] * static_cast<int64_t>(es);
      }
      for (int op = 0; op < nops; ++op) {
        const bool is_in = op < num_inputs;
        float* dst = is_in ? nullptr : out[op - num_inputs];
        if (direct[op]) {
          if (is_in) {
            in[op] = reinterpret_cast<const float*>(piece.ptr[op]);
          } else {
            out[op - num_inputs] = reinterpret_cast<float*>(piece.ptr[op]);
          }
          continue;
        }
        if (is_in) {
          const DType dt = walk.dtype(op);
          const int64_t step = piece.stride[op] * static_cast<int64_t>(DTypeSize(dt));
          const char* p = piece.ptr[op];
          for (int64_t i = 0; i < piece.count; ++i, p += step) buf[op][i] = LoadAsF32(p, dt);
          in[op] = buf[op];
        } else {
          out[op - num_inputs] = buf[op];
        }
        (void)dst;
      }
      fn(in, out, piece);
      for (int op = num_inputs; op < nops; ++op) {
        if (direct[op]) continue;
        const DType dt = walk.dtype(op);
        const int64_t step = piece.stride[op] * static_cast<int64_t>(DTypeSize(dt));
        char* p = piece.ptr[op];
        for (int64_t i = 0; i < piece.count; ++i, p += step) StoreFromF32(p, dt, buf[op][i]);
      }
    }
  });
}

}  // namespace qkit::internal

#endif  // QKIT_INTERNAL_STRIDED_WALK_H_
