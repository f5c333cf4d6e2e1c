// Fake quantization (quantize then dequantize in float), quantization to integer storage,
// dequantization, and the straight-through / clipped backward with a bit-packed mask.
#ifndef QKIT_OPS_FAKE_QUANT_H_
#define QKIT_OPS_FAKE_QUANT_H_

#include <cstdint>

#include "qkit/context.h"
#include "qkit/quant_spec.h"
#include "qkit/tensor.h"

namespace qkit {

// Parameters for every slot of spec.layout (count == NumParams(x, spec.layout)).
// `zero_point` may be null, meaning 0 everywhere.
struct QParamsView {
  const float* scale = nullptr;
  const float* zero_point = nullptr;
  int64_t count = 0;
};

// Bytes needed for the bit-packed mask of `numel` elements: ceil(numel / 8). Bit (i % 8) of
// byte (i / 8) is element i in row-major (logical) order; 1 = inside the range (the gradient
// passes). Unused high bits of the last byte are written as 0.
inline int64_t MaskBytes(int64_t numel) { return (numel + 7) / 8; }

// out = fake-quantized x, per element (docs/numerics.md §fake-quant):
//   v = x / s | x * f32(1/s) | x * m                        (spec.scale_mode)
//   q = round(v) + z | round(f32(v + z))                    (spec.zero_point_mode, spec.rounding)
//   out = (clamp(q, qmin, qmax) - z) * s   (or / m)
// NaN follows spec.nan_mode; ±Inf saturate to qmin / qmax. `out` has x's shape, any strides,
// a floating dtype (it may alias x exactly for in-place use). `mask` (nullable, MaskBytes(numel)
// bytes) receives 1 where qmin <= q <= qmax (q before clamping; NaN gives 0).
// Empty x is valid and writes nothing. Deterministic for any thread count and SIMD target.
// Cost: one read of x and one write of out (+ numel/8 bytes of mask).
void FakeQuantize(const TensorView& x, const QuantSpec& spec, const QParamsView& qparams,
                  const TensorView& out, uint8_t* mask, const Context& ctx);

// q_out = clamp(q, qmin, qmax) as integers (int8 / uint8 / int16 / int32 view whose range
// holds [qmin, qmax]) or as float32 codes. NaN: kToQuantMin stores qmin; kPropagate stores NaN
// in a float32 q_out and throws InvalidArgument for an integer one; kError throws (the contents
// of q_out are then unspecified). A float32 q_out may be x itself (in place).
void Quantize(const TensorView& x, const QuantSpec& spec, const QParamsView& qparams,
              const TensorView& q_out, const Context& ctx);

// out = (q - z) * s (or (q - z) / m) from integer codes q of any integer dtype.
void Dequantize(const TensorView& q, const QuantSpec& spec, const QParamsView& qparams,
                const TensorView& out, const Context& ctx);

// Clipped straight-through backward from a saved mask: dx = mask ? dy : +0.
// (A NaN in dy is not propagated where the mask is 0.) dx may alias dy.
void FakeQuantizeBackwardMasked(const TensorView& dy, const uint8_t* mask, const TensorView& dx,
                                const Context& ctx);

// Clipped straight-through backward recomputing the mask from x: dx = in_range(x) ? dy : +0,
// with in_range exactly as FakeQuantize's mask.
void FakeQuantizeBackwardClipped(const TensorView& dy, const TensorView& x, const QuantSpec& spec,
                                 const QParamsView& qparams, const TensorView& dx,
                                 const Context& ctx);

}  // namespace qkit

#endif  // QKIT_OPS_FAKE_QUANT_H_
