// The baseline: memcpy of n floats (reads n*4 bytes, writes n*4 bytes), 1 or 2 threads.
#include <omp.h>

#include "bench_util.h"

namespace qkit::bench {

void ParallelMemcpy(float* dst, const float* src, int64_t n, int threads) {
  if (threads <= 1) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    std::memcpy(dst + lo, src + lo, static_cast<size_t>(hi - lo) * sizeof(float));
  }
}

namespace {

void BM_Memcpy(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  auto src = RandomFloats(n);
  auto dst = Allocate<float>(n);
  for (auto _ : state) {
    ParallelMemcpy(dst.get(), src.get(), n, threads);
    benchmark::DoNotOptimize(dst.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 2 * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Memcpy)->Apply(StandardArgs);

}  // namespace
}  // namespace qkit::bench
