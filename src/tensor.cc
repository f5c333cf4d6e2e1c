#include <sstream>

#include "internal/check.h"
#include "qkit/tensor.h"

namespace qkit {

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
  }
  return "unknown";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kInt8: return 1;
    case DType::kUInt8: return 1;
    case DType::kInt16: return 2;
    case DType::kInt32: return 4;
  }
  return 0;
}

bool TensorView::IsContiguous() const {
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    if (d > 0 && __builtin_mul_overflow(expected, shape[d], &expected)) return false;
  }
  return true;
}

std::string TensorView::ShapeString() const {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < ndim; ++d) os << (d ? ", " : "") << shape[d];
  os << "]";
  return os.str();
}

TensorView TensorView::Contiguous(void* data, DType dtype, int nd, const int64_t* shape) {
  QKIT_REQUIRE(nd >= 0 && nd <= kMaxDims, InvalidArgument,
               "qkit::TensorView: ndim=" << nd << " outside [0, " << kMaxDims << "]");
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = nd;
  int64_t s = 1;
  for (int d = nd - 1; d >= 0; --d) {
    v.shape[d] = shape[d];
    v.strides[d] = s;
    // The outermost size never enters a stride; an inner product that overflows int64 is an
    // absurd shape (and would be undefined behaviour).
    QKIT_REQUIRE(d == 0 || !__builtin_mul_overflow(s, shape[d], &s), InvalidArgument,
                 "qkit::TensorView::Contiguous: `shape` " << v.ShapeString()
                                                            << " overflows int64 strides");
  }
  return v;
}

TensorView TensorView::Contiguous(void* data, DType dtype, std::initializer_list<int64_t> shape) {
  return Contiguous(data, dtype, static_cast<int>(shape.size()), shape.begin());
}

TensorView TensorView::Vector(float* data, int64_t count) {
  return Contiguous(data, DType::kFloat32, {count});
}

}  // namespace qkit
