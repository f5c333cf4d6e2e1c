// Shared benchmark helpers: sizes, aligned buffers, and the memcpy baseline every op is
// compared with (same binary, same run: report ratios, e.g. FakeQuantize / Memcpy).
#ifndef QKIT_BENCH_BENCH_UTIL_H_
#define QKIT_BENCH_BENCH_UTIL_H_

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>

namespace qkit::bench {

inline constexpr int64_t kCacheResident = int64_t{1} << 20;  // 1M floats = 4 MiB
inline constexpr int64_t kPastLLC = int64_t{1} << 26;        // 64M floats = 256 MiB

// Args {n, threads} for every benchmark: 1M and 64M floats, 1 and 2 threads.
inline void StandardArgs(benchmark::internal::Benchmark* b) {
  for (int64_t n : {kCacheResident, kPastLLC}) {
    for (int64_t t : {1, 2}) b->Args({n, t});
  }
  b->ArgNames({"n", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using AlignedPtr = std::unique_ptr<T[], FreeDeleter>;

// 64-byte aligned, first-touched (page-faulted) buffer of n elements.
template <class T>
AlignedPtr<T> Allocate(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(n) * sizeof(T) + 63) / 64) * 64;
  T* p = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
  std::memset(p, 0, bytes);
  return AlignedPtr<T>(p);
}

// n floats ~ N(0, 1) (fixed seed).
inline AlignedPtr<float> RandomFloats(int64_t n, uint64_t seed = 1) {
  auto p = Allocate<float>(n);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) p[i] = dist(rng);
  return p;
}

// Copies n floats src -> dst using `threads` threads (contiguous halves), the baseline.
void ParallelMemcpy(float* dst, const float* src, int64_t n, int threads);

}  // namespace qkit::bench

#endif  // QKIT_BENCH_BENCH_UTIL_H_
