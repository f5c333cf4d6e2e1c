// Fake quantization kernels: the per-target SIMD body on ONE contiguous float32 run, with either
// one broadcast parameter slot (param_step 0) or one slot per element (param_step 1).
// The driver (validation, strided walk, threads, dispatch) is fake_quant.cc; the arithmetic is
// written down in docs/numerics.md, section by section, naming the functions below.
//
// The first part of this file (normal include guard) is target-independent: the per-call
// parameter tables and the bit-packed mask helpers. The second part is included once per
// Highway target (per-target include guard, Highway's "-inl.h" convention).

#ifndef QKIT_SRC_OPS_FAKE_QUANT_SHARED_H_
#define QKIT_SRC_OPS_FAKE_QUANT_SHARED_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "internal/strided_walk.h"
#include "qkit/quant_spec.h"

namespace qkit::internal {

// Per-parameter-slot tables, built once per call (O(num_params)) by fake_quant.cc from the
// caller's QParams so that the kernels never branch on ScaleMode / ZeroPointMode per element.
struct FqTables {
  const float* qa = nullptr;  // forms the quotient: divisor s (kDivide), multiplier f32(1/s)
                              // (kMultiplyReciprocal) or multiplier m (kMultiplier)
  const float* da = nullptr;  // dequantizes: multiplier s, or divisor m (1 where m == 0)
  const float* z = nullptr;   // zero point, with -0 replaced by +0

  FqTables Offset(int64_t p) const { return {qa + p, da + p, z + p}; }
};

// Everything a kernel needs for one run besides the data pointers.
struct FqRunArgs {
  FqTables t;          // already offset to the run's first parameter slot
  int param_step = 0;  // 0: every element uses slot t[0]; 1: element i uses t[i]
  float qmin = 0.0f;
  float qmax = 0.0f;
  bool zp_before_round = false;  // ZeroPointMode::kAddBeforeRound
  bool nan_to_qmin = false;      // NanMode::kToQuantMin (else NaN propagates)
  bool stream = false;           // `out` is real tensor memory: non-temporal stores where aligned
  // Periodic tables (param_step 1): when tile > 0, `t` holds `tile` entries and element i of the
  // run uses entry (phase + i) % tile.
  size_t tile = 0;
  size_t phase = 0;
};

// One call of an op as the per-target chunk functions in fake_quant.cc see it.
struct FqCall {
  const Walk* walk = nullptr;  // operands in the order of the op's signature
  FqTables t;                  // slot 0 of the per-slot tables
  float qmin = 0.0f;
  float qmax = 0.0f;
  Rounding rounding = Rounding::kHalfToEven;
  ScaleMode scale_mode = ScaleMode::kDivide;
  bool zp_before_round = false;
  bool nan_to_qmin = false;
  bool stream = false;               // out-of-place output larger than the caches
  uint8_t* mask_out = nullptr;       // FakeQuantize
  const uint8_t* mask_in = nullptr;  // FakeQuantizeBackwardMasked
  // Periodic fast path (tile > 0): every operand is contiguous float32 and logical element i
  // uses entry (i % tile) of `pt`, the per-slot tables expanded to one entry per element over
  // a tile whose length is a multiple of the parameter period (channels x inner). One kernel
  // call covers a whole chunk (see FqRunArgs::tile), instead of one strided-walk run per
  // channel row (e.g. channels-last, where rows are short).
  int64_t tile = 0;
  FqTables pt;
  char* base[kMaxOperands] = {};  // operand data pointers for the periodic path
};

// Bit-packed mask: bit (i % 8) of byte (i / 8) is logical element i.
//
// Writes the low `n` (1..64) bits of `bits` for elements [pos, pos + n). The bits of the first
// byte below pos % 8 are kept (they belong to the previous run of the same chunk, which wrote
// them earlier on the same thread); the bits of the last byte above the end are written 0 (the
// next run of the chunk ORs into them, and the mask's unused tail bits end up 0).
inline void WriteMaskBits(uint8_t* mask, int64_t pos, uint64_t bits, int n) {
  uint8_t* p = mask + (pos >> 3);
  const int off = static_cast<int>(pos & 7);
  if (n < 64) bits &= (uint64_t{1} << n) - 1;
  if (off == 0 && n == 64) {  // the common, aligned case: one 8-byte store
    std::memcpy(p, &bits, 8);
    return;
  }
  const uint64_t keep = off ? (p[0] & ((1u << off) - 1u)) : 0u;
  if (n == 64) {  // off > 0: 64 bits span 9 bytes
    const uint64_t lo = (bits << off) | keep;
    std::memcpy(p, &lo, 8);
    p[8] = static_cast<uint8_t>(bits >> (64 - off));
    return;
  }
  // n < 64: at most off + n <= 70 bits, 9 bytes.
  const int nbytes = (off + n + 7) >> 3;
  const uint64_t lo = (bits << off) | keep;
  const uint8_t hi = off ? static_cast<uint8_t>(bits >> (64 - off)) : uint8_t{0};
  for (int b = 0; b < nbytes && b < 8; ++b) p[b] = static_cast<uint8_t>(lo >> (8 * b));
  if (nbytes == 9) p[8] = hi;
}

// Returns the bits of elements [pos, pos + n) (n in 1..64) in the low n bits; reads only the
// bytes holding those elements.
inline uint64_t ReadMaskBits(const uint8_t* mask, int64_t pos, int n) {
  const uint8_t* p = mask + (pos >> 3);
  const int off = static_cast<int>(pos & 7);
  if (n == 64) {
    uint64_t lo;
    std::memcpy(&lo, p, 8);
    if (off == 0) return lo;
    return (lo >> off) | (static_cast<uint64_t>(p[8]) << (64 - off));
  }
  const int nbytes = (off + n + 7) >> 3;
  uint64_t lo = 0;
  for (int b = 0; b < nbytes && b < 8; ++b) lo |= static_cast<uint64_t>(p[b]) << (8 * b);
  uint64_t r = lo >> off;
  if (nbytes == 9) r |= static_cast<uint64_t>(p[8]) << (64 - off);
  return r & ((uint64_t{1} << n) - 1);
}

}  // namespace qkit::internal

#endif  // QKIT_SRC_OPS_FAKE_QUANT_SHARED_H_

// ---------------------------------------------------------------------------------------------
// Per-target part.
#if defined(QKIT_SRC_OPS_FAKE_QUANT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QKIT_SRC_OPS_FAKE_QUANT_INL_H_
#undef QKIT_SRC_OPS_FAKE_QUANT_INL_H_
#else
#define QKIT_SRC_OPS_FAKE_QUANT_INL_H_
#endif

#include <hwy/cache_control.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {
namespace fq {

namespace hn = hwy::HWY_NAMESPACE;
using internal::FqRunArgs;
using internal::FqTables;

// ------------------------------ rounding (docs/numerics.md §Rounding)
//
// All three stay in float (no float->int conversion, which is undefined for NaN) and return
// NaN and ±Inf unchanged. SSE4 and up use the IEEE roundps instruction. On SSSE3 and SCALAR
// Highway 1.0.3's emulations lose the sign of zero (checked over every float below 2^23:
// SSSE3 Round(-0.3) and Floor(-0.0) give +0, SCALAR Round(-0.5) gives +0), so they are replaced
// by the forms below, which equal IEEE bit for bit: for 0 <= a < 2^23, f32(a + 2^23) rounds a to
// an integer (ties to even, the FP environment's default mode), subtracting 2^23 again is
// exact, and the sign is copied back from v.

#if HWY_TARGET == HWY_SSSE3 || HWY_TARGET == HWY_SCALAR
template <class D, class V>
HWY_INLINE V RoundHalfEvenF(D d, V v) {
  const V k2p23 = hn::Set(d, 8388608.0f);
  const V a = hn::Abs(v);
  const V r = hn::Sub(hn::Add(a, k2p23), k2p23);
  // |v| >= 2^23 (already integral), ±Inf and NaN: v itself.
  return hn::IfThenElse(hn::Lt(a, k2p23), hn::CopySignToAbs(r, v), v);
}
template <class D, class V>
HWY_INLINE V FloorF(D d, V v) {
  const V r = RoundHalfEvenF(d, v);
  return hn::IfThenElse(hn::Gt(r, v), hn::Sub(r, hn::Set(d, 1.0f)), r);
}
template <class D, class V>
HWY_INLINE V TruncF(D d, V v) {
  return hn::CopySignToAbs(FloorF(d, hn::Abs(v)), v);
}
#else
template <class D, class V>
HWY_INLINE V RoundHalfEvenF(D /*d*/, V v) {
  return hn::Round(v);
}
template <class D, class V>
HWY_INLINE V FloorF(D /*d*/, V v) {
  return hn::Floor(v);
}
template <class D, class V>
HWY_INLINE V TruncF(D /*d*/, V v) {
  return hn::Trunc(v);
}
#endif

// Half away from zero as trunc(v) + sign(v) where |v - trunc(v)| >= 0.5. v - trunc(v) is exact,
// so this is right at 0.5 - 2^-25 (unlike trunc(v + copysign(0.5, v)), whose add rounds up to
// 1), and the sign of zero is kept (-0.3 -> -0).
template <class D, class V>
HWY_INLINE V RoundHalfAwayF(D d, V v) {
  const V t = TruncF(d, v);
  const V frac = hn::Abs(hn::Sub(v, t));  // NaN for ±Inf: the compare below is false
  const V away = hn::Add(t, hn::CopySignToAbs(hn::Set(d, 1.0f), v));
  return hn::IfThenElse(hn::Ge(frac, hn::Set(d, 0.5f)), away, t);
}

// floor(f32(v + 0.5f)): the add is rounded in float32 on purpose (Horizon's bpu_round), so
// 0.5 - 2^-25 rounds to 1.
template <class D, class V>
HWY_INLINE V RoundFloorAddHalfF(D d, V v) {
  return FloorF(d, hn::Add(v, hn::Set(d, 0.5f)));
}

template <Rounding R, class D, class V>
HWY_INLINE V RoundBy(D d, V v) {
  if constexpr (R == Rounding::kHalfToEven) {
    return RoundHalfEvenF(d, v);
  } else if constexpr (R == Rounding::kHalfAwayFromZero) {
    return RoundHalfAwayF(d, v);
  } else {
    return RoundFloorAddHalfF(d, v);
  }
}

// ------------------------------ the quotient and the dequantization (§How x/s is formed)

// v = x / s, x * f32(1/s) or x * m. With m == 0 every non-NaN x (±Inf included, where x * 0
// would be NaN) gives v = +0, so the code is the zero point.
template <ScaleMode S, class D, class V>
HWY_INLINE V Quotient(D d, V x, V qa) {
  if constexpr (S == ScaleMode::kDivide) {
    return hn::Div(x, qa);
  } else if constexpr (S == ScaleMode::kMultiplyReciprocal) {
    return hn::Mul(x, qa);
  } else {
    const auto zero_m = hn::AndNot(hn::IsNaN(x), hn::Eq(qa, hn::Zero(d)));
    return hn::IfThenZeroElse(zero_m, hn::Mul(x, qa));
  }
}

// (c - z) * s, or (c - z) / m.
template <ScaleMode S, class V>
HWY_INLINE V Dequant(V c_minus_z, V da) {
  if constexpr (S == ScaleMode::kMultiplier) {
    return hn::Div(c_minus_z, da);
  } else {
    return hn::Mul(c_minus_z, da);
  }
}

// ------------------------------ loads / stores that never touch memory past `n`

template <class D>
HWY_INLINE hn::Vec<D> LoadPart(D d, const float* HWY_RESTRICT p, size_t n) {
#if HWY_TARGET <= HWY_AVX2
  // Hardware masked loads: masked-off lanes are not accessed (no fault).
  return hn::MaskedLoad(hn::FirstN(d, n), d, p);
#else
  // Highway 1.0.3's MaskedLoad on SSE4/SSSE3 is a full (aligned) load plus a blend, which would
  // read past the end: copy the valid part to an aligned buffer instead.
  HWY_ALIGN float buf[hn::MaxLanes(d)] = {};
  std::memcpy(buf, p, n * sizeof(float));
  return hn::Load(d, buf);
#endif
}

template <class D>
HWY_INLINE void StorePart(D d, hn::Vec<D> v, float* HWY_RESTRICT p, size_t n) {
  // BlendedStore writes only the masked lanes on every target (maskstore on AVX2/AVX3, a lane
  // loop on SSE4/SSSE3, a branch on SCALAR).
  hn::BlendedStore(v, hn::FirstN(d, n), d, p);
}

// Returns v unchanged but opaque to the optimiser, so that IfThenElseZero(m, LoadU(p)) is not
// folded into one zero-masking load: on AVX-512 (Zen) streaming through masked loads ran at half
// the speed of plain loads + a select (BackwardMasked at 64M floats: 24 ms vs 12 ms).
template <class V>
HWY_INLINE V NoFold(V v) {
#if HWY_TARGET != HWY_SCALAR && HWY_ARCH_X86 && (HWY_COMPILER_GCC || HWY_COMPILER_CLANG) && \
    !(HWY_COMPILER_CLANG && HWY_IS_ASAN)  // clang+ASan: "tied indirect register inputs"
  asm("" : "+x"(v.raw));
#endif
  return v;
}

template <class D>
HWY_INLINE uint64_t MaskToBits(D d, hn::Mask<D> m) {
  uint8_t buf[8] = {};
  hn::StoreMaskBits(d, m, buf);
  uint64_t bits;
  std::memcpy(&bits, buf, 8);
  return bits;
}

// Lanes get bits [0, Lanes(d)) of `bits` (higher bits are ignored).
template <class D>
HWY_INLINE hn::Mask<D> BitsToMask(D d, uint64_t bits) {
  uint8_t buf[8];
  std::memcpy(buf, &bits, 8);
  return hn::LoadMaskBits(d, buf);
}

// ------------------------------ parameters of one vector

template <class D>
struct ParamVecs {
  hn::Vec<D> qa, da, z;
  // Added before / after rounding: (zb, za) = (-0.0f, z) for kAddAfterRound and (z, +0.0f) for
  // kAddBeforeRound. Adding -0.0f is the exact identity for every float (including -0 and NaN)
  // and adding +0.0f only turns -0 into +0, so round(v + zb) + za is round(v) + z or
  // round(f32(v + z)) with a -0 code made +0 (codes are integers: docs/numerics.md
  // §Zero point), without a branch on the mode.
  hn::Vec<D> zb, za;
};

// The parameters of one vector. kStep 0: one slot, broadcast once per run. kStep 1: slot i for
// element i (kDivide loads one table for both the divisor and the dequantization multiplier,
// which are the same step s).
template <class D, ScaleMode S, int kStep>
class ParamSource {
 public:
  ParamSource(D d, const FqRunArgs& a)
      : t_(a.t), before_(a.zp_before_round), neg0_(hn::Set(d, -0.0f)), pos0_(hn::Zero(d)) {
    if constexpr (kStep == 0) {
      b_ = Make(hn::Set(d, t_.qa[0]), hn::Set(d, t_.da[0]), hn::Set(d, t_.z[0]));
    }
  }
  HWY_INLINE ParamVecs<D> Full(D d, size_t i) const {
    if constexpr (kStep == 0) {
      return b_;
    } else {
      const auto da = hn::LoadU(d, t_.da + i);
      const auto qa = S == ScaleMode::kDivide ? da : hn::LoadU(d, t_.qa + i);
      return Make(qa, da, hn::LoadU(d, t_.z + i));
    }
  }
  HWY_INLINE ParamVecs<D> Part(D d, size_t i, size_t n) const {
    if constexpr (kStep == 0) {
      return b_;
    } else {
      // Lanes past n read 0; their results are never stored.
      const auto da = LoadPart(d, t_.da + i, n);
      const auto qa = S == ScaleMode::kDivide ? da : LoadPart(d, t_.qa + i, n);
      return Make(qa, da, LoadPart(d, t_.z + i, n));
    }
  }

 private:
  HWY_INLINE ParamVecs<D> Make(hn::Vec<D> qa, hn::Vec<D> da, hn::Vec<D> z) const {
    // A predictable branch (the mode is fixed per call), cheaper than two blends per vector.
    if (before_) return {qa, da, z, z, pos0_};
    return {qa, da, z, neg0_, z};
  }

  FqTables t_;
  bool before_;
  hn::Vec<D> neg0_, pos0_;
  ParamVecs<D> b_;
};

// ------------------------------ the code of one vector (§Zero point, §Clamping)

template <class D>
struct Codes {
  hn::Mask<D> in_range;  // qmin <= q <= qmax for the unclamped code q (false for NaN)
  hn::Mask<D> nan;       // x is NaN
  hn::Vec<D> c;          // clamped code; NaN where x is NaN
};

template <Rounding R, ScaleMode S, class D>
HWY_INLINE Codes<D> ComputeCodes(D d, hn::Vec<D> x, const ParamVecs<D>& p, hn::Vec<D> qmin,
                                 hn::Vec<D> qmax) {
  const auto v = Quotient<S>(d, x, p.qa);
  const auto q = hn::Add(RoundBy<R>(d, hn::Add(v, p.zb)), p.za);
  Codes<D> r;
  r.in_range = hn::And(hn::Ge(q, qmin), hn::Le(q, qmax));
  // Min/Max is exact here on every target: q is never -0 (codes are normalised, see
  // ParamVecs) and neither are the bounds, so the operand-order dependence of SIMD min/max on
  // {+0, -0} cannot arise. For NaN q the result is target-specific, so callers overwrite the NaN
  // lanes from `nan` (STYLE C7).
  r.c = hn::Min(hn::Max(q, qmin), qmax);
  r.nan = hn::IsNaN(x);
  return r;
}

// ------------------------------ run driver

// Calls op.Full(i) for every whole vector and op.Part(i, k) for the tail, and (mask != null)
// packs the returned in-range masks into bits [bit_pos, bit_pos + n) of `mask`, 64 at a time.
template <class D, class Op>
HWY_INLINE void DriveWithMaskOut(D d, size_t n, uint8_t* mask, int64_t bit_pos, Op& op) {
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  if (mask == nullptr) {
    for (; i + N <= n; i += N) op.Full(i);
    if (i < n) op.Part(i, n - i);
    return;
  }
  for (; i + 64 <= n; i += 64) {
    uint64_t word = 0;
    for (size_t k = 0; k < 64; k += N) word |= MaskToBits(d, op.Full(i + k)) << k;
    internal::WriteMaskBits(mask, bit_pos + static_cast<int64_t>(i), word, 64);
  }
  if (i < n) {
    const size_t rest = n - i;
    uint64_t word = 0;
    size_t k = 0;
    for (; k + N <= rest; k += N) word |= MaskToBits(d, op.Full(i + k)) << k;
    if (k < rest) word |= MaskToBits(d, op.Part(i + k, rest - k)) << k;  // bits >= rest cut
    internal::WriteMaskBits(mask, bit_pos + static_cast<int64_t>(i), word, static_cast<int>(rest));
  }
}

// ------------------------------ FakeQuantize

template <Rounding R, ScaleMode S, int kStep, class D>
class FakeQuantOp {
 public:
  using V = hn::Vec<D>;
  FakeQuantOp(D d, const FqRunArgs& a, const float* x, float* out)
      : d_(d),
        params_(d, a),
        qmin_(hn::Set(d, a.qmin)),
        qmax_(hn::Set(d, a.qmax)),
        to_qmin_(a.nan_to_qmin),
        x_(x),
        out_(out),
        stream_(a.stream &&
                reinterpret_cast<uintptr_t>(out) % (hn::Lanes(d) * sizeof(float)) == 0) {}

  HWY_INLINE hn::Mask<D> Full(size_t i) {
    const V y = Compute(hn::LoadU(d_, x_ + i), params_.Full(d_, i));
    if (stream_) {
      hn::Stream(y, d_, out_ + i);
    } else {
      hn::StoreU(y, d_, out_ + i);
    }
    return last_in_range_;
  }
  HWY_INLINE hn::Mask<D> Part(size_t i, size_t n) {
    const V y = Compute(LoadPart(d_, x_ + i, n), params_.Part(d_, i, n));
    StorePart(d_, y, out_ + i, n);
    return last_in_range_;
  }
  bool streamed() const { return stream_; }

 private:
  HWY_INLINE V Compute(V x, const ParamVecs<D>& p) {
    const Codes<D> k = ComputeCodes<R, S>(d_, x, p, qmin_, qmax_);
    last_in_range_ = k.in_range;
    const V y = Dequant<S>(hn::Sub(k.c, p.z), p.da);
    if (HWY_LIKELY(hn::AllFalse(d_, k.nan))) return y;
    // The NaN lanes, by the NaN policy. kToQuantMin: the code qmin, dequantized (mask 0).
    if (to_qmin_) return hn::IfThenElse(k.nan, Dequant<S>(hn::Sub(qmin_, p.z), p.da), y);
    // kPropagate (and kError, which never gets here with NaN): x itself, bit for bit.
    return hn::IfThenElse(k.nan, x, y);
  }

  D d_;
  ParamSource<D, S, kStep> params_;
  V qmin_, qmax_;
  bool to_qmin_;
  hn::Mask<D> last_in_range_;
  const float* x_;
  float* out_;  // may alias x_ exactly (in place)
  bool stream_;
};

// Calls fn(tables, offset, count) for the segments of a run: the whole run, or with periodic
// tables (a.tile > 0) the pieces between multiples of the tile, each with the tables offset to
// the segment's first element.
template <class Fn>
HWY_INLINE void ForEachSegment(const FqRunArgs& a, size_t n, Fn&& fn) {
  if (a.tile == 0) {
    fn(a.t, size_t{0}, n);
    return;
  }
  size_t phase = a.phase;
  for (size_t done = 0; done < n;) {
    const size_t len = std::min(n - done, a.tile - phase);
    fn(a.t.Offset(static_cast<int64_t>(phase)), done, len);
    done += len;
    phase = 0;
  }
}

template <Rounding R, ScaleMode S, int kStep>
HWY_NOINLINE bool FakeQuantizeRunT(const FqRunArgs& a, const float* x, float* out, size_t n,
                                   uint8_t* mask, int64_t bit_pos) {
  hn::ScalableTag<float> d;
  bool streamed = false;
  ForEachSegment(a, n, [&](const FqTables& t, size_t off, size_t len) HWY_ATTR {
    // A local op per segment (a few broadcasts), so that nothing of it escapes and the loop
    // keeps every parameter in registers.
    FqRunArgs s = a;
    s.t = t;
    FakeQuantOp<R, S, kStep, decltype(d)> op(d, s, x + off, out + off);
    DriveWithMaskOut(d, len, mask, bit_pos + static_cast<int64_t>(off), op);
    streamed |= op.streamed();
  });
  return streamed;
}

// ------------------------------ Quantize (codes as floats; NaN -> qmin, reported)

template <Rounding R, ScaleMode S, int kStep, class D>
class QuantizeOp {
 public:
  using V = hn::Vec<D>;
  QuantizeOp(D d, const FqRunArgs& a, const float* x, float* codes)
      : d_(d),
        params_(d, a),
        qmin_(hn::Set(d, a.qmin)),
        qmax_(hn::Set(d, a.qmax)),
        x_(x),
        codes_(codes) {}
  HWY_INLINE hn::Mask<D> Full(size_t i) {
    hn::StoreU(Compute(hn::LoadU(d_, x_ + i), params_.Full(d_, i)), d_, codes_ + i);
    return hn::FirstN(d_, 0);
  }
  HWY_INLINE hn::Mask<D> Part(size_t i, size_t n) {
    const V c = Compute(LoadPart(d_, x_ + i, n), params_.Part(d_, i, n));
    StorePart(d_, c, codes_ + i, n);
    return hn::FirstN(d_, 0);
  }
  bool saw_nan() const { return saw_nan_; }

 private:
  HWY_INLINE V Compute(V x, const ParamVecs<D>& p) {
    const Codes<D> k = ComputeCodes<R, S>(d_, x, p, qmin_, qmax_);
    saw_nan_ |= !hn::AllFalse(d_, k.nan);
    // Always a valid integer code (the caller throws afterwards unless kToQuantMin).
    return hn::IfThenElse(k.nan, qmin_, k.c);
  }
  D d_;
  ParamSource<D, S, kStep> params_;
  V qmin_, qmax_;
  const float* HWY_RESTRICT x_;
  float* codes_;
  bool saw_nan_ = false;
};

template <Rounding R, ScaleMode S, int kStep>
HWY_NOINLINE bool QuantizeRunT(const FqRunArgs& a, const float* x, float* codes, size_t n) {
  hn::ScalableTag<float> d;
  QuantizeOp<R, S, kStep, decltype(d)> op(d, a, x, codes);
  DriveWithMaskOut(d, n, nullptr, 0, op);
  return op.saw_nan();
}

// ------------------------------ Dequantize

template <ScaleMode S, int kStep>
HWY_NOINLINE void DequantizeRunT(const FqRunArgs& a, const float* q, float* out, size_t n) {
  hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const ParamSource<decltype(d), S, kStep> params(d, a);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const ParamVecs<decltype(d)> p = params.Full(d, i);
    hn::StoreU(Dequant<S>(hn::Sub(hn::LoadU(d, q + i), p.z), p.da), d, out + i);
  }
  if (i < n) {
    const ParamVecs<decltype(d)> p = params.Part(d, i, n - i);
    StorePart(d, Dequant<S>(hn::Sub(LoadPart(d, q + i, n - i), p.z), p.da), out + i, n - i);
  }
}

// ------------------------------ backward, clipped (mask recomputed from x)

template <Rounding R, ScaleMode S, int kStep, class D>
HWY_INLINE void BackwardClippedSegment(D d, const FqRunArgs& a, const float* dy, const float* x,
                                       float* dx, size_t n) {
  const size_t N = hn::Lanes(d);
  const ParamSource<D, S, kStep> params(d, a);
  const auto qmin = hn::Set(d, a.qmin);
  const auto qmax = hn::Set(d, a.qmax);
  const bool stream = a.stream && reinterpret_cast<uintptr_t>(dx) % (N * sizeof(float)) == 0;
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto k = ComputeCodes<R, S>(d, hn::LoadU(d, x + i), params.Full(d, i), qmin, qmax);
    const auto v = hn::IfThenElseZero(k.in_range, NoFold(hn::LoadU(d, dy + i)));
    if (stream) {
      hn::Stream(v, d, dx + i);
    } else {
      hn::StoreU(v, d, dx + i);
    }
  }
  if (i < n) {
    const size_t r = n - i;
    const auto k = ComputeCodes<R, S>(d, LoadPart(d, x + i, r), params.Part(d, i, r), qmin, qmax);
    StorePart(d, hn::IfThenElseZero(k.in_range, LoadPart(d, dy + i, r)), dx + i, r);
  }
}

template <Rounding R, ScaleMode S, int kStep>
HWY_NOINLINE void BackwardClippedRunT(const FqRunArgs& a, const float* dy, const float* x,
                                      float* dx, size_t n) {
  hn::ScalableTag<float> d;
  ForEachSegment(a, n, [&](const FqTables& t, size_t off, size_t len) HWY_ATTR {
    FqRunArgs s = a;
    s.t = t;
    BackwardClippedSegment<R, S, kStep>(d, s, dy + off, x + off, dx + off, len);
  });
}

// ------------------------------ runtime -> template selection (once per run)

template <template <Rounding, ScaleMode, int> class Fn, class... Args>
HWY_INLINE auto SelectAndCall(Rounding r, ScaleMode s, int step, Args&&... args) {
#define QKIT_FQ_CASE_S(R, S)                                               \
  if (s == S) {                                                            \
    return step ? Fn<R, S, 1>::Call(args...) : Fn<R, S, 0>::Call(args...); \
  }
#define QKIT_FQ_CASE_R(R)                                          \
  if (r == R) {                                                    \
    QKIT_FQ_CASE_S(R, ScaleMode::kDivide)                          \
    QKIT_FQ_CASE_S(R, ScaleMode::kMultiplyReciprocal)              \
    return step ? Fn<R, ScaleMode::kMultiplier, 1>::Call(args...)  \
                : Fn<R, ScaleMode::kMultiplier, 0>::Call(args...); \
  }
  QKIT_FQ_CASE_R(Rounding::kHalfToEven)
  QKIT_FQ_CASE_R(Rounding::kHalfAwayFromZero)
  QKIT_FQ_CASE_S(Rounding::kFloorAddHalf, ScaleMode::kDivide)
  QKIT_FQ_CASE_S(Rounding::kFloorAddHalf, ScaleMode::kMultiplyReciprocal)
  return step ? Fn<Rounding::kFloorAddHalf, ScaleMode::kMultiplier, 1>::Call(args...)
              : Fn<Rounding::kFloorAddHalf, ScaleMode::kMultiplier, 0>::Call(args...);
#undef QKIT_FQ_CASE_R
#undef QKIT_FQ_CASE_S
}

template <Rounding R, ScaleMode S, int kStep>
struct FakeQuantizeFn {
  static bool Call(const FqRunArgs& a, const float* x, float* out, size_t n, uint8_t* mask,
                   int64_t bit_pos) {
    return FakeQuantizeRunT<R, S, kStep>(a, x, out, n, mask, bit_pos);
  }
};
template <Rounding R, ScaleMode S, int kStep>
struct QuantizeFn {
  static bool Call(const FqRunArgs& a, const float* x, float* codes, size_t n) {
    return QuantizeRunT<R, S, kStep>(a, x, codes, n);
  }
};
template <Rounding R, ScaleMode S, int kStep>
struct BackwardClippedFn {
  static void Call(const FqRunArgs& a, const float* dy, const float* x, float* dx, size_t n) {
    BackwardClippedRunT<R, S, kStep>(a, dy, x, dx, n);
  }
};

}  // namespace fq

// ------------------------------ per-run entry points used by fake_quant.cc

// out[i] = fake-quantized x[i] for i < n; mask bits [bit_pos, bit_pos + n) when mask != null.
// Returns whether non-temporal stores were used (the caller then fences once per chunk).
HWY_INLINE bool FakeQuantizeRun(Rounding r, ScaleMode s, const internal::FqRunArgs& a,
                                const float* x, float* out, size_t n, uint8_t* mask,
                                int64_t bit_pos) {
  return fq::SelectAndCall<fq::FakeQuantizeFn>(r, s, a.param_step, a, x, out, n, mask, bit_pos);
}

// codes[i] = clamped integer code of x[i] as a float (NaN -> qmin). Returns whether x had NaN.
HWY_INLINE bool QuantizeRun(Rounding r, ScaleMode s, const internal::FqRunArgs& a, const float* x,
                            float* codes, size_t n) {
  return fq::SelectAndCall<fq::QuantizeFn>(r, s, a.param_step, a, x, codes, n);
}

// out[i] = (q[i] - z) * s or (q[i] - z) / m.
HWY_INLINE void DequantizeRun(ScaleMode s, const internal::FqRunArgs& a, const float* q, float* out,
                              size_t n) {
  if (s == ScaleMode::kMultiplier) {
    return a.param_step ? fq::DequantizeRunT<ScaleMode::kMultiplier, 1>(a, q, out, n)
                        : fq::DequantizeRunT<ScaleMode::kMultiplier, 0>(a, q, out, n);
  }
  return a.param_step ? fq::DequantizeRunT<ScaleMode::kDivide, 1>(a, q, out, n)
                      : fq::DequantizeRunT<ScaleMode::kDivide, 0>(a, q, out, n);
}

// dx[i] = in_range(x[i]) ? dy[i] : +0.
HWY_INLINE void BackwardClippedRun(Rounding r, ScaleMode s, const internal::FqRunArgs& a,
                                   const float* dy, const float* x, float* dx, size_t n) {
  fq::SelectAndCall<fq::BackwardClippedFn>(r, s, a.param_step, a, dy, x, dx, n);
}

// dx[i] = bit (bit_pos + i) of mask ? dy[i] : +0. dx may alias dy.
HWY_NOINLINE void BackwardMaskedRun(const float* dy, float* dx, size_t n, const uint8_t* mask,
                                    int64_t bit_pos, bool stream) {
  namespace hn = hwy::HWY_NAMESPACE;
  hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  stream = stream && reinterpret_cast<uintptr_t>(dx) % (N * sizeof(float)) == 0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const uint64_t word = internal::ReadMaskBits(mask, bit_pos + static_cast<int64_t>(i), 64);
    for (size_t k = 0; k < 64; k += N) {
      const auto v =
          hn::IfThenElseZero(fq::BitsToMask(d, word >> k), fq::NoFold(hn::LoadU(d, dy + i + k)));
      if (stream) {
        hn::Stream(v, d, dx + i + k);
      } else {
        hn::StoreU(v, d, dx + i + k);
      }
    }
  }
  if (i < n) {
    const size_t rest = n - i;
    const uint64_t word =
        internal::ReadMaskBits(mask, bit_pos + static_cast<int64_t>(i), static_cast<int>(rest));
    size_t k = 0;
    for (; k + N <= rest; k += N) {
      const auto v =
          hn::IfThenElseZero(fq::BitsToMask(d, word >> k), fq::NoFold(hn::LoadU(d, dy + i + k)));
      hn::StoreU(v, d, dx + i + k);
    }
    if (k < rest) {
      const size_t m = rest - k;
      const auto v =
          hn::IfThenElseZero(fq::BitsToMask(d, word >> k), fq::LoadPart(d, dy + i + k, m));
      fq::StorePart(d, v, dx + i + k, m);
    }
  }
}

// Index of the first NaN in x[0, n), or -1.
HWY_NOINLINE int64_t FirstNaNRun(const float* x, size_t n) {
  namespace hn = hwy::HWY_NAMESPACE;
  hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto nan = hn::IsNaN(hn::LoadU(d, x + i));
    if (!hn::AllFalse(d, nan)) return static_cast<int64_t>(i + hn::FindFirstTrue(d, nan));
  }
  if (i < n) {
    const auto nan = hn::And(hn::IsNaN(fq::LoadPart(d, x + i, n - i)), hn::FirstN(d, n - i));
    if (!hn::AllFalse(d, nan)) return static_cast<int64_t>(i + hn::FindFirstTrue(d, nan));
  }
  return -1;
}

}  // namespace HWY_NAMESPACE
}  // namespace qkit
HWY_AFTER_NAMESPACE();

#endif  // QKIT_SRC_OPS_FAKE_QUANT_INL_H_
