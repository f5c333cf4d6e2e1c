// MinMax / AbsMax throughput against the BM_Memcpy baseline of the same n (report ratios from one
// run: build/bench/qkit_bench --benchmark_filter='Memcpy|MinMax|AbsMax'). Bytes processed count
// the single read of x (memcpy counts read + write). Each benchmark checks its result against
// the scalar reference once before timing and reports an error instead of timing a wrong kernel.
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "bench_util.h"
#include "qkit/qkit.h"
#include "reference/minmax_ref.h"

namespace qkit::bench {
namespace {

constexpr int64_t kChannels = 64;

enum class Op { kMinMax, kAbsMax };

// Times `op` over x (n floats, N(0,1)) viewed as `shape` with `layout`, with state.range(1)
// threads and the given policy.
// Half types hold the high 16 bits of each float (bfloat16: truncation; float16: the same bits
// reinterpreted, which gives finite values of a similar spread).
void Run(benchmark::State& state, Op op, std::initializer_list<int64_t> shape,
         const ParamLayout& layout, NonFinite policy, DType dtype = DType::kFloat32) {
  const int64_t n = state.range(0);
  const Context ctx{static_cast<int>(state.range(1))};
  auto src = RandomFloats(n);
  if (dtype != DType::kFloat32) {
    uint16_t* h = reinterpret_cast<uint16_t*>(src.get());
    for (int64_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, &src[i], 4);
      h[i] = static_cast<uint16_t>(u >> 16);
    }
  }
  const TensorView x = TensorView::Contiguous(src.get(), dtype, shape);
  const int64_t P = NumParams(x, layout, "bench");
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> lo(P, inf), hi(P, -inf), amax(P, 0.0f);

  // --check: once against the reference.
  {
    std::vector<float> rlo(P, inf), rhi(P, -inf), ramax(P, 0.0f);
    int64_t s = 0, rs = 0;
    if (op == Op::kMinMax) {
      MinMax(x, layout, policy, lo.data(), hi.data(), &s, ctx);
      ref::RefMinMax(x, layout, policy, rlo.data(), rhi.data(), &rs);
    } else {
      AbsMax(x, layout, policy, amax.data(), &s, ctx);
      ref::RefAbsMax(x, layout, policy, ramax.data(), &rs);
    }
    const bool same = std::memcmp(lo.data(), rlo.data(), P * 4) == 0 &&
                      std::memcmp(hi.data(), rhi.data(), P * 4) == 0 &&
                      std::memcmp(amax.data(), ramax.data(), P * 4) == 0 && s == rs;
    if (!same) {
      state.SkipWithError("result differs from the reference");
      return;
    }
  }

  for (auto _ : state) {
    int64_t skipped = 0;
    if (op == Op::kMinMax) {
      MinMax(x, layout, policy, lo.data(), hi.data(), &skipped, ctx);
    } else {
      AbsMax(x, layout, policy, amax.data(), &skipped, ctx);
    }
    benchmark::DoNotOptimize(lo.data());
    benchmark::DoNotOptimize(hi.data());
    benchmark::DoNotOptimize(amax.data());
    benchmark::DoNotOptimize(skipped);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<int64_t>(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}

// Per tensor, one slot: the broadcast-slot kernel on long contiguous runs.
void BM_MinMax(benchmark::State& state) {
  Run(state, Op::kMinMax, {state.range(0)}, ParamLayout::PerTensor(), NonFinite::kSkip);
}
BENCHMARK(BM_MinMax)->Apply(StandardArgs);

void BM_MinMaxPropagate(benchmark::State& state) {
  Run(state, Op::kMinMax, {state.range(0)}, ParamLayout::PerTensor(), NonFinite::kPropagate);
}
BENCHMARK(BM_MinMaxPropagate)->Apply(StandardArgs);

void BM_AbsMax(benchmark::State& state) {
  Run(state, Op::kAbsMax, {state.range(0)}, ParamLayout::PerTensor(), NonFinite::kSkip);
}
BENCHMARK(BM_AbsMax)->Apply(StandardArgs);

// [64, n/64] per channel on axis 0 (weights): long runs, one slot each.
void BM_MinMaxPerChannelAxis0(benchmark::State& state) {
  Run(state, Op::kMinMax, {kChannels, state.range(0) / kChannels}, ParamLayout::PerChannel(0),
      NonFinite::kSkip);
}
BENCHMARK(BM_MinMaxPerChannelAxis0)->Apply(StandardArgs);

// [n/64, 64] per channel on the innermost axis (channels-last activations): runs of 64
// elements, one slot per element.
void BM_MinMaxPerChannelInner(benchmark::State& state) {
  Run(state, Op::kMinMax, {state.range(0) / kChannels, kChannels}, ParamLayout::PerChannel(1),
      NonFinite::kSkip);
}
BENCHMARK(BM_MinMaxPerChannelInner)->Apply(StandardArgs);

void BM_AbsMaxPerChannelInner(benchmark::State& state) {
  Run(state, Op::kAbsMax, {state.range(0) / kChannels, kChannels}, ParamLayout::PerChannel(1),
      NonFinite::kSkip);
}
BENCHMARK(BM_AbsMaxPerChannelInner)->Apply(StandardArgs);

// float16 / bfloat16 inputs (converted to float32 while gathering), per tensor.
void BM_MinMaxFloat16(benchmark::State& state) {
  Run(state, Op::kMinMax, {state.range(0)}, ParamLayout::PerTensor(), NonFinite::kSkip,
      DType::kFloat16);
}
BENCHMARK(BM_MinMaxFloat16)->Apply(StandardArgs);

void BM_MinMaxBFloat16(benchmark::State& state) {
  Run(state, Op::kMinMax, {state.range(0)}, ParamLayout::PerTensor(), NonFinite::kSkip,
      DType::kBFloat16);
}
BENCHMARK(BM_MinMaxBFloat16)->Apply(StandardArgs);

// [n/4096, 4096] per group of 128 along the innermost axis (group-wise weight quantization).
void BM_MinMaxPerGroup128(benchmark::State& state) {
  Run(state, Op::kMinMax, {state.range(0) / 4096, 4096}, ParamLayout::PerGroup(1, 128),
      NonFinite::kSkip);
}
BENCHMARK(BM_MinMaxPerGroup128)->Apply(StandardArgs);

}  // namespace
}  // namespace qkit::bench
