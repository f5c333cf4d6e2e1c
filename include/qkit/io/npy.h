// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0), hand-written because
// Debian has no packaged C++ .npy library. Readers never read out of bounds: every malformed
// header, unsupported dtype, absurd shape or truncated payload is rejected with DataLoss /
// InvalidArgument naming the file and what is wrong.
#ifndef QKIT_IO_NPY_H_
#define QKIT_IO_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "qkit/tensor.h"

namespace qkit {

// An array read from .npy, converted to a supported qkit dtype:
// '<f4' float32, '<f2' float16, '<f8' float64 (converted to float32, round to nearest),
// '|i1' int8, '|u1' uint8, '<i2' int16, '<i4' int32, '|b1' bool (as uint8).
// Big-endian data, object / string / complex / structured dtypes and 64-bit integers are refused.
struct NpyArray {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // row-major (Fortran-ordered files are transposed on load)

  int64_t numel() const;
  TensorView View();  // a contiguous view of `data`
};

// Upper bound on elements a reader accepts (2^34, 64 GiB of float32): absurd shapes are
// rejected before any allocation.
inline constexpr int64_t kNpyMaxElements = int64_t{1} << 34;

// Parses an in-memory .npy image. `source` names it in error messages.
NpyArray ParseNpy(const uint8_t* bytes, size_t size, const std::string& source);

// Reads a file (InvalidArgument if it cannot be opened or read).
NpyArray ReadNpy(const std::string& path);

// Writes a contiguous float32 / int array as .npy version 1.0, atomically (to a temporary file
// in the same directory, then renamed), so a failed write leaves nothing half-written.
void WriteNpy(const std::string& path, const TensorView& view);

}  // namespace qkit

#endif  // QKIT_IO_NPY_H_
