// Obvious scalar references for the running-statistics observers, written from SPEC.md
// (2.3 OneFlow, 3.3 MegEngine, 5.2 Distiller, 6.5 Horizon, 7.3 PyTorch, 9.5) and independent
// of src/observers: each reference keeps its system's own buffers and initial values
// (OneFlow zeros, MegEngine ±FLT_MAX with a runtime momentum, PyTorch ±inf, Distiller zeros
// and a float32 iteration counter) and spells every float32 operation out with a named
// temporary, in the system's order. Tests compile with -ffp-contract=off.
#ifndef QKIT_TESTS_REFERENCE_OBSERVER_REF_H_
#define QKIT_TESTS_REFERENCE_OBSERVER_REF_H_

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qkit/ops/minmax.h"
#include "qkit/quant_spec.h"

namespace qkit::ref {

inline constexpr float kInf = std::numeric_limits<float>::infinity();
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Slot of every element of a row-major tensor of `shape` under `layout` (SPEC / minmax.h:
// per channel = the index along axis; per group = the row-major index into the tensor's
// shape with shape[axis] replaced by ceil(shape[axis] / group_size)).
inline std::vector<int64_t> SlotOfElement(const std::vector<int64_t>& shape,
                                          const ParamLayout& layout, int64_t* num_slots) {
  const int nd = static_cast<int>(shape.size());
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  std::vector<int64_t> slot(static_cast<size_t>(numel), 0);
  if (layout.granularity == Granularity::kPerTensor) {
    *num_slots = 1;
    return slot;
  }
  const int axis = static_cast<int>(layout.axis < 0 ? layout.axis + nd : layout.axis);
  std::vector<int64_t> pshape = shape;
  if (layout.granularity == Granularity::kPerGroup) {
    pshape[axis] = (shape[axis] + layout.group_size - 1) / layout.group_size;
  }
  if (layout.granularity == Granularity::kPerChannel) {
    *num_slots = shape[axis];
  } else {
    int64_t np = 1;
    for (int64_t s : pshape) np *= s;
    *num_slots = numel == 0 ? 0 : np;
  }
  std::vector<int64_t> coord(static_cast<size_t>(nd), 0);
  for (int64_t i = 0; i < numel; ++i) {
    int64_t rem = i;
    for (int d = nd - 1; d >= 0; --d) {
      coord[d] = rem % shape[d];
      rem /= shape[d];
    }
    if (layout.granularity == Granularity::kPerChannel) {
      slot[i] = coord[axis];
    } else {
      int64_t p = 0;
      for (int d = 0; d < nd; ++d) {
        const int64_t c = d == axis ? coord[d] / layout.group_size : coord[d];
        p = p * pshape[d] + c;
      }
      slot[i] = p;
    }
  }
  return slot;
}

// The batch range of one slot, as the observers' contract defines it.
struct SlotRange {
  bool has = false;  // at least one participating element
  float min = 0.0f;
  float max = 0.0f;
};

// Per-slot ranges of `x` (values in row-major order, slot per element). kSkip: NaN and ±Inf
// are left out and counted; kSkipNaN: NaN left out and counted; kPropagate: any NaN makes
// the slot's min and max NaN. A zero extreme is reported as +0.
inline std::vector<SlotRange> BatchRanges(const std::vector<float>& x,
                                          const std::vector<int64_t>& slot, int64_t num_slots,
                                          NonFinite policy, int64_t* nonfinite) {
  std::vector<SlotRange> r(static_cast<size_t>(num_slots));
  std::vector<bool> saw_nan(static_cast<size_t>(num_slots), false);
  for (size_t i = 0; i < x.size(); ++i) {
    const float v = x[i];
    SlotRange& s = r[static_cast<size_t>(slot[i])];
    if (std::isnan(v)) {
      if (policy == NonFinite::kPropagate) {
        saw_nan[static_cast<size_t>(slot[i])] = true;
        s.has = true;
      } else {
        ++*nonfinite;
      }
      continue;
    }
    if (std::isinf(v) && policy == NonFinite::kSkip) {
      ++*nonfinite;
      continue;
    }
    if (!s.has) {
      s.has = true;
      s.min = v;
      s.max = v;
    } else {
      if (v < s.min) s.min = v;
      if (v > s.max) s.max = v;
    }
  }
  for (size_t p = 0; p < r.size(); ++p) {
    if (saw_nan[p]) {
      r[p].min = kNaN;
      r[p].max = kNaN;
    }
    if (r[p].min == 0.0f) r[p].min = 0.0f;  // +0 for -0
    if (r[p].max == 0.0f) r[p].max = 0.0f;
  }
  return r;
}

// ---- running min / max (PyTorch MinMaxObserver with torch.min/max semantics) ----------------
struct MinMaxRef {
  std::vector<float> min_val, max_val;
  std::vector<int64_t> count;
  void Update(const std::vector<SlotRange>& r) {
    if (min_val.empty()) {
      min_val.assign(r.size(), 0.0f);
      max_val.assign(r.size(), 0.0f);
      count.assign(r.size(), 0);
    }
    for (size_t p = 0; p < r.size(); ++p) {
      if (!r[p].has) continue;
      if (count[p] == 0) {
        min_val[p] = r[p].min;
        max_val[p] = r[p].max;
      } else if (std::isnan(min_val[p]) || std::isnan(r[p].min)) {
        min_val[p] = kNaN;
        max_val[p] = kNaN;
      } else {
        min_val[p] = std::fmin(min_val[p], r[p].min);
        max_val[p] = std::fmax(max_val[p], r[p].max);
      }
      ++count[p];
    }
  }
};

// ---- OneFlow MovingAverageMinMaxObserver (SPEC 2.3) ----------------------------------------
struct OneFlowRef {
  bool symmetric = true;  // symmetric / cambricon: abs max; affine: min and max
  float momentum = 0.95f;
  int64_t stop_update_after_iters = 1;
  std::vector<float> moving_max, moving_min;  // buffers, zero-initialised
  std::vector<int64_t> count;

  static float Avg(float old, float cur, float m) {
    if (old == 0.0f) return cur;  // "if the stored value is exactly 0, copy"
    const float a = old * m;
    const float one_minus_m = 1.0f - m;
    const float b = cur * one_minus_m;
    return a + b;
  }
  void Update(const std::vector<SlotRange>& r, bool training, int64_t step) {
    if (!(training && step <= stop_update_after_iters)) return;
    if (moving_max.empty()) {
      moving_max.assign(r.size(), 0.0f);
      moving_min.assign(r.size(), 0.0f);
      count.assign(r.size(), 0);
    }
    for (size_t p = 0; p < r.size(); ++p) {
      if (!r[p].has) continue;
      if (symmetric) {
        float a;
        if (std::isnan(r[p].min) || std::isnan(r[p].max)) {
          a = kNaN;
        } else {
          a = std::fabs(r[p].max) > std::fabs(r[p].min) ? std::fabs(r[p].max)
                                                          : std::fabs(r[p].min);
        }
        moving_max[p] = Avg(moving_max[p], a, momentum);
        moving_min[p] = moving_max[p];
      } else {
        moving_max[p] = Avg(moving_max[p], r[p].max, momentum);
        moving_min[p] = Avg(moving_min[p], r[p].min, momentum);
      }
      ++count[p];
    }
  }
};

// ---- MegEngine ExponentialMovingAverageObserver (SPEC 3.3) ---------------------------------
struct MegEngineRef {
  float momentum = 0.9f;
  std::vector<float> min_val, max_val, runtime_momentum;  // ±FLT_MAX, 0
  std::vector<int64_t> count;
  void Update(const std::vector<SlotRange>& r) {
    if (min_val.empty()) {
      min_val.assign(r.size(), FLT_MAX);
      max_val.assign(r.size(), -FLT_MAX);
      runtime_momentum.assign(r.size(), 0.0f);
      count.assign(r.size(), 0);
    }
    for (size_t p = 0; p < r.size(); ++p) {
      if (!r[p].has) continue;
      const float rm = runtime_momentum[p];
      const float one_minus_rm = 1.0f - rm;
      const float a = min_val[p] * rm;
      const float b = one_minus_rm * r[p].min;
      min_val[p] = a + b;
      const float c = max_val[p] * rm;
      const float d = one_minus_rm * r[p].max;
      max_val[p] = c + d;
      runtime_momentum[p] = momentum;
      ++count[p];
    }
  }
};

// ---- PyTorch / Horizon MovingAverage(PerChannel)MinMaxObserver (SPEC 6.5, 7.3) --------------
struct TorchRef {
  float averaging_constant = 0.01f;
  std::vector<float> min_val, max_val;  // +inf / -inf until the first batch
  std::vector<int64_t> count;
  void Update(const std::vector<SlotRange>& r) {
    if (min_val.empty()) {
      min_val.assign(r.size(), kInf);
      max_val.assign(r.size(), -kInf);
      count.assign(r.size(), 0);
    }
    for (size_t p = 0; p < r.size(); ++p) {
      if (!r[p].has) continue;
      if (min_val[p] == kInf && max_val[p] == -kInf) {
        min_val[p] = r[p].min;
        max_val[p] = r[p].max;
      } else {
        const float dmin = r[p].min - min_val[p];
        const float smin = averaging_constant * dmin;
        min_val[p] = min_val[p] + smin;
        const float dmax = r[p].max - max_val[p];
        const float smax = averaging_constant * dmax;
        max_val[p] = max_val[p] + smax;
      }
      ++count[p];
    }
  }
};

// ---- Distiller FakeLinearQuantization EMA (SPEC 5.2, 11.11) --------------------------------
struct DistillerRef {
  float ema_decay = 0.999f;
  std::vector<float> tracked_min_biased, tracked_max_biased, tracked_min, tracked_max;
  std::vector<float> iter_count;  // float32, as Distiller's buffer
  static void UpdateEma(float& biased, float& unbiased, float value, float decay, float step) {
    const float a = biased * decay;
    const float one_minus_decay = 1.0f - decay;
    const float b = one_minus_decay * value;
    biased = a + b;
    const float p = powf(decay, step);  // float32 pow (SPEC 11.11)
    const float denom = 1.0f - p;
    unbiased = biased / denom;
  }
  void Update(const std::vector<SlotRange>& r) {
    if (tracked_min.empty()) {
      tracked_min_biased.assign(r.size(), 0.0f);
      tracked_max_biased.assign(r.size(), 0.0f);
      tracked_min.assign(r.size(), 0.0f);
      tracked_max.assign(r.size(), 0.0f);
      iter_count.assign(r.size(), 0.0f);
    }
    for (size_t p = 0; p < r.size(); ++p) {
      if (!r[p].has) continue;
      iter_count[p] = iter_count[p] + 1.0f;
      UpdateEma(tracked_min_biased[p], tracked_min[p], r[p].min, ema_decay, iter_count[p]);
      UpdateEma(tracked_max_biased[p], tracked_max[p], r[p].max, ema_decay, iter_count[p]);
    }
  }
};

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_OBSERVER_REF_H_
