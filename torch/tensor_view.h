// at::Tensor -> qkit views and parameter arrays, with the device / layout / dtype checks every
// op needs (clear ValueErrors naming the op, the argument and what was wrong).
#ifndef QKIT_TORCH_TENSOR_VIEW_H_
#define QKIT_TORCH_TENSOR_VIEW_H_

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "qkit/context.h"
#include "qkit/tensor.h"

namespace qkit::torch_ext {

enum class Kind {
  kFloating,  // float32, float16, bfloat16 (float64 is refused here: see AsComputeDtype)
  kInteger,   // int8, uint8, int16, int32
};

// Checks that t is defined, a dense (strided) CPU tensor of `kind` with at most kMaxDims dims,
// and returns a view of it (no copy; any strides).
TensorView ToView(const at::Tensor& t, Kind kind, const char* op, const char* name);

// CPU, strided, defined: the checks shared by every tensor argument.
void CheckCpuDense(const at::Tensor& t, const char* op, const char* name);

// qkit computes in float32: float64 tensors are converted to float32 on entry (results are
// converted back by the caller); float32 / float16 / bfloat16 pass unchanged. Other dtypes get
// a ValueError.
at::Tensor AsComputeDtype(const at::Tensor& t, const char* op, const char* name);

// A parameter tensor (scale, zero point, step, ...) as a contiguous float32 CPU tensor with
// `expected` elements (0-d or any shape with that numel). Integer and floating dtypes accepted.
at::Tensor ParamAsFloat(const at::Tensor& t, int64_t expected, const char* op, const char* name);

// Number of parameter slots for x with the given per-channel axis (c10::nullopt: per tensor)
// or groups; validates the axis (IndexError) the way the core does.
int64_t NumSlots(const at::Tensor& x, c10::optional<int64_t> axis, int64_t group_size,
                 const char* op);

// An uninitialised output like `t` (same shape, dtype unless given, strides preserved when t is
// dense). Outputs of at least 16 MiB are advised to use transparent huge pages
// (madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior; Linux's default THP mode is
// "madvise"): a fresh 256 MiB tensor then costs about 20 ms of page faults instead of 100 ms,
// which dominates a memory-bound op. No value depends on it.
at::Tensor EmptyOutput(const at::Tensor& t, c10::optional<at::ScalarType> dtype = c10::nullopt);

// Context for a call: at::get_num_threads() threads.
Context MakeContext();

}  // namespace qkit::torch_ext

#endif  // QKIT_TORCH_TENSOR_VIEW_H_
