#include "internal/parallel.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>

namespace qkit::internal {

int EffectiveThreads(int64_t num_chunks, int requested) {
  if (num_chunks <= 1 || requested <= 1) return 1;
  return static_cast<int>(std::min<int64_t>(num_chunks, requested));
}

void ParallelFor(int64_t num_chunks, int num_threads, FunctionRef<void(int64_t, int)> fn) {
  const int threads = EffectiveThreads(num_chunks, num_threads);
  if (threads == 1) {
    for (int64_t c = 0; c < num_chunks; ++c) fn(c, 0);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mu;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    // Static, contiguous assignment: thread t takes chunks [lo, hi).
    const int64_t lo = num_chunks * t / nt;
    const int64_t hi = num_chunks * (t + 1) / nt;
    try {
      for (int64_t c = lo; c < hi; ++c) fn(c, t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace qkit::internal
