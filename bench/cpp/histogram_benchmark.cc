// Histogram op (1M / 64M floats, 1 and 2 threads, vs BM_Memcpy in memcpy_benchmark.cc) and
// the range searches at 2048 bins (one thread). Report ratios from one run, e.g.
//   build/bench/qkit_bench --benchmark_filter='Memcpy|Histogram|Search' --benchmark_min_time=0.5
#include <cmath>
#include <random>
#include <vector>

#include "bench_util.h"
#include "qkit/calib/entropy.h"
#include "qkit/calib/l2_search.h"
#include "qkit/calib/mse.h"
#include "qkit/calib/percentile.h"
#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#include "qkit/ops/histogram.h"

namespace qkit::bench {
namespace {

void RunHistogramBench(benchmark::State& state, HistogramBinning binning, bool abs_input) {
  const int64_t n = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  auto x = RandomFloats(n);
  std::vector<int64_t> counts(2048);
  HistogramSlot slot{-4.0, 4.0, 2048};
  if (abs_input) slot.lo = 0.0;
  HistogramOptions o;
  o.binning = binning;
  o.abs_input = abs_input;
  const TensorView v = TensorView::Vector(x.get(), n);
  for (auto _ : state) {
    Histogram(v, ParamLayout::PerTensor(), &slot, o, counts.data(), nullptr, Context{threads});
    benchmark::DoNotOptimize(counts.data());
    benchmark::ClobberMemory();
  }
  // Same byte count as BM_Memcpy (n floats read + n written) so bytes/s compare directly.
  state.SetBytesProcessed(state.iterations() * n * 2 * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_HistogramTorchHistc(benchmark::State& s) {
  RunHistogramBench(s, HistogramBinning::kTorchHistc, false);
}
void BM_HistogramTorchHistcAbs(benchmark::State& s) {
  RunHistogramBench(s, HistogramBinning::kTorchHistc, true);
}
void BM_HistogramNumpy(benchmark::State& s) {
  RunHistogramBench(s, HistogramBinning::kNumpy, false);
}
BENCHMARK(BM_HistogramTorchHistc)->Apply(StandardArgs);
BENCHMARK(BM_HistogramTorchHistcAbs)->Apply(StandardArgs);
BENCHMARK(BM_HistogramNumpy)->Apply(StandardArgs);

// Observe() of the observer / calibrator in steady state: the state already covers the data's
// range, so each call is one pass (the first call, outside the timing, sets the range).
void BM_HistogramObserverObserve(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Context ctx{static_cast<int>(state.range(1))};
  auto x = RandomFloats(n);
  const TensorView v = TensorView::Vector(x.get(), n);
  HistogramObserver obs;
  obs.Observe(v, ctx);
  for (auto _ : state) {
    obs.Observe(v, ctx);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 2 * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_HistogramObserverObserve)->Apply(StandardArgs);

void BM_HistogramCalibratorObserve(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Context ctx{static_cast<int>(state.range(1))};
  auto x = RandomFloats(n);
  const TensorView v = TensorView::Vector(x.get(), n);
  HistogramCalibrator cal;
  cal.Observe(v, ctx);
  for (auto _ : state) {
    cal.Observe(v, ctx);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 2 * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_HistogramCalibratorObserve)->Apply(StandardArgs);

// A 2048-bin histogram of 1M N(0, 1) samples over [min, max] (signed, for the L2 search) or of
// |x| over [0, max] (for the NVIDIA searches).
std::vector<int64_t> BenchHist(bool abs_values, float* lo, float* hi) {
  const int64_t n = int64_t{1} << 20;
  auto x = RandomFloats(n, 7);
  float mn = x[0], mx = x[0];
  for (int64_t i = 0; i < n; ++i) {
    if (abs_values) x[i] = std::fabs(x[i]);
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  if (abs_values) mn = 0.0f;
  std::vector<int64_t> h(2048, 0);
  HistogramSlot slot{mn, mx, 2048};
  Histogram(TensorView::Vector(x.get(), n), ParamLayout::PerTensor(), &slot, HistogramOptions{},
            h.data(), nullptr, Context{1});
  *lo = mn;
  *hi = mx;
  return h;
}

void BM_L2NormSearch2048(benchmark::State& state) {
  float lo, hi;
  const auto h = BenchHist(false, &lo, &hi);
  L2SearchResult r;
  for (auto _ : state) {
    r = L2NormSearch(h.data(), 2048, lo, hi, 256);
    benchmark::DoNotOptimize(r);
  }
  state.counters["evaluations"] = static_cast<double>(r.evaluations);
  state.counters["start_bin"] = static_cast<double>(r.start_bin);
  state.counters["end_bin"] = static_cast<double>(r.end_bin);
}
BENCHMARK(BM_L2NormSearch2048)->Unit(benchmark::kMillisecond);

void BM_EntropySearch2048(benchmark::State& state) {
  float lo, hi;
  const auto h = BenchHist(true, &lo, &hi);
  EntropySearchResult r;
  for (auto _ : state) {
    r = EntropySearch(h.data(), 2048, EntropySearchOptions{});
    benchmark::DoNotOptimize(r);
  }
  state.counters["edge_index"] = static_cast<double>(r.edge_index);
}
BENCHMARK(BM_EntropySearch2048)->Unit(benchmark::kMillisecond);

void BM_MseSearch2048(benchmark::State& state) {
  float lo, hi;
  const auto h = BenchHist(true, &lo, &hi);
  std::vector<float> edges(2049);
  TorchLinspaceEdges(0.0f, hi, 2048, edges.data());
  MseSearchResult r;
  for (auto _ : state) {
    r = MseSearch(h.data(), 2048, edges.data(), 2049, MseSearchOptions{});
    benchmark::DoNotOptimize(r);
  }
  state.counters["center_index"] = static_cast<double>(r.center_index);
}
BENCHMARK(BM_MseSearch2048)->Unit(benchmark::kMillisecond);

void BM_PercentileSearch2048(benchmark::State& state) {
  float lo, hi;
  const auto h = BenchHist(true, &lo, &hi);
  int64_t idx = 0;
  for (auto _ : state) {
    idx = PercentileSearch(h.data(), 2048, 99.99);
    benchmark::DoNotOptimize(idx);
  }
  state.counters["edge_index"] = static_cast<double>(idx);
}
BENCHMARK(BM_PercentileSearch2048)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace qkit::bench
