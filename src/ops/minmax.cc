// MinMax / AbsMax: validate -> plan the strided walk -> ParallelFor over chunks of kGrain
// logical elements -> HWY_DYNAMIC_DISPATCH once per chunk into per-thread partial
// accumulators -> merge the partials (exact) into the caller's accumulators.
// Contract: include/qkit/ops/minmax.h and docs/reductions.md.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/minmax.cc"
#include "qkit/ops/minmax.h"

#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "internal/parallel.h"
#include "internal/strided_walk.h"
#include "ops/minmax-inl.h"

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {
namespace {

namespace md = minmax_detail;

// Folds the logical elements [begin, end) of walk's only operand into the partial slot arrays
// lo / hi (lo null when kAbs). Returns the number of elements left out.
template <NonFinite kPolicy, bool kAbs>
int64_t FoldChunk(const internal::Walk& walk, int64_t begin, int64_t end, float* HWY_RESTRICT lo,
                  float* HWY_RESTRICT hi) {
  int64_t skipped = 0;
  internal::ForEachF32Block(
      walk, 1, begin, end,
      [&](const float* const* in, float* const* /*out*/, const internal::Run& piece) HWY_ATTR {
        const float* x = in[0];
        const size_t n = static_cast<size_t>(piece.count);
        const int64_t p = piece.param_index;
        if (piece.param_step == 0) {
          skipped += md::FoldRun<kPolicy, kAbs>(x, n, lo, hi, p);
        } else {
          skipped += md::UpdateSlots<kPolicy, kAbs>(x, n, kAbs ? nullptr : lo + p, hi + p);
        }
      });
  return skipped;
}

// The same over the fast-path rows view.
template <NonFinite kPolicy, bool kAbs>
int64_t FoldChunk(const internal::MinMaxRows& rows, int64_t begin, int64_t end,
                  float* HWY_RESTRICT lo, float* HWY_RESTRICT hi) {
  return md::FoldRows<kPolicy, kAbs>(rows, begin, end, lo, hi);
}

// The policy becomes a template argument here, once per chunk. `Source` is internal::Walk or
// internal::MinMaxRows.
template <bool kAbs, class Source>
int64_t Chunk(const Source& src, int64_t begin, int64_t end, NonFinite policy, float* lo,
              float* hi) {
  switch (policy) {
    case NonFinite::kSkip:
      return FoldChunk<NonFinite::kSkip, kAbs>(src, begin, end, lo, hi);
    case NonFinite::kSkipNaN:
      return FoldChunk<NonFinite::kSkipNaN, kAbs>(src, begin, end, lo, hi);
    case NonFinite::kPropagate:
      return FoldChunk<NonFinite::kPropagate, kAbs>(src, begin, end, lo, hi);
  }
  return 0;
}

}  // namespace

int64_t MinMaxChunk(const internal::Walk& walk, int64_t begin, int64_t end, NonFinite policy,
                    float* lo, float* hi) {
  return Chunk<false>(walk, begin, end, policy, lo, hi);
}

int64_t AbsMaxChunk(const internal::Walk& walk, int64_t begin, int64_t end, NonFinite policy,
                    float* amax) {
  return Chunk<true>(walk, begin, end, policy, nullptr, amax);
}

int64_t MinMaxRowsChunk(const internal::MinMaxRows& rows, int64_t begin, int64_t end,
                        NonFinite policy, float* lo, float* hi) {
  return Chunk<false>(rows, begin, end, policy, lo, hi);
}

int64_t AbsMaxRowsChunk(const internal::MinMaxRows& rows, int64_t begin, int64_t end,
                        NonFinite policy, float* amax) {
  return Chunk<true>(rows, begin, end, policy, nullptr, amax);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE

#include <cmath>
#include <limits>
#include <vector>

#include "internal/check.h"

namespace qkit {

HWY_EXPORT(MinMaxChunk);
HWY_EXPORT(AbsMaxChunk);
HWY_EXPORT(MinMaxRowsChunk);
HWY_EXPORT(AbsMaxRowsChunk);

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kQuietNaN = std::numeric_limits<float>::quiet_NaN();

// Checks shared by MinMax and AbsMax that do not need the walk.
void CheckCommon(const TensorView& x, NonFinite policy, const Context& ctx, const char* fn) {
  QKIT_REQUIRE(
      IsFloating(x.dtype), InvalidArgument,
      fn << ": `x` has dtype " << DTypeName(x.dtype) << "; expected float32, float16 or bfloat16");
  QKIT_REQUIRE(policy == NonFinite::kSkip || policy == NonFinite::kSkipNaN ||
                   policy == NonFinite::kPropagate,
               InvalidArgument,
               fn << ": `policy`=" << static_cast<int>(policy) << " is not a NonFinite value");
  QKIT_REQUIRE(ctx.num_threads >= 1, InvalidArgument,
               fn << ": `ctx.num_threads`=" << ctx.num_threads << " must be >= 1");
}

// Zero extremes are reported as +0 (min/max do not define the sign of a zero result).
inline float CanonicalZero(float v) { return v == 0.0f ? 0.0f : v; }

// Per-thread partial slot arrays (thread-major: thread t owns [t * P, (t + 1) * P)), started
// at +inf (lo) / -inf (hi), and the total skip count.
struct Partials {
  int threads = 1;
  std::vector<float> lo;  // threads * P, or empty
  std::vector<float> hi;  // threads * P
  int64_t skipped = 0;
};

// Runs chunk_fn(begin, end, lo_partial, hi_partial) -> skipped for every chunk of kGrain
// logical elements on EffectiveThreads() threads, each thread folding into its own partials
// (lo_partial is null unless with_lo). Min, max and counts are exact, so neither the chunk
// order nor the thread count can change the merged result.
template <class ChunkFn>
Partials Reduce(const internal::Walk& walk, bool with_lo, const Context& ctx, ChunkFn&& chunk_fn) {
  const int64_t numel = walk.numel();
  const int64_t P = walk.num_params();
  const int64_t chunks = internal::NumChunks(numel, internal::kGrain);
  Partials r;
  r.threads = internal::EffectiveThreads(chunks, ctx.num_threads);
  if (with_lo) r.lo.assign(static_cast<size_t>(r.threads * P), kInf);
  r.hi.assign(static_cast<size_t>(r.threads * P), -kInf);
  // One counter per thread, padded to a cache line (no false sharing).
  struct alignas(64) Counter {
    int64_t v = 0;
  };
  std::vector<Counter> skipped(static_cast<size_t>(r.threads));
  internal::ParallelFor(chunks, ctx.num_threads, [&](int64_t c, int t) {
    const int64_t begin = c * internal::kGrain;
    const int64_t end = std::min(numel, begin + internal::kGrain);
    float* lo = with_lo ? r.lo.data() + t * P : nullptr;
    float* hi = r.hi.data() + t * P;
    skipped[static_cast<size_t>(t)].v += chunk_fn(begin, end, lo, hi);
  });
  for (const Counter& c : skipped) r.skipped += c.v;
  return r;
}

// The fast-path rows view of x for `layout`, when x is float32, the layout is per channel or
// per group along the innermost axis (unit stride), and the other dims collapse to one row
// stride (any sign, or 0). Returns false otherwise (the generic walk handles it).
bool PlanRows(const TensorView& x, const ParamLayout& layout, int64_t axis,
              internal::MinMaxRows* rows) {
  if (x.dtype != DType::kFloat32 || layout.granularity == Granularity::kPerTensor) return false;
  if (axis != x.ndim - 1) return false;
  const int64_t cols = x.shape[axis];
  if (cols != 1 && x.strides[axis] != 1) return false;
  int64_t row_stride = cols;  // only one row if no outer dim is > 1
  bool have_outer = false;
  int64_t expected = 0;
  for (int d = static_cast<int>(axis) - 1; d >= 0; --d) {
    if (x.shape[d] == 1) continue;
    if (!have_outer) {
      have_outer = true;
      row_stride = x.strides[d];
    } else if (x.strides[d] != expected) {
      return false;
    }
    expected = x.strides[d] * x.shape[d];
  }
  rows->base = static_cast<const float*>(x.data);
  rows->row_stride = row_stride;
  rows->cols = cols;
  rows->group = layout.granularity == Granularity::kPerGroup ? layout.group_size : 0;
  return true;
}

}  // namespace

int64_t NumParams(const TensorView& x, const ParamLayout& layout, const char* caller) {
  QKIT_REQUIRE(x.ndim >= 0 && x.ndim <= kMaxDims, InvalidArgument,
               caller << ": tensors may have at most " << kMaxDims << " dims; got ndim=" << x.ndim);
  for (int d = 0; d < x.ndim; ++d) {
    QKIT_REQUIRE(x.shape[d] >= 0, InvalidArgument,
                 caller << ": negative size " << x.shape[d] << " in shape " << x.ShapeString());
  }
  const int64_t axis = internal::NormalizeLayoutAxis(x, layout, caller);
  switch (layout.granularity) {
    case Granularity::kPerTensor:
      return 1;
    case Granularity::kPerChannel:
      return x.shape[axis];
    case Granularity::kPerGroup: {
      int64_t p = 1;
      for (int d = 0; d < x.ndim; ++d) {
        p *= d == axis ? (x.shape[d] + layout.group_size - 1) / layout.group_size : x.shape[d];
      }
      return p;
    }
  }
  QKIT_FAIL(InvalidArgument, caller << ": `layout.granularity`="
                                    << static_cast<int>(layout.granularity) << " is not valid");
  return 0;
}

void MinMax(const TensorView& x, const ParamLayout& layout, NonFinite policy, float* min_acc,
            float* max_acc, int64_t* skipped, const Context& ctx) {
  constexpr const char* kFn = "qkit::MinMax";
  CheckCommon(x, policy, ctx, kFn);
  const int64_t P = NumParams(x, layout, kFn);
  const TensorView* views[1] = {&x};
  const internal::Walk walk(views, 1, layout, kFn);
  QKIT_DCHECK(walk.num_params() == P);
  if (P > 0) {
    QKIT_REQUIRE(min_acc != nullptr, InvalidArgument,
                 kFn << ": `min_acc` is null (expected " << P << " floats for layout "
                     << layout.ToString() << ")");
    QKIT_REQUIRE(max_acc != nullptr, InvalidArgument,
                 kFn << ": `max_acc` is null (expected " << P << " floats for layout "
                     << layout.ToString() << ")");
    QKIT_REQUIRE(min_acc != max_acc, InvalidArgument,
                 kFn << ": `min_acc` and `max_acc` are the same array");
  }
  if (walk.numel() == 0) return;

  internal::MinMaxRows rows;
  const bool use_rows = PlanRows(x, layout, internal::NormalizeLayoutAxis(x, layout, kFn), &rows);
  const Partials r =
      Reduce(walk, /*with_lo=*/true, ctx, [&](int64_t b, int64_t e, float* lo, float* hi) {
        return use_rows ? HWY_DYNAMIC_DISPATCH(MinMaxRowsChunk)(rows, b, e, policy, lo, hi)
                        : HWY_DYNAMIC_DISPATCH(MinMaxChunk)(walk, b, e, policy, lo, hi);
      });
  for (int64_t p = 0; p < P; ++p) {
    float lo = kInf, hi = -kInf;
    bool nan = false;
    for (int t = 0; t < r.threads; ++t) {
      const float l = r.lo[static_cast<size_t>(t * P + p)];
      const float h = r.hi[static_cast<size_t>(t * P + p)];
      if (std::isnan(l) || std::isnan(h)) {
        nan = true;
        break;
      }
      lo = l < lo ? l : lo;
      hi = h > hi ? h : hi;
    }
    if (nan) {  // kPropagate met a NaN in this slot
      min_acc[p] = kQuietNaN;
      max_acc[p] = kQuietNaN;
      continue;
    }
    // (+inf, -inf) means no element took part: the slot is left as it is. Any participating
    // element v gives lo <= v <= hi, so this cannot be mistaken for a real result.
    if (lo == kInf && hi == -kInf) continue;
    // A NaN accumulator stays NaN (comparisons with NaN are false).
    const float a = min_acc[p], b = max_acc[p];
    min_acc[p] = std::isnan(a) ? a : CanonicalZero(lo < a ? lo : a);
    max_acc[p] = std::isnan(b) ? b : CanonicalZero(hi > b ? hi : b);
  }
  if (skipped != nullptr) *skipped += r.skipped;
}

void AbsMax(const TensorView& x, const ParamLayout& layout, NonFinite policy, float* amax_acc,
            int64_t* skipped, const Context& ctx) {
  constexpr const char* kFn = "qkit::AbsMax";
  CheckCommon(x, policy, ctx, kFn);
  const int64_t P = NumParams(x, layout, kFn);
  const TensorView* views[1] = {&x};
  const internal::Walk walk(views, 1, layout, kFn);
  QKIT_DCHECK(walk.num_params() == P);
  if (P > 0) {
    QKIT_REQUIRE(amax_acc != nullptr, InvalidArgument,
                 kFn << ": `amax_acc` is null (expected " << P << " floats for layout "
                     << layout.ToString() << ")");
  }
  if (walk.numel() == 0) return;

  internal::MinMaxRows rows;
  const bool use_rows = PlanRows(x, layout, internal::NormalizeLayoutAxis(x, layout, kFn), &rows);
  const Partials r =
      Reduce(walk, /*with_lo=*/false, ctx, [&](int64_t b, int64_t e, float* /*lo*/, float* hi) {
        return use_rows ? HWY_DYNAMIC_DISPATCH(AbsMaxRowsChunk)(rows, b, e, policy, hi)
                        : HWY_DYNAMIC_DISPATCH(AbsMaxChunk)(walk, b, e, policy, hi);
      });
  for (int64_t p = 0; p < P; ++p) {
    float hi = -kInf;
    bool nan = false;
    for (int t = 0; t < r.threads; ++t) {
      const float h = r.hi[static_cast<size_t>(t * P + p)];
      if (std::isnan(h)) {
        nan = true;
        break;
      }
      hi = h > hi ? h : hi;
    }
    if (nan) {
      amax_acc[p] = kQuietNaN;
      continue;
    }
    if (hi == -kInf) continue;  // no element took part (|v| >= 0 for any that did)
    const float a = amax_acc[p];
    amax_acc[p] = std::isnan(a) ? a : CanonicalZero(hi > a ? hi : a);
  }
  if (skipped != nullptr) *skipped += r.skipped;
}

}  // namespace qkit

#endif  // HWY_ONCE
