// FakeQuantize forward (per tensor, per channel on the outer and on the innermost axis, with and
// without the bit-packed mask) and both backwards, at StandardArgs (1M / 64M floats, 1 / 2
// threads). Compare with BM_Memcpy from the same run:
//   build/bench/qkit_bench --benchmark_filter='Memcpy|FakeQuant' --benchmark_min_time=0.5
#include <cstdint>
#include <vector>

#include "bench_util.h"
#include "qkit/ops/fake_quant.h"

namespace qkit::bench {
namespace {

// Per-slot parameters: step 2^-5 with zero point 0 (a typical 8-bit symmetric setup).
struct BenchParams {
  std::vector<float> scale, zero_point;
  explicit BenchParams(int64_t n)
      : scale(static_cast<size_t>(n), 1.0f / 32.0f), zero_point(static_cast<size_t>(n), 0.0f) {
    for (size_t i = 0; i < scale.size(); ++i) scale[i] *= 1.0f + 0.01f * static_cast<float>(i % 7);
  }
  QParamsView View() const {
    return {scale.data(), zero_point.data(), static_cast<int64_t>(scale.size())};
  }
};

enum class Layout { kPerTensor, kPerChannelOuter, kPerChannelInner };

// x has shape [n] (per tensor), [64, n/64] with axis 0, or [n/64, 64] with axis 1.
void Setup(Layout layout, int64_t n, float* data, TensorView* view, QuantSpec* spec,
           int64_t* channels) {
  switch (layout) {
    case Layout::kPerTensor:
      *view = TensorView::Contiguous(data, DType::kFloat32, {n});
      *channels = 1;
      break;
    case Layout::kPerChannelOuter:
      *view = TensorView::Contiguous(data, DType::kFloat32, {64, n / 64});
      spec->layout = ParamLayout::PerChannel(0);
      *channels = 64;
      break;
    case Layout::kPerChannelInner:
      *view = TensorView::Contiguous(data, DType::kFloat32, {n / 64, 64});
      spec->layout = ParamLayout::PerChannel(1);
      *channels = 64;
      break;
  }
}

void RunForward(benchmark::State& state, Layout layout, bool with_mask) {
  const int64_t n = state.range(0);
  Context ctx;
  ctx.num_threads = static_cast<int>(state.range(1));
  auto x = RandomFloats(n);
  auto out = Allocate<float>(n);
  auto mask = Allocate<uint8_t>(MaskBytes(n));
  QuantSpec spec;
  TensorView xv, ov;
  int64_t channels = 1;
  Setup(layout, n, x.get(), &xv, &spec, &channels);
  QuantSpec unused = spec;
  Setup(layout, n, out.get(), &ov, &unused, &channels);
  const BenchParams params(channels);
  for (auto _ : state) {
    FakeQuantize(xv, spec, params.View(), ov, with_mask ? mask.get() : nullptr, ctx);
    benchmark::DoNotOptimize(out.get());
    benchmark::DoNotOptimize(mask.get());
    benchmark::ClobberMemory();
  }
  const int64_t bytes =
      n * 2 * static_cast<int64_t>(sizeof(float)) + (with_mask ? MaskBytes(n) : 0);
  state.SetBytesProcessed(state.iterations() * bytes);
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_FakeQuantPerTensor(benchmark::State& s) { RunForward(s, Layout::kPerTensor, false); }
void BM_FakeQuantPerTensorMask(benchmark::State& s) { RunForward(s, Layout::kPerTensor, true); }
void BM_FakeQuantPerChannelAxis0(benchmark::State& s) {
  RunForward(s, Layout::kPerChannelOuter, false);
}
void BM_FakeQuantPerChannelInnermost(benchmark::State& s) {
  RunForward(s, Layout::kPerChannelInner, false);
}
BENCHMARK(BM_FakeQuantPerTensor)->Apply(StandardArgs);
BENCHMARK(BM_FakeQuantPerTensorMask)->Apply(StandardArgs);
BENCHMARK(BM_FakeQuantPerChannelAxis0)->Apply(StandardArgs);
BENCHMARK(BM_FakeQuantPerChannelInnermost)->Apply(StandardArgs);

// dx = mask ? dy : 0 from a saved mask (reads n floats + n/8 bytes, writes n floats).
void BM_FakeQuantBackwardMasked(benchmark::State& state) {
  const int64_t n = state.range(0);
  Context ctx;
  ctx.num_threads = static_cast<int>(state.range(1));
  auto x = RandomFloats(n);
  auto dy = RandomFloats(n, 2);
  auto dx = Allocate<float>(n);
  auto mask = Allocate<uint8_t>(MaskBytes(n));
  QuantSpec spec;
  spec.bits = 6;  // codes [-32, 31] at step 1/32 cover [-1, 1): about 2/3 of N(0, 1) pass
  const BenchParams params(1);
  const TensorView xv = TensorView::Vector(x.get(), n);
  FakeQuantize(xv, spec, params.View(), TensorView::Vector(dx.get(), n), mask.get(), ctx);
  const TensorView dyv = TensorView::Vector(dy.get(), n);
  const TensorView dxv = TensorView::Vector(dx.get(), n);
  for (auto _ : state) {
    FakeQuantizeBackwardMasked(dyv, mask.get(), dxv, ctx);
    benchmark::DoNotOptimize(dx.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() *
                          (n * 2 * static_cast<int64_t>(sizeof(float)) + MaskBytes(n)));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_FakeQuantBackwardMasked)->Apply(StandardArgs);

// dx = in_range(x) ? dy : 0, recomputing the range test (reads 2n floats, writes n).
void BM_FakeQuantBackwardClipped(benchmark::State& state) {
  const int64_t n = state.range(0);
  Context ctx;
  ctx.num_threads = static_cast<int>(state.range(1));
  auto x = RandomFloats(n);
  auto dy = RandomFloats(n, 2);
  auto dx = Allocate<float>(n);
  QuantSpec spec;
  const BenchParams params(1);
  const TensorView xv = TensorView::Vector(x.get(), n);
  const TensorView dyv = TensorView::Vector(dy.get(), n);
  const TensorView dxv = TensorView::Vector(dx.get(), n);
  for (auto _ : state) {
    FakeQuantizeBackwardClipped(dyv, xv, spec, params.View(), dxv, ctx);
    benchmark::DoNotOptimize(dx.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 3 * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_FakeQuantBackwardClipped)->Apply(StandardArgs);

}  // namespace
}  // namespace qkit::bench
