// Non-owning strided views over tensors: shapes and strides are int64 and count elements,
// as in torch. A view never owns or allocates memory.
#ifndef QKIT_TENSOR_H_
#define QKIT_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace qkit {

enum class DType : uint8_t {
  kFloat32,
  kFloat16,   // IEEE binary16; computed in float32, results rounded back to nearest-even
  kBFloat16,  // bfloat16; computed in float32, results rounded back to nearest-even
  kInt8,
  kUInt8,
  kInt16,
  kInt32,
};

const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);
inline bool IsFloating(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

inline constexpr int kMaxDims = 8;

// A strided view. `data` points at element [0, 0, ...]; strides may be any int64 (including
// 0 for broadcast inputs and negative), counted in elements of `dtype`.
// A 0-d view (ndim == 0) has one element. A view with any zero-sized dim is empty.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  // Product of the shape; INT64_MAX when it overflows (an absurd shape, rejected by the ops).
  int64_t numel() const {
    int64_t n = 1;
    bool overflow = false;
    for (int i = 0; i < ndim; ++i) {
      if (shape[i] == 0) return 0;
      overflow |= __builtin_mul_overflow(n, shape[i], &n);
    }
    return overflow ? INT64_MAX : n;
  }
  bool IsContiguous() const;  // row-major dense
  std::string ShapeString() const;  // "[2, 3, 4]"

  // A contiguous (row-major) view of `shape` over `data`.
  static TensorView Contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape);
  static TensorView Contiguous(void* data, DType dtype, int ndim, const int64_t* shape);
  // A 1-d contiguous float32 view of `count` elements.
  static TensorView Vector(float* data, int64_t count);
};

}  // namespace qkit

#endif  // QKIT_TENSOR_H_
