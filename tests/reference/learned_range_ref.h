// Scalar references for the learned-range ops, written from ../shared/SPEC.md (§3.4 MegEngine
// LSQ and TQT, §7.5 PyTorch learnable fake quant, §5.3 PACT, §4.3 NVIDIA Clip), one element at
// a time in plain float32 C++ (tests build with -ffp-contract=off), plus the documented
// reduction order of include/qkit/ops/learned_range.h. Obvious and slow on purpose.
#ifndef QKIT_TESTS_REFERENCE_LEARNED_RANGE_REF_H_
#define QKIT_TESTS_REFERENCE_LEARNED_RANGE_REF_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace qkit::ref {

// One element's results: forward output, input gradient and up to two parameter-gradient terms.
struct ElemGrad {
  float dx = 0.0f;
  float t0 = 0.0f;
  float t1 = 0.0f;
};

// Clamp that lets NaN through (MegEngine's `x <= qmin ? qmin : x` chains).
inline float ClampKeepNaN(float v, float lo, float hi) {
  if (std::isnan(v)) return v;
  return v < lo ? lo : (v > hi ? hi : v);
}

// ---- MegEngine LSQ (SPEC §3.4) --------------------------------------------------------------
inline float LsqMegEngineForward(float x, float s, float z, float qmin, float qmax) {
  const float v = x / s + z;
  const float q = std::round(ClampKeepNaN(v, qmin, qmax));  // std::round = RHAZ
  return (q - z) * s;
}

inline ElemGrad LsqMegEngineBackward(float dy, float x, float s, float z, float qmin, float qmax,
                                     float g) {
  const float v = x / s + z;  // unclamped, unrounded
  const bool small = v < qmin;
  const bool big = v > qmax;
  ElemGrad r;
  r.dx = (small || big) ? 0.0f : dy;
  float c;
  if (small) {
    c = qmin;
  } else if (big) {
    c = qmax;
  } else {
    c = std::round(v) - v;
  }
  r.t0 = c * g * dy;  // MegEngine: (term * grad_scale) * diff
  return r;
}

// ---- PyTorch learnable (SPEC §7.5) ------------------------------------------------------------
inline float ForwardZeroPoint(float z, float qmin, float qmax) {
  return std::min(std::max(std::nearbyint(z), qmin), qmax);
}
// Per tensor: int64(clamp(z + 0.5f)) (C++ truncation); per channel: the forward value.
inline float BackwardZeroPoint(float z, float qmin, float qmax, bool per_tensor) {
  if (!per_tensor) return ForwardZeroPoint(z, qmin, qmax);
  const float c = std::min(std::max(z + 0.5f, qmin), qmax);
  return static_cast<float>(static_cast<int64_t>(c));
}

inline float LsqPyTorchForward(float x, float s, float zf, float qmin, float qmax) {
  const float inv = 1.0f / s;
  const float q = zf + std::nearbyint(x * inv);
  const float c = std::fmin(std::fmax(q, qmin), qmax);  // fmax(NaN, qmin) = qmin
  return (c - zf) * s;
}

// fused: zb + x * inv and (xq - zb) * s - x each rounded once (torch's kernels compiled with FMA
// contraction); std::fma is the correctly rounded fused operation.
inline ElemGrad LsqPyTorchBackward(float dy, float x, float s, float zb, float qmin, float qmax,
                                   float g, bool fused = false) {
  const float inv = 1.0f / s;
  const float xq = fused ? std::nearbyint(std::fma(x, inv, zb)) : std::nearbyint(zb + x * inv);
  ElemGrad r;
  if (xq >= qmin && xq <= qmax) {
    r.dx = dy;
    const float xfq = (xq - zb) * s;
    const float residual = fused ? std::fma(xq - zb, s, -x) : xfq - x;
    r.t0 = dy * residual * inv * g;
    r.t1 = 0.0f;
  } else {
    r.dx = 0.0f;
    // NaN behaves as "below" (x86's int64 cast of NaN gives INT64_MIN upstream).
    const float slope = xq > qmax ? qmax - zb : qmin - zb;
    r.t0 = dy * slope * g;
    r.t1 = dy * (-1.0f) * s * g;
  }
  return r;
}

// ---- MegEngine TQT (SPEC §3.4, 10.6) ----------------------------------------------------------
inline float TqtThreshold(float log2_t) {
  return static_cast<float>(std::pow(2.0, static_cast<double>(log2_t)));
}

inline float TqtForward(float x, float log2_t, float qmin, float qmax) {
  const float t = TqtThreshold(log2_t);
  return ClampKeepNaN(std::round(x / t), qmin, qmax) * t;
}

inline ElemGrad TqtBackward(float dy, float x, float log2_t, float qmin, float qmax) {
  const float t = TqtThreshold(log2_t);
  const float v = x / t;
  const float r = ClampKeepNaN(std::round(v), qmin, qmax);
  const bool clip = v < qmin - 0.5f || v > qmax + 0.5f;
  ElemGrad out;
  out.dx = clip ? 0.0f : dy;
  const float w = clip ? dy * r * t : dy * (r - v) * t;
  out.t0 = static_cast<float>(static_cast<double>(w) * std::log(2.0));
  return out;
}

// ---- Distiller PACT (SPEC §5.3, §5.1) ---------------------------------------------------------
inline float PactMultiplier(float alpha, int bits) {
  const float n = static_cast<float>((1 << bits) - 1);
  float diff = std::max(alpha, 0.0f);
  if (diff == 0.0f) diff = n;
  const float reciprocal = 1.0f / diff;  // torch: n / tensor == reciprocal(tensor) * n
  return reciprocal * n;
}

inline float PactForward(float x, float alpha, int bits) {
  const float m = PactMultiplier(alpha, bits);
  float y = x < 0.0f ? 0.0f : x;  // relu (NaN passes)
  y = y < alpha ? y : alpha;      // torch.where(y < alpha, y, alpha)
  const float zp = 0.0f;
  const float q = std::nearbyint(m * y - zp);
  return (q + zp) / m;
}

inline ElemGrad PactBackward(float dy, float x, float alpha) {
  const float y = x < 0.0f ? 0.0f : x;
  ElemGrad r;
  r.dx = (x > 0.0f && y < alpha) ? dy : 0.0f;
  r.t0 = (y < alpha) ? 0.0f : dy;
  return r;
}

// ---- NVIDIA Clip (SPEC §4.3) ------------------------------------------------------------------
inline float ClipForward(float x, float cmin, float cmax) {
  if (std::isnan(x)) return x;
  const float a = x < cmax ? x : cmax;
  return a > cmin ? a : cmin;
}

inline ElemGrad ClipBackward(float dy, float x, float cmin, float cmax) {
  ElemGrad r;
  r.dx = (x > cmin && x < cmax) ? dy : 0.0f;
  r.t0 = (x > cmin) ? 0.0f : dy;  // dy * (1 - min_mask)
  r.t1 = (x < cmax) ? 0.0f : dy;  // dy * (1 - max_mask)
  return r;
}

// ---- the documented reduction order (learned_range.h) -----------------------------------------
// Sum of a slot's terms in their order: chunks of 65536, 16 lanes by position in the chunk,
// lanes folded pairwise (8, 4, 2, 1), chunk results added left to right starting from +0.
inline float OrderedSum(const std::vector<float>& terms) {
  constexpr size_t kChunk = 65536;
  float total = 0.0f;
  for (size_t begin = 0; begin < terms.size(); begin += kChunk) {
    const size_t end = std::min(terms.size(), begin + kChunk);
    float lane[16] = {};
    for (size_t i = begin; i < end; ++i) lane[(i - begin) % 16] += terms[i];
    for (int width = 8; width >= 1; width /= 2) {
      for (int i = 0; i < width; ++i) lane[i] += lane[i + width];
    }
    total += lane[0];
  }
  return total;
}

}  // namespace qkit::ref

#endif  // QKIT_TESTS_REFERENCE_LEARNED_RANGE_REF_H_
