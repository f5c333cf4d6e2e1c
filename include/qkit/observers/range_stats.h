// Per-slot batch ranges: phase 1 of the distributed observer protocol (docs/observers.md),
// shared by every min/max-, moving-average- and histogram-based observer.
//
//   rank r:  RangeStats s = observer.BatchRange(x_r, ctx);          // local, exact
//            all_reduce(s.FlattenFloats(), MIN); all_reduce(s.FlattenCounts(), SUM);
//            RangeStats merged = RangeStats::Unflatten(...);         // == MergeRange over ranks
//            observer.Commit(merged);                                // identical on every rank
//
// With one participant this is exactly Observe(x): Observe(x) == Commit(BatchRange(x)).
#ifndef QKIT_OBSERVERS_RANGE_STATS_H_
#define QKIT_OBSERVERS_RANGE_STATS_H_

#include <cstdint>
#include <vector>

#include "qkit/context.h"
#include "qkit/ops/minmax.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

// The range of one batch (or of the union of several shards of it) per parameter slot.
// Emptiness is explicit: slot p holds data iff observed[p] > 0. An empty slot stores the
// neutral values min = +inf, max = -inf so that element-wise MIN / MAX merges stay exact, but
// no code may read them as data.
struct RangeStats {
  std::vector<float> min;          // per slot: min over participating elements (+0 for zero)
  std::vector<float> max;          // per slot: max over participating elements (+0 for zero)
  std::vector<int64_t> observed;   // per slot: participants (shards) that had >= 1 element in
                                   // the slot taking part; 0 = no data in this slot
  int64_t nonfinite = 0;           // elements left out by the NonFinite policy (NaN / ±Inf),
                                   // summed over participants

  int64_t num_slots() const { return static_cast<int64_t>(min.size()); }
  bool has_data(int64_t slot) const { return observed[static_cast<size_t>(slot)] > 0; }

  // `n` empty slots (min +inf, max -inf, observed 0) and nonfinite 0.
  static RangeStats Empty(int64_t n);

  // all_reduce buffers. FlattenFloats() = [min_0 .. min_{n-1}, -max_0 .. -max_{n-1}] (2n
  // floats): ONE all_reduce(MIN) merges both. FlattenCounts() = [observed_0 .. observed_{n-1},
  // nan_0 .. nan_{n-1}, nonfinite] (2n+1 int64): ONE all_reduce(SUM), where nan_p = 1 when the
  // slot's min or max is NaN (a kPropagate policy), so that NaN survives backends whose MIN
  // drops it. Unflatten inverts both after the reductions: slots with nan_p > 0 become NaN,
  // zeros are canonicalised to +0. Throws InvalidArgument for inconsistent buffer sizes.
  std::vector<float> FlattenFloats() const;
  std::vector<int64_t> FlattenCounts() const;
  static RangeStats Unflatten(const float* floats, int64_t num_floats, const int64_t* counts,
                              int64_t num_counts);

  // Checks internal consistency (equal lengths, observed >= 0, nonfinite >= 0, empty slots
  // holding the neutral values, data slots with min <= max or NaN). Throws InvalidArgument
  // naming `caller`. Commit() calls it on what it is given.
  void Validate(const char* caller) const;
};

// Exact element-wise merge: min of mins, max of maxes (NaN propagates), observed and nonfinite
// summed. Commutative and associative. REQUIRES: a.num_slots() == b.num_slots()
// (InvalidArgument naming both otherwise).
RangeStats MergeRange(const RangeStats& a, const RangeStats& b);

// The range of x per slot of `layout`, reduced with qkit::MinMax under `policy` (kSkip: NaN
// and ±Inf left out and counted; kSkipNaN: NaN left out and counted; kPropagate: a NaN makes
// its slot NaN). x must be a floating dtype (float32 / float16 / bfloat16; InvalidArgument
// naming `caller` otherwise); an empty x gives NumParams(x) empty slots. Deterministic for any
// ctx.num_threads and SIMD target. Cost: one read of x.
RangeStats ComputeBatchRange(const TensorView& x, const ParamLayout& layout, NonFinite policy,
                             const Context& ctx, const char* caller);

// Option names for messages and JSON ("skip", "skip_nan", "propagate").
const char* NonFiniteName(NonFinite policy);

}  // namespace qkit

#endif  // QKIT_OBSERVERS_RANGE_STATS_H_
