// Fake quantization with a learned range: LSQ (MegEngine's variant and PyTorch's learnable
// LSQ+ kernels), TQT (MegEngine, log2 threshold), PACT (Distiller) and NVIDIA's learned-amax
// Clip. Each op has a forward and a backward that returns the input gradient and the range
// parameters' gradients, summed deterministically (see "Reduction order" below).
// Formulas: ../shared/SPEC.md §3.4 (LSQ, TQT), §4.3 (Clip), §5.3 (PACT), §7.5 (learnable),
// §9.7 (gradients).
#ifndef QKIT_OPS_LEARNED_RANGE_H_
#define QKIT_OPS_LEARNED_RANGE_H_

#include <cstdint>

#include "qkit/context.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

// ---- Common contract ----------------------------------------------------------------------
// * Every op works on a strided view `x` of float32 / float16 / bfloat16 (computed in float32,
//   outputs rounded back to their own dtype, nearest-even). `out` / `dx` have x's shape, any
//   strides and a floating dtype; `out` may alias `x` and `dx` may alias `dy` exactly.
// * Parameters are float32 arrays with one entry per slot of `layout`: 1 per tensor, or
//   shape[axis] per channel (kPerGroup is refused with InvalidArgument). `count` must match.
// * Gradient outputs (`dstep`, `dzero_point`, ...) are float32 arrays of `count` entries and may
//   be null, in which case that sum is not computed. They are overwritten, not accumulated.
// * "dx = cond ? dy : 0" writes +0 where cond is false, whatever dy is (NaN / Inf included).
// * Empty x is valid: outputs get nothing, gradient sums are +0.
// * Deterministic: outputs are bit-identical for any ctx.num_threads and SIMD target.
//
// ---- Reduction order (the contract that makes parameter gradients reproducible) ------------
// The gradient of a slot's parameter is a float32 sum of per-element terms t_i, taken over the
// slot's elements in row-major order of x (for a channel: x with `axis` moved to the front,
// i.e. the channel's elements in their natural order). That sequence is cut into chunks of
// kReductionChunk elements. Within a chunk, element k (k = position inside the chunk) is added
// to lane k % kReductionLanes, each lane summing sequentially from +0. The 16 lanes are then
// folded pairwise: l[i] += l[i + 8] (i < 8), l[i] += l[i + 4] (i < 4), l[i] += l[i + 2] (i < 2),
// l[0] + l[1]. The slot's total is ((+0 + p_0) + p_1) + ... over the chunks' results p_j in
// order. (Error bound: |sum - exact| <= (kReductionChunk / 16 + 4 + chunks) * 2^-24 * sum |t_i|
// to first order.)
inline constexpr int64_t kReductionChunk = int64_t{1} << 16;
inline constexpr int kReductionLanes = 16;

// ---- LSQ -----------------------------------------------------------------------------------
enum class LsqVariant : uint8_t {
  // MegEngine lsq_forward (SPEC §3.4): v = f32(x / s) + z (z added BEFORE rounding);
  //   out = (RHAZ(clamp(v, qmin, qmax)) - z) * s; NaN propagates.
  //   backward: below = v < qmin, above = v > qmax (the UNROUNDED v), mid = neither;
  //   dx = mid ? dy : 0;  t_step = f32(f32(c * g) * dy) with c = below ? qmin : above ? qmax :
  //   f32(RHAZ(v) - v). The zero point gets no gradient (dzero_point is left untouched).
  kMegEngine,
  // PyTorch _fake_quantize_learnable_per_{tensor,channel}_affine (LSQ+, SPEC §7.5):
  //   inv = f32(1 / s); forward zero point zf = clamp(RNE(z), qmin, qmax);
  //   out = (clamp(RNE(x * inv) + zf, qmin, qmax) - zf) * s, NaN -> (qmin - zf) * s.
  //   backward zero point zb: per tensor int(clamp(f32(z + 0.5f), qmin, qmax)) (truncation, so
  //   not the forward's RNE: z = 2.5 gives zf = 2 but zb = 3); per channel zb = zf.
  //   xq = RNE(f32(zb + f32(x * inv))) (the SUM is rounded); in = qmin <= xq <= qmax;
  //   dx = in ? dy : 0;
  //   in range:  t_step = f32(f32(f32(dy * f32(xfq - x)) * inv) * g), xfq = f32((xq - zb) * s),
  //              t_zp = 0;
  //   below (xq < qmin, or NaN):  t_step = f32(f32(dy * f32(qmin - zb)) * g);
  //   above (xq > qmax):          t_step = f32(f32(dy * f32(qmax - zb)) * g);
  //   out of range:               t_zp = f32(f32(-dy * s) * g).
  kPyTorch,
};

// How the step parameter becomes the step s used by the formulas.
enum class StepTransform : uint8_t {
  kIdentity,    // s = step; REQUIRES step > 0
  kAbsPlusEps,  // s = f32(|step| + step_eps) (MegEngine's LSQ module, eps 1e-5); the step's
                // gradient is the s-gradient times sgn(step) (0 when step == 0), as torch.abs
};

struct LsqOptions {
  LsqVariant variant = LsqVariant::kPyTorch;
  int64_t quant_min = -128;  // quant_min < quant_max, both within +-2^24
  int64_t quant_max = 127;
  ParamLayout layout;       // per tensor or per channel
  float grad_scale = 1.0f;  // g: MegEngine's grad_scale, PyTorch's grad_factor (finite)
  StepTransform step_transform = StepTransform::kIdentity;
  float step_eps = 0.0f;  // kAbsPlusEps only: finite, >= 0
  // kPyTorch backward only: evaluate zb + x * inv and (xq - zb) * s - x (= xfq - x) with one
  // rounding each (fused multiply-add), as torch's CPU kernels do when compiled with FMA
  // contraction: its AVX2 / AVX-512 kernel builds, e.g. Debian's 1.13 on such CPUs (its
  // DEFAULT-capability build rounds twice, = false). Same result on every SIMD target.
  bool fused = false;
};

// The LSQ paper's gradient scale g = 1 / sqrt(numel * quant_max), as PyTorch's
// _LearnableFakeQuantize(use_grad_scaling=True) computes it (double, rounded to float once).
// REQUIRES numel >= 1 and quant_max >= 1 (InvalidArgument otherwise).
float LsqGradScale(int64_t numel, int64_t quant_max);

// out = LSQ forward of x (variant formulas above). `step` and `zero_point` have `count`
// entries; zero_point may be null (0). Cost: one read of x, one write of out.
void LsqForward(const TensorView& x, const float* step, const float* zero_point, int64_t count,
                const LsqOptions& options, const TensorView& out, const Context& ctx);

// Backward of LsqForward for upstream gradient dy (x's shape, floating). Writes dx (nullable
// data is not allowed: pass a view), dstep (the step parameter's gradient, through
// step_transform) and, for kPyTorch, dzero_point. Cost: one read of dy and x, one write of dx.
void LsqBackward(const TensorView& dy, const TensorView& x, const float* step,
                 const float* zero_point, int64_t count, const LsqOptions& options,
                 const TensorView& dx, float* dstep, float* dzero_point, const Context& ctx);

// ---- TQT (MegEngine, SPEC §3.4) ------------------------------------------------------------
// The parameter is log2 t (not rounded: t need not be a power of two);
// t = f32(pow(2.0, double(log2_t))), REQUIRES log2_t finite and t a positive finite float.
//   forward: r = clamp(RHAZ(f32(x / t)), qmin, qmax) (NaN propagates); out = f32(r * t).
//   backward: v = f32(x / t); clip = v < qmin - 0.5 || v > qmax + 0.5; dx = clip ? 0 : dy;
//   w = clip ? f32(f32(dy * r) * t) : f32(f32(dy * f32(r - v)) * t);
//   t_log2 = f32(double(w) * ln 2) (the last multiply in double, as MegEngine's kernel).
// (MegEngine multiplies by the masks instead of selecting, so its dx and gradient for ±Inf
// inputs are NaN where qkit's are 0 / finite; for finite inputs the results are identical.)
struct TqtOptions {
  int64_t quant_min = -127;  // MegEngine qint8_narrow
  int64_t quant_max = 127;
  ParamLayout layout;
};

void TqtForward(const TensorView& x, const float* log2_t, int64_t count, const TqtOptions& options,
                const TensorView& out, const Context& ctx);
void TqtBackward(const TensorView& dy, const TensorView& x, const float* log2_t, int64_t count,
                 const TqtOptions& options, const TensorView& dx, float* dlog2_t,
                 const Context& ctx);

// ---- PACT (Distiller LearnedClippedLinearQuantization, SPEC §5.3) --------------------------
// alpha (the clip value) is any finite float. Multiplier m = f32(f32(1 / d) * n) with
// n = 2^bits - 1 and d = max(alpha, 0), replaced by n when 0 (Distiller's
// asymmetric_linear_quantization_params; torch evaluates n / d as reciprocal(d) * n).
//   forward: y = x < 0 ? 0 : x (relu; NaN passes); y = y < alpha ? y : alpha (NaN -> alpha);
//            q = RNE(f32(m * y)); out = f32(f32(q + 0) / m). No clamp of q (none is needed).
//   backward: dx = (y > 0 && y < alpha) ? dy : 0; t_alpha = !(y < alpha) ? dy : 0.
struct PactOptions {
  int bits = 8;  // 2..16
  ParamLayout layout;
};

void PactForward(const TensorView& x, const float* alpha, int64_t count, const PactOptions& options,
                 const TensorView& out, const Context& ctx);
void PactBackward(const TensorView& dy, const TensorView& x, const float* alpha, int64_t count,
                  const PactOptions& options, const TensorView& dx, float* dalpha,
                  const Context& ctx);

// ---- NVIDIA learned-amax Clip (pytorch-quantization nn.Clip / ClipFunction, SPEC §4.3) ------
// cmin, cmax finite (cmin > cmax is allowed: the output is then cmin everywhere, as torch).
//   forward: a = x < cmax ? x : cmax; out = a > cmin ? a : cmin; NaN propagates. (A bound equal
//            to x is returned, so ±0 ties give the bound, as torch's vectorized min/max.)
//   backward (strict, TensorFlow clip_by_value / PACT style):
//     dx = (x > cmin && x < cmax) ? dy : 0;
//     t_cmin = !(x > cmin) ? dy : 0;  t_cmax = !(x < cmax) ? dy : 0  (NaN x counts for both).
struct ClipOptions {
  ParamLayout layout;
};

void LearnedClipForward(const TensorView& x, const float* cmin, const float* cmax, int64_t count,
                        const ClipOptions& options, const TensorView& out, const Context& ctx);
void LearnedClipBackward(const TensorView& dy, const TensorView& x, const float* cmin,
                         const float* cmax, int64_t count, const ClipOptions& options,
                         const TensorView& dx, float* dcmin, float* dcmax, const Context& ctx);

}  // namespace qkit

#endif  // QKIT_OPS_LEARNED_RANGE_H_
