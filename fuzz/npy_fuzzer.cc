// ParseNpy on arbitrary bytes: it either throws a qkit::Error or returns an array whose data
// holds exactly numel * itemsize bytes, with a non-negative shape within kNpyMaxElements.
// Anything else (a crash, a sanitizer report, another exception type) is a finding.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "qkit/error.h"
#include "qkit/io/npy.h"
#include "qkit/tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qkit::NpyArray a;
  try {
    a = qkit::ParseNpy(data, size, "fuzz.npy");
  } catch (const qkit::Error&) {
    return 0;
  }
  int64_t numel = 1;
  for (int64_t d : a.shape) {
    QKIT_FUZZ_CHECK(d >= 0, "negative dim %lld", static_cast<long long>(d));
    numel *= d;
    QKIT_FUZZ_CHECK(numel <= qkit::kNpyMaxElements, "numel above kNpyMaxElements");
  }
  QKIT_FUZZ_CHECK(numel == a.numel(), "numel() %lld != product of shape %lld",
                  static_cast<long long>(a.numel()), static_cast<long long>(numel));
  const size_t item = qkit::DTypeSize(a.dtype);
  QKIT_FUZZ_CHECK(a.data.size() == static_cast<size_t>(numel) * item,
                  "data has %zu bytes, numel %lld * itemsize %zu", a.data.size(),
                  static_cast<long long>(numel), item);
  if (a.shape.size() <= static_cast<size_t>(qkit::kMaxDims)) {
    const qkit::TensorView v = a.View();
    QKIT_FUZZ_CHECK(v.numel() == numel && v.dtype == a.dtype, "View() disagrees with the array");
  }
  return 0;
}
