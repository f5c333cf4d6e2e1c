// Private types shared by learned_range.cc (validation, planning, reduction) and
// learned_range-inl.h (per-target kernels): per-slot constants of each op and the work plan.
#ifndef QKIT_SRC_OPS_LEARNED_RANGE_INTERNAL_H_
#define QKIT_SRC_OPS_LEARNED_RANGE_INTERNAL_H_

#include <cstdint>

#include "internal/strided_walk.h"

namespace qkit::internal {

// Per-slot constants, precomputed once per call in learned_range.cc (so the kernels only do
// the per-element arithmetic). Integer bounds are carried as exact floats.
struct LsqMegEngineSlot {
  float s, z, qmin, qmax, g;
};

struct LsqPyTorchSlot {
  float s, inv;  // step and f32(1 / step)
  float zf, zb;  // forward and backward zero points (integral floats)
  float qmin, qmax, g;
  float dscale_below, dscale_above;  // f32(qmin - zb), f32(qmax - zb)
};

struct TqtSlot {
  float t, qmin, qmax;
  float clip_lo, clip_hi;  // qmin - 0.5, qmax + 0.5 (exact in float)
};

struct PactSlot {
  float alpha, m;
};

struct ClipSlot {
  float cmin, cmax;
};

// Work plan. The walk runs over (dy, x, dx) or (x, out) with the parameter axis moved to the
// front, so slot c owns the logical range [c * slot_numel, (c + 1) * slot_numel). That range is
// cut into chunks of kReductionChunk; chunk k belongs to slot k / chunks_per_slot. Work units
// (the ParallelFor items) are runs of chunks_per_unit consecutive chunks.
struct LearnedPlan {
  const Walk* walk = nullptr;
  int64_t slot_numel = 0;
  int64_t chunks_per_slot = 0;
  int64_t chunks_per_unit = 1;
  int64_t num_chunks = 0;
  int64_t num_units = 0;
};

}  // namespace qkit::internal

#endif  // QKIT_SRC_OPS_LEARNED_RANGE_INTERNAL_H_
