// Per-target bodies of the learned-range ops (Highway; included once per target by
// learned_range.cc through foreach_target). Each op is a functor with Forward(x) and
// Backward(dy, x) -> (dx, t0, t1) on vectors of any width; the drivers below run it over one
// work unit of the plan, using the full vector for the body and a 1-lane vector for heads and
// tails, so every lane of every target performs the same IEEE operations. Gradient terms are
// accumulated into kReductionLanes lanes by position inside the chunk (see learned_range.h).
#if defined(QKIT_SRC_OPS_LEARNED_RANGE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKIT_SRC_OPS_LEARNED_RANGE_INL_H_
#undef QKIT_SRC_OPS_LEARNED_RANGE_INL_H_
#else
#define QKIT_SRC_OPS_LEARNED_RANGE_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "internal/strided_walk.h"
#include "ops/learned_range_internal.h"
#include "qkit/ops/learned_range.h"

HWY_BEFORE_NAMESPACE();
namespace qkit::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- rounding, written once for every target --------------------------------------------
// hn::Round is not used: Highway 1.0.3's HWY_SCALAR Round computes f32(v + 0.5) first and so
// rounds 0.5 - 2^-25 up to 1. Both helpers keep the sign of zero (-0.3 -> -0, like nearbyint
// and std::round), return NaN and |v| >= 2^23 unchanged.

// Round half to even (std::nearbyint in the default rounding mode).
template <class D, class V = hn::Vec<D>>
HWY_INLINE V RoundHalfEven(D d, V v) {
  const V big = hn::Set(d, 8388608.0f);  // 2^23: adding it leaves no fraction bits
  const V biased = hn::CopySignToAbs(big, v);
  const V r = hn::Sub(hn::Add(v, biased), biased);  // ties go to even in the add
  return hn::IfThenElse(hn::Lt(hn::Abs(v), big), hn::CopySign(r, v), v);
}

// Round half away from zero (std::round): trunc(v) + sign(v) where |v - trunc(v)| >= 0.5.
// v - trunc(v) is exact, so no addition can round a value below a tie up to it.
template <class D, class V = hn::Vec<D>>
HWY_INLINE V RoundHalfAway(D d, V v) {
  const V t = hn::Trunc(v);
  const V frac = hn::Sub(v, t);
  const V step = hn::CopySign(hn::Set(d, 1.0f), v);
  return hn::IfThenElse(hn::Ge(hn::Abs(frac), hn::Set(d, 0.5f)), hn::Add(t, step), t);
}

// f32(double(v) * ln 2): MegEngine's TQT gradient multiplies its float product by log(2.0) in
// double and stores the result as float.
constexpr double kLn2 = 0.693147180559945309417232121458176568;

#if HWY_TARGET == HWY_SCALAR
template <class D, class V = hn::Vec<D>>
HWY_INLINE V MulLn2InDouble(D /*d*/, V v) {
  // Not hn::DemoteTo: on HWY_SCALAR it clamps overflow and infinities to +-FLT_MAX.
  return V(static_cast<float>(static_cast<double>(v.raw) * kLn2));
}
#else
template <class D, class V = hn::Vec<D>, hwy::EnableIf<(hn::MaxLanes(D()) == 1)>* = nullptr>
HWY_INLINE V MulLn2InDouble(D d, V v) {
  const hn::Rebind<double, D> dd;
  return hn::DemoteTo(d, hn::Mul(hn::PromoteTo(dd, v), hn::Set(dd, kLn2)));
}
template <class D, class V = hn::Vec<D>, hwy::EnableIf<(hn::MaxLanes(D()) > 1)>* = nullptr>
HWY_INLINE V MulLn2InDouble(D d, V v) {
  const hn::Half<D> dh;
  const hn::Rebind<double, decltype(dh)> dd;
  const auto ln2 = hn::Set(dd, kLn2);
  const auto lo = hn::DemoteTo(dh, hn::Mul(hn::PromoteTo(dd, hn::LowerHalf(dh, v)), ln2));
  const auto hi = hn::DemoteTo(dh, hn::Mul(hn::PromoteTo(dd, hn::UpperHalf(dh, v)), ln2));
  return hn::Combine(d, hi, lo);
}
#endif

// f32(a * b + c) with ONE rounding (a fused multiply-add), identical on every target: torch's
// CPU kernels compiled with FMA contraction evaluate some expressions this way. AVX2 / AVX3 use
// the FMA instruction; SSE4 / SSSE3 compute in double: a * b is exact there, the sum is rounded
// to odd (a TwoSum error forces the last bit to 1), so the final rounding to float is correct
// (no double rounding; Boldo & Melquiond, "Emulation of FMA and correctly rounded sums", 2008);
// SCALAR calls std::fma.
#if HWY_NATIVE_FMA
template <class D, class V = hn::Vec<D>>
HWY_INLINE V FusedMulAdd(D /*d*/, V a, V b, V c) {
  return hn::MulAdd(a, b, c);  // vfmadd: one rounding
}
#elif HWY_TARGET == HWY_SCALAR
template <class D, class V = hn::Vec<D>>
HWY_INLINE V FusedMulAdd(D /*d*/, V a, V b, V c) {
  return V(std::fma(a.raw, b.raw, c.raw));
}
#else
template <class DD, class VD = hn::Vec<DD>>
HWY_INLINE VD MulAddRoundToOdd(DD dd, VD a, VD b, VD c) {
  const VD p = hn::Mul(a, b);  // exact: 24-bit by 24-bit significands
  const VD s = hn::Add(p, c);
  const VD bb = hn::Sub(s, p);
  const VD err = hn::Add(hn::Sub(p, hn::Sub(s, bb)), hn::Sub(c, bb));  // s + err == p + c
  const hn::RebindToSigned<DD> di;
  const auto bits = hn::BitCast(di, s);
  const auto one = hn::Set(di, int64_t{1});
  const VD zero = hn::Zero(dd);
  const auto even = hn::RebindMask(dd, hn::Eq(hn::And(bits, one), hn::Zero(di)));
  const auto fix = hn::And(hn::And(hn::Ne(err, zero), even), hn::IsFinite(s));
  // The odd neighbour lies toward the exact value: away from zero when err has s's sign.
  const auto grow = hn::RebindMask(di, hn::Not(hn::Xor(hn::Lt(err, zero), hn::Lt(s, zero))));
  const auto moved = hn::IfThenElse(grow, hn::Add(bits, one), hn::Sub(bits, one));
  return hn::BitCast(dd, hn::IfThenElse(hn::RebindMask(di, fix), moved, bits));
}
template <class D, class V = hn::Vec<D>, hwy::EnableIf<(hn::MaxLanes(D()) == 1)>* = nullptr>
HWY_INLINE V FusedMulAdd(D d, V a, V b, V c) {
  const hn::Rebind<double, D> dd;
  return hn::DemoteTo(
      d, MulAddRoundToOdd(dd, hn::PromoteTo(dd, a), hn::PromoteTo(dd, b), hn::PromoteTo(dd, c)));
}
template <class D, class V = hn::Vec<D>, hwy::EnableIf<(hn::MaxLanes(D()) > 1)>* = nullptr>
HWY_INLINE V FusedMulAdd(D d, V a, V b, V c) {
  const hn::Half<D> dh;
  const hn::Rebind<double, decltype(dh)> dd;
  auto half = [&](auto part) {
    return hn::DemoteTo(dh,
                        MulAddRoundToOdd(dd, hn::PromoteTo(dd, part(a)), hn::PromoteTo(dd, part(b)),
                                         hn::PromoteTo(dd, part(c))));
  };
  const auto lo = half([&](V v) { return hn::LowerHalf(dh, v); });
  const auto hi = half([&](V v) { return hn::UpperHalf(dh, v); });
  return hn::Combine(d, hi, lo);
}
#endif

// ---- the ops --------------------------------------------------------------------------------
// Each functor: kTerms gradient sums (0..2), Forward(d, x) and
// Backward(d, dy, x, &dx, &t0, &t1). Masks select; nothing is multiplied by a 0/1 mask.

template <class D>
struct LsqMegEngineOp {
  using V = hn::Vec<D>;
  static constexpr int kTerms = 1;
  V s, z, qmin, qmax, g, zero;
  LsqMegEngineOp(D d, const internal::LsqMegEngineSlot& c)
      : s(hn::Set(d, c.s)),
        z(hn::Set(d, c.z)),
        qmin(hn::Set(d, c.qmin)),
        qmax(hn::Set(d, c.qmax)),
        g(hn::Set(d, c.g)),
        zero(hn::Zero(d)) {}

  HWY_INLINE V Forward(D d, V x) const {
    V v = hn::Add(hn::Div(x, s), z);
    v = hn::IfThenElse(hn::Le(v, qmin), qmin, v);  // comparisons are false for NaN: it passes
    v = hn::IfThenElse(hn::Ge(v, qmax), qmax, v);
    return hn::Mul(hn::Sub(RoundHalfAway(d, v), z), s);
  }
  HWY_INLINE void Backward(D d, V dy, V x, V& dx, V& t0, V& /*t1*/) const {
    const V v = hn::Add(hn::Div(x, s), z);
    const auto below = hn::Lt(v, qmin);
    const auto above = hn::Gt(v, qmax);
    const auto out = hn::Or(below, above);
    dx = hn::IfThenElse(out, zero, dy);
    const V mid = hn::Sub(RoundHalfAway(d, v), v);
    const V c = hn::IfThenElse(below, qmin, hn::IfThenElse(above, qmax, mid));
    t0 = hn::Mul(hn::Mul(c, g), dy);
  }
};

// kFused: evaluate zb + x * inv and (xq - zb) * s - x as fused multiply-adds (LsqOptions::fused).
template <class D, bool kFused>
struct LsqPyTorchOpT {
  using V = hn::Vec<D>;
  static constexpr int kTerms = 2;
  V s, inv, zf, zb, qmin, qmax, g, dsb, dsa, zero;
  LsqPyTorchOpT(D d, const internal::LsqPyTorchSlot& c)
      : s(hn::Set(d, c.s)),
        inv(hn::Set(d, c.inv)),
        zf(hn::Set(d, c.zf)),
        zb(hn::Set(d, c.zb)),
        qmin(hn::Set(d, c.qmin)),
        qmax(hn::Set(d, c.qmax)),
        g(hn::Set(d, c.g)),
        dsb(hn::Set(d, c.dscale_below)),
        dsa(hn::Set(d, c.dscale_above)),
        zero(hn::Zero(d)) {}

  HWY_INLINE V Forward(D d, V x) const {
    const V q = hn::Add(RoundHalfEven(d, hn::Mul(x, inv)), zf);
    V c = hn::IfThenElse(hn::Ge(q, qmin), q, qmin);  // NaN -> qmin (torch's fmax)
    c = hn::IfThenElse(hn::Gt(c, qmax), qmax, c);
    return hn::Mul(hn::Sub(c, zf), s);
  }
  HWY_INLINE void Backward(D d, V dy, V x, V& dx, V& t0, V& t1) const {
    const V xq =
        RoundHalfEven(d, kFused ? FusedMulAdd(d, x, inv, zb) : hn::Add(zb, hn::Mul(x, inv)));
    const auto above = hn::Gt(xq, qmax);
    const auto in = hn::And(hn::Ge(xq, qmin), hn::Le(xq, qmax));  // false for NaN
    dx = hn::IfThenElse(in, dy, zero);
    const V residual = kFused ? FusedMulAdd(d, hn::Sub(xq, zb), s, hn::Neg(x))
                              : hn::Sub(hn::Mul(hn::Sub(xq, zb), s), x);  // xfq - x
    const V t_in = hn::Mul(hn::Mul(hn::Mul(dy, residual), inv), g);
    const V t_out = hn::Mul(hn::Mul(dy, hn::IfThenElse(above, dsa, dsb)), g);  // NaN: below
    t0 = hn::IfThenElse(in, t_in, t_out);
    t1 = hn::IfThenElse(in, zero, hn::Mul(hn::Mul(hn::Neg(dy), s), g));
  }
};

template <class D>
using LsqPyTorchOp = LsqPyTorchOpT<D, false>;
template <class D>
using LsqPyTorchFusedOp = LsqPyTorchOpT<D, true>;

template <class D>
struct TqtOp {
  using V = hn::Vec<D>;
  static constexpr int kTerms = 1;
  V t, qmin, qmax, lo, hi, zero;
  TqtOp(D d, const internal::TqtSlot& c)
      : t(hn::Set(d, c.t)),
        qmin(hn::Set(d, c.qmin)),
        qmax(hn::Set(d, c.qmax)),
        lo(hn::Set(d, c.clip_lo)),
        hi(hn::Set(d, c.clip_hi)),
        zero(hn::Zero(d)) {}

  HWY_INLINE V Clamped(D d, V v) const {
    V r = RoundHalfAway(d, v);
    r = hn::IfThenElse(hn::Le(r, qmin), qmin, r);  // NaN passes
    return hn::IfThenElse(hn::Ge(r, qmax), qmax, r);
  }
  HWY_INLINE V Forward(D d, V x) const { return hn::Mul(Clamped(d, hn::Div(x, t)), t); }
  HWY_INLINE void Backward(D d, V dy, V x, V& dx, V& t0, V& /*t1*/) const {
    const V v = hn::Div(x, t);
    const V r = Clamped(d, v);
    const auto clip = hn::Or(hn::Lt(v, lo), hn::Gt(v, hi));
    dx = hn::IfThenElse(clip, zero, dy);
    const V w_in = hn::Mul(hn::Mul(dy, hn::Sub(r, v)), t);
    const V w_clip = hn::Mul(hn::Mul(dy, r), t);
    t0 = MulLn2InDouble(d, hn::IfThenElse(clip, w_clip, w_in));
  }
};

template <class D>
struct PactOp {
  using V = hn::Vec<D>;
  static constexpr int kTerms = 1;
  V alpha, m, zero;
  PactOp(D d, const internal::PactSlot& c)
      : alpha(hn::Set(d, c.alpha)), m(hn::Set(d, c.m)), zero(hn::Zero(d)) {}

  HWY_INLINE V Clipped(V x) const {
    const V y = hn::IfThenElse(hn::Lt(x, zero), zero, x);  // relu: NaN and -0 pass
    return hn::IfThenElse(hn::Lt(y, alpha), y, alpha);     // NaN -> alpha (torch.where)
  }
  HWY_INLINE V Forward(D d, V x) const {
    const V q = RoundHalfEven(d, hn::Mul(m, Clipped(x)));
    return hn::Div(hn::Add(q, zero), m);  // q + zp (zp = +0) turns -0 into +0, as Distiller
  }
  HWY_INLINE void Backward(D /*d*/, V dy, V x, V& dx, V& t0, V& /*t1*/) const {
    const V y = hn::IfThenElse(hn::Lt(x, zero), zero, x);
    const auto below_alpha = hn::Lt(y, alpha);
    dx = hn::IfThenElse(hn::And(hn::Gt(y, zero), below_alpha), dy, zero);
    t0 = hn::IfThenElse(below_alpha, zero, dy);
  }
};

template <class D>
struct ClipOp {
  using V = hn::Vec<D>;
  static constexpr int kTerms = 2;
  V cmin, cmax, zero;
  ClipOp(D d, const internal::ClipSlot& c)
      : cmin(hn::Set(d, c.cmin)), cmax(hn::Set(d, c.cmax)), zero(hn::Zero(d)) {}

  HWY_INLINE V Forward(D /*d*/, V x) const {
    const V a = hn::IfThenElse(hn::Lt(x, cmax), x, cmax);
    const V b = hn::IfThenElse(hn::Gt(a, cmin), a, cmin);
    return hn::IfThenElse(hn::IsNaN(x), x, b);
  }
  HWY_INLINE void Backward(D /*d*/, V dy, V x, V& dx, V& t0, V& t1) const {
    const auto above_min = hn::Gt(x, cmin);
    const auto below_max = hn::Lt(x, cmax);
    dx = hn::IfThenElse(hn::And(above_min, below_max), dy, zero);
    t0 = hn::IfThenElse(above_min, zero, dy);
    t1 = hn::IfThenElse(below_max, zero, dy);
  }
};

// ---- drivers ----------------------------------------------------------------------------------

using DF = hn::ScalableTag<float>;
using D1 = hn::CappedTag<float, 1>;

template <template <class> class Op>
HWY_INLINE void ForwardRun(const Op<DF>& op, const Op<D1>& op1, const float* HWY_RESTRICT x,
                           float* out, size_t n) {
  const DF d;
  const D1 d1;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(op.Forward(d, hn::LoadU(d, x + i)), d, out + i);
  for (; i < n; ++i) hn::StoreU(op1.Forward(d1, hn::LoadU(d1, x + i)), d1, out + i);
}

// Gradient terms of one contiguous piece go to lanes (lane0 + i) % 16. `dx` may alias `dy`.
template <template <class> class Op>
HWY_INLINE void BackwardRun(const Op<DF>& op, const Op<D1>& op1, const float* dy,
                            const float* HWY_RESTRICT x, float* dx, size_t n, size_t lane0,
                            float* HWY_RESTRICT lanes0, float* HWY_RESTRICT lanes1) {
  constexpr int kTerms = Op<DF>::kTerms;
  const DF d;
  const D1 d1;
  constexpr size_t kN = hn::MaxLanes(DF());
  static_assert(kReductionLanes % kN == 0, "lane count must divide kReductionLanes");
  constexpr size_t kVecs = kReductionLanes / kN;
  size_t i = 0;
  auto one = [&](size_t k) {
    hn::Vec<D1> g, t0 = hn::Zero(d1), t1 = hn::Zero(d1);
    op1.Backward(d1, hn::LoadU(d1, dy + k), hn::LoadU(d1, x + k), g, t0, t1);
    hn::StoreU(g, d1, dx + k);
    const size_t lane = (lane0 + k) % kReductionLanes;
    if (kTerms >= 1) lanes0[lane] += hn::GetLane(t0);
    if (kTerms >= 2) lanes1[lane] += hn::GetLane(t1);
  };
  // Head: until the next element lands on lane 0.
  for (; i < n && (lane0 + i) % kReductionLanes != 0; ++i) one(i);
  if (i + kReductionLanes <= n) {
    hn::Vec<DF> acc0[kVecs], acc1[kVecs];
    for (size_t v = 0; v < kVecs; ++v) {
      acc0[v] = hn::LoadU(d, lanes0 + v * kN);
      acc1[v] = kTerms >= 2 ? hn::LoadU(d, lanes1 + v * kN) : hn::Zero(d);
    }
    for (; i + kReductionLanes <= n; i += kReductionLanes) {
      for (size_t v = 0; v < kVecs; ++v) {
        const size_t k = i + v * kN;
        hn::Vec<DF> g, t0 = hn::Zero(d), t1 = hn::Zero(d);
        op.Backward(d, hn::LoadU(d, dy + k), hn::LoadU(d, x + k), g, t0, t1);
        hn::StoreU(g, d, dx + k);
        acc0[v] = hn::Add(acc0[v], t0);
        if (kTerms >= 2) acc1[v] = hn::Add(acc1[v], t1);
      }
    }
    for (size_t v = 0; v < kVecs; ++v) {
      hn::StoreU(acc0[v], d, lanes0 + v * kN);
      if (kTerms >= 2) hn::StoreU(acc1[v], d, lanes1 + v * kN);
    }
  }
  for (; i < n; ++i) one(i);
}

// dx only (no parameter gradient requested): the same functor, terms discarded.
template <template <class> class Op>
HWY_INLINE void BackwardRunNoTerms(const Op<DF>& op, const Op<D1>& op1, const float* dy,
                                   const float* HWY_RESTRICT x, float* dx, size_t n) {
  const DF d;
  const D1 d1;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::Vec<DF> g, t0, t1;
    op.Backward(d, hn::LoadU(d, dy + i), hn::LoadU(d, x + i), g, t0, t1);
    hn::StoreU(g, d, dx + i);
  }
  for (; i < n; ++i) {
    hn::Vec<D1> g, t0, t1;
    op1.Backward(d1, hn::LoadU(d1, dy + i), hn::LoadU(d1, x + i), g, t0, t1);
    hn::StoreU(g, d1, dx + i);
  }
}

// Logical range of chunk k of the plan, and its slot.
HWY_INLINE void ChunkRange(const internal::LearnedPlan& plan, int64_t k, int64_t* slot,
                           int64_t* begin, int64_t* end) {
  const int64_t c = k / plan.chunks_per_slot;
  const int64_t j = k % plan.chunks_per_slot;
  *slot = c;
  *begin = c * plan.slot_numel + j * kReductionChunk;
  *end = std::min(*begin + kReductionChunk, (c + 1) * plan.slot_numel);
}

template <template <class> class Op, class Slot>
HWY_INLINE void ForwardUnitT(const internal::LearnedPlan& plan, const Slot* slots, int64_t unit) {
  const int64_t first = unit * plan.chunks_per_unit;
  const int64_t last = std::min(first + plan.chunks_per_unit, plan.num_chunks);
  for (int64_t k = first; k < last; ++k) {
    int64_t c, begin, end;
    ChunkRange(plan, k, &c, &begin, &end);
    const Op<DF> op(DF(), slots[c]);
    const Op<D1> op1(D1(), slots[c]);
    internal::ForEachF32Block(
        *plan.walk, 1, begin, end,
        [&](const float* const* in, float* const* out, const internal::Run& piece) {
          ForwardRun<Op>(op, op1, in[0], out[0], static_cast<size_t>(piece.count));
        });
  }
}

// Pairwise fold of the lanes (the order stated in learned_range.h).
HWY_INLINE float FoldLanes(float* l) {
  for (int w = kReductionLanes / 2; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) l[i] += l[i + w];
  }
  return l[0];
}

// partial0 / partial1 (nullable together: dx only) receive one value per chunk.
template <template <class> class Op, class Slot>
HWY_INLINE void BackwardUnitT(const internal::LearnedPlan& plan, const Slot* slots, int64_t unit,
                              float* partial0, float* partial1) {
  const int64_t first = unit * plan.chunks_per_unit;
  const int64_t last = std::min(first + plan.chunks_per_unit, plan.num_chunks);
  for (int64_t k = first; k < last; ++k) {
    int64_t c, begin, end;
    ChunkRange(plan, k, &c, &begin, &end);
    const Op<DF> op(DF(), slots[c]);
    const Op<D1> op1(D1(), slots[c]);
    if (partial0 == nullptr) {
      internal::ForEachF32Block(
          *plan.walk, 2, begin, end,
          [&](const float* const* in, float* const* out, const internal::Run& piece) {
            BackwardRunNoTerms<Op>(op, op1, in[0], in[1], out[0], static_cast<size_t>(piece.count));
          });
      continue;
    }
    HWY_ALIGN float lanes0[kReductionLanes] = {};
    HWY_ALIGN float lanes1[kReductionLanes] = {};
    internal::ForEachF32Block(
        *plan.walk, 2, begin, end,
        [&](const float* const* in, float* const* out, const internal::Run& piece) {
          const size_t lane0 = static_cast<size_t>(piece.logical_start - begin) % kReductionLanes;
          BackwardRun<Op>(op, op1, in[0], in[1], out[0], static_cast<size_t>(piece.count), lane0,
                          lanes0, lanes1);
        });
    partial0[k] = FoldLanes(lanes0);
    if (Op<DF>::kTerms >= 2) partial1[k] = FoldLanes(lanes1);
  }
}

}  // namespace qkit::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
