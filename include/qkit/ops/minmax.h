// Min/max and abs-max reductions per tensor, per channel and per group, folding into
// accumulators the caller passes in (so one call serves a batch and a running observer alike).
#ifndef QKIT_OPS_MINMAX_H_
#define QKIT_OPS_MINMAX_H_

#include <cstdint>

#include "qkit/context.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

// Number of parameter slots `layout` gives a tensor of x's shape (1 per tensor, shape[axis]
// per channel, numel / shape[axis] * ceil(shape[axis] / group_size) per group). Validates the
// axis and group size against x (OutOfRange / InvalidArgument naming `caller`).
int64_t NumParams(const TensorView& x, const ParamLayout& layout, const char* caller);

// Which elements take part in a reduction.
enum class NonFinite : uint8_t {
  kSkip,       // NaN and ±Inf are left out and counted (qkit's observer default)
  kSkipNaN,    // NaN is left out and counted; ±Inf takes part
  kPropagate,  // any NaN makes that slot's result NaN (torch.min/max semantics)
};

// For every parameter slot p (see NumParams): min_acc[p] = min(min_acc[p], min of its elements),
// and likewise max_acc[p]. Accumulators start at +inf / -inf for a fresh reduction. A slot with
// no participating element is left unchanged. Zero extremes are returned as +0 (the sign of a
// zero minimum is not reported), so results do not depend on element order.
// `skipped` (nullable) receives the number of elements left out under kSkip / kSkipNaN, added
// to its current value. Deterministic for any ctx.num_threads and SIMD target.
// Cost: one read of x. float16 / bfloat16 inputs are reduced in float32 (exact).
void MinMax(const TensorView& x, const ParamLayout& layout, NonFinite policy, float* min_acc,
            float* max_acc, int64_t* skipped, const Context& ctx);

// amax_acc[p] = max(amax_acc[p], max |x| over the slot's elements). Same policies as MinMax
// (accumulators start at 0).
void AbsMax(const TensorView& x, const ParamLayout& layout, NonFinite policy, float* amax_acc,
            int64_t* skipped, const Context& ctx);

}  // namespace qkit

#endif  // QKIT_OPS_MINMAX_H_
