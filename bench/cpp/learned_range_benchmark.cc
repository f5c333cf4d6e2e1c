// Learned-range ops (LSQ both variants, TQT, PACT, learned clip): forward and backward
// (dx + parameter-gradient sums) next to BM_Memcpy. Bytes counted: forward reads x and writes
// out (2 x 4 bytes per float); backward reads dy and x and writes dx (3 x 4 bytes).
#include "bench_util.h"
#include "qkit/ops/learned_range.h"

namespace qkit::bench {
namespace {

enum Which { kLsqPyTorch, kLsqPyTorchFused, kLsqMegEngine, kTqt, kPact, kClip };

struct Setup {
  float p0 = 0.02f, p1 = 0.0f;
  void Forward(Which w, const TensorView& x, const TensorView& out, const Context& ctx) const {
    LsqOptions o;
    switch (w) {
      case kLsqPyTorch:
      case kLsqPyTorchFused:
        LsqForward(x, &p0, &p1, 1, o, out, ctx);
        break;
      case kLsqMegEngine:
        o.variant = LsqVariant::kMegEngine;
        LsqForward(x, &p0, &p1, 1, o, out, ctx);
        break;
      case kTqt: {
        const float log2_t = -6.0f;
        TqtForward(x, &log2_t, 1, TqtOptions{}, out, ctx);
        break;
      }
      case kPact: {
        const float alpha = 2.0f;
        PactForward(x, &alpha, 1, PactOptions{}, out, ctx);
        break;
      }
      case kClip: {
        const float lo = -1.0f, hi = 1.5f;
        LearnedClipForward(x, &lo, &hi, 1, ClipOptions{}, out, ctx);
        break;
      }
    }
  }
  void Backward(Which w, const TensorView& dy, const TensorView& x, const TensorView& dx, float* g,
                const Context& ctx) const {
    LsqOptions o;
    switch (w) {
      case kLsqPyTorch:
      case kLsqPyTorchFused:
        o.fused = w == kLsqPyTorchFused;
        LsqBackward(dy, x, &p0, &p1, 1, o, dx, g, g + 1, ctx);
        break;
      case kLsqMegEngine:
        o.variant = LsqVariant::kMegEngine;
        LsqBackward(dy, x, &p0, &p1, 1, o, dx, g, nullptr, ctx);
        break;
      case kTqt: {
        const float log2_t = -6.0f;
        TqtBackward(dy, x, &log2_t, 1, TqtOptions{}, dx, g, ctx);
        break;
      }
      case kPact: {
        const float alpha = 2.0f;
        PactBackward(dy, x, &alpha, 1, PactOptions{}, dx, g, ctx);
        break;
      }
      case kClip: {
        const float lo = -1.0f, hi = 1.5f;
        LearnedClipBackward(dy, x, &lo, &hi, 1, ClipOptions{}, dx, g, g + 1, ctx);
        break;
      }
    }
  }
};

template <Which kWhich, bool kBackward>
void BM_LearnedRange(benchmark::State& state) {
  const int64_t n = state.range(0);
  Context ctx;
  ctx.num_threads = static_cast<int>(state.range(1));
  auto x = RandomFloats(n, 1);
  auto dy = RandomFloats(n, 2);
  auto out = Allocate<float>(n);
  const TensorView xv = TensorView::Vector(x.get(), n);
  const TensorView dyv = TensorView::Vector(dy.get(), n);
  const TensorView ov = TensorView::Vector(out.get(), n);
  Setup s;
  float g[2] = {};
  for (auto _ : state) {
    if (kBackward) {
      s.Backward(kWhich, dyv, xv, ov, g, ctx);
    } else {
      s.Forward(kWhich, xv, ov, ctx);
    }
    benchmark::DoNotOptimize(out.get());
    benchmark::DoNotOptimize(g);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * (kBackward ? 3 : 2) *
                          static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}

#define QKIT_LR_BENCH(name, which)                  \
  BENCHMARK_TEMPLATE(BM_LearnedRange, which, false) \
      ->Name("BM_" #name "Forward")                 \
      ->Apply(StandardArgs);                        \
  BENCHMARK_TEMPLATE(BM_LearnedRange, which, true)  \
      ->Name("BM_" #name "Backward")                \
      ->Apply(StandardArgs);

QKIT_LR_BENCH(LsqPyTorch, kLsqPyTorch)
BENCHMARK_TEMPLATE(BM_LearnedRange, kLsqPyTorchFused, true)
    ->Name("BM_LsqPyTorchFusedBackward")
    ->Apply(StandardArgs);
QKIT_LR_BENCH(LsqMegEngine, kLsqMegEngine)
QKIT_LR_BENCH(Tqt, kTqt)
QKIT_LR_BENCH(Pact, kPact)
QKIT_LR_BENCH(LearnedClip, kClip)

}  // namespace
}  // namespace qkit::bench
