// Observer throughput: MinMaxObserver and MovingAverageObserver Observe (one read of x, the
// qkit::MinMax reduction, then an O(slots) update) at 1M / 64M floats with 1 and 2 threads.
// Compare with BM_Memcpy from the same run (reads + writes 2 * n * 4 bytes; Observe reads
// n * 4 bytes, which is what SetBytesProcessed counts here).
#include "bench_util.h"
#include "qkit/observers/minmax_observer.h"
#include "qkit/observers/moving_average_observer.h"

namespace qkit::bench {
namespace {

template <class Observer, class Options>
void RunObserve(benchmark::State& state, const Options& options) {
  const int64_t n = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  auto x = RandomFloats(n);
  const TensorView view = TensorView::Vector(x.get(), n);
  Observer obs(options);
  const Context ctx{threads};
  for (auto _ : state) {
    obs.Observe(view, ctx);
    benchmark::DoNotOptimize(obs.state().max_val.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_MinMaxObserverObserve(benchmark::State& state) {
  RunObserve<MinMaxObserver>(state, MinMaxObserverOptions{});
}
BENCHMARK(BM_MinMaxObserverObserve)->Apply(StandardArgs);

void BM_MovingAverageObserverObserve(benchmark::State& state) {
  RunObserve<MovingAverageObserver>(state, MovingAverageObserverOptions::Torch());
}
BENCHMARK(BM_MovingAverageObserverObserve)->Apply(StandardArgs);

}  // namespace
}  // namespace qkit::bench
