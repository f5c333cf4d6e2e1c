// Kernels of the fake-quantization family, the reductions and the parameter choice (schemas in
// register_ops.cc): backend kernels under CompositeExplicitAutograd (a tensor on any device
// reaches the CPU checks and gets a clear error) and Autograd kernels for fake_quantize /
// fake_quantize_ (straight-through or clipped straight-through, in C++). No formula here: every
// number comes from qkit::FakeQuantize / Quantize / Dequantize / MinMax / AbsMax /
// ChooseQParams.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <limits>
#include <string>
#include <tuple>

#include "errors.h"
#include "op_args.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "tensor_view.h"

namespace qkit::torch_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Parameters converted for the core: float32 contiguous scale / zero point with one value per
// slot of the spec's layout on x.
struct Params {
  at::Tensor scale, zero_point;
  QParamsView View() const {
    QParamsView v;
    v.scale = scale.data_ptr<float>();
    v.zero_point = zero_point.defined() ? zero_point.data_ptr<float>() : nullptr;
    v.count = scale.numel();
    return v;
  }
};

Params PrepareParams(const TensorView& x, const QuantSpec& spec, const at::Tensor& scale,
                     const c10::optional<at::Tensor>& zero_point, const char* op) {
  const int64_t count = Translate([&] { return NumParams(x, spec.layout, op); });
  Params p;
  p.scale = ParamAsFloat(scale, count, op, "scale");
  if (zero_point.has_value() && zero_point->defined()) {
    p.zero_point = ParamAsFloat(*zero_point, count, op, "zero_point");
  }
  return p;
}

// ---- fake quantization -------------------------------------------------------------------------

// out (x's dtype) and, when want_mask, the packed mask.
std::tuple<at::Tensor, at::Tensor> FakeQuantImpl(const at::Tensor& x, const at::Tensor& scale,
                                                 const c10::optional<at::Tensor>& zero_point,
                                                 const SpecArgs& a, bool want_mask,
                                                 const char* op) {
  const QuantSpec spec = a.Spec(op);
  at::Tensor xc = AsComputeDtype(x, op, "x");
  const TensorView xv = ToView(xc, Kind::kFloating, op, "x");
  const Params p = PrepareParams(xv, spec, scale, zero_point, op);
  at::Tensor out = EmptyOutput(xc);
  at::Tensor mask =
      want_mask ? at::empty({MaskBytes(xc.numel())}, xc.options().dtype(at::kByte)) : at::Tensor();
  Translate([&] {
    FakeQuantize(xv, spec, p.View(), ToView(out, Kind::kFloating, op, "out"),
                 want_mask ? mask.data_ptr<uint8_t>() : nullptr, MakeContext());
  });
  return {out.to(x.scalar_type()), mask};
}

// In place: x itself is the output (float64: computed into float32 and copied back).
at::Tensor FakeQuantInplaceImpl(const at::Tensor& x, const at::Tensor& scale,
                                const c10::optional<at::Tensor>& zero_point, const SpecArgs& a,
                                bool want_mask, const char* op) {
  if (x.scalar_type() == at::kDouble) {
    auto [out, mask] = FakeQuantImpl(x, scale, zero_point, a, want_mask, op);
    const_cast<at::Tensor&>(x).copy_(out);
    return mask;
  }
  const QuantSpec spec = a.Spec(op);
  const TensorView xv = ToView(x, Kind::kFloating, op, "x");
  const Params p = PrepareParams(xv, spec, scale, zero_point, op);
  at::Tensor mask =
      want_mask ? at::empty({MaskBytes(x.numel())}, x.options().dtype(at::kByte)) : at::Tensor();
  Translate([&] {
    FakeQuantize(xv, spec, p.View(), xv, want_mask ? mask.data_ptr<uint8_t>() : nullptr,
                 MakeContext());
  });
  return mask;
}

at::Tensor MaskedBackwardImpl(const at::Tensor& dy, const at::Tensor& mask, const char* op) {
  at::Tensor d = AsComputeDtype(dy, op, "dy");
  CheckCpuDense(mask, op, "mask");
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kByte, op, ": `mask` has dtype ", mask.scalar_type(),
                    "; expected uint8 (the packed mask of the forward)");
  TORCH_CHECK_VALUE(mask.numel() == MaskBytes(d.numel()), op, ": `mask` has ", mask.numel(),
                    " bytes; ", d.numel(), " elements need ", MaskBytes(d.numel()));
  const at::Tensor m = mask.contiguous();
  at::Tensor dx = EmptyOutput(d);
  Translate([&] {
    FakeQuantizeBackwardMasked(ToView(d, Kind::kFloating, op, "dy"), m.data_ptr<uint8_t>(),
                               ToView(dx, Kind::kFloating, op, "dx"), MakeContext());
  });
  return dx.to(dy.scalar_type());
}

at::Tensor ClippedBackwardImpl(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& scale,
                               const c10::optional<at::Tensor>& zero_point, const SpecArgs& a,
                               const char* op) {
  const QuantSpec spec = a.Spec(op);
  at::Tensor d = AsComputeDtype(dy, op, "dy");
  at::Tensor xc = AsComputeDtype(x, op, "x");
  const TensorView xv = ToView(xc, Kind::kFloating, op, "x");
  const Params p = PrepareParams(xv, spec, scale, zero_point, op);
  at::Tensor dx = EmptyOutput(d);
  Translate([&] {
    FakeQuantizeBackwardClipped(ToView(d, Kind::kFloating, op, "dy"), xv, spec, p.View(),
                                ToView(dx, Kind::kFloating, op, "dx"), MakeContext());
  });
  return dx.to(dy.scalar_type());
}

enum class Ste { kClipped, kClippedRecompute, kIdentity };

Ste ParseSte(c10::string_view v, const char* op) {
  return Parse<Ste>(v, {"clipped", "clipped_recompute", "identity"},
                    {Ste::kClipped, Ste::kClippedRecompute, Ste::kIdentity}, op, "ste");
}

// Backend kernels.
at::Tensor FakeQuantizeOp(const at::Tensor& x, const at::Tensor& scale,
                          const c10::optional<at::Tensor>& zero_point, QKIT_SPEC_PARAMS,
                          c10::string_view ste) {
  ParseSte(ste, "qkit.fake_quantize");
  return std::get<0>(
      FakeQuantImpl(x, scale, zero_point, QKIT_SPEC_ARGS, false, "qkit.fake_quantize"));
}

at::Tensor& FakeQuantizeInplaceOp(at::Tensor& x, const at::Tensor& scale,
                                  const c10::optional<at::Tensor>& zero_point, QKIT_SPEC_PARAMS,
                                  c10::string_view ste) {
  ParseSte(ste, "qkit.fake_quantize_");
  FakeQuantInplaceImpl(x, scale, zero_point, QKIT_SPEC_ARGS, false, "qkit.fake_quantize_");
  return x;
}

std::tuple<at::Tensor, at::Tensor> FakeQuantizeWithMaskOp(
    const at::Tensor& x, const at::Tensor& scale, const c10::optional<at::Tensor>& zero_point,
    QKIT_SPEC_PARAMS) {
  return FakeQuantImpl(x, scale, zero_point, QKIT_SPEC_ARGS, true, "qkit.fake_quantize_with_mask");
}

at::Tensor FakeQuantizeBackwardOp(const at::Tensor& dy, const at::Tensor& mask) {
  return MaskedBackwardImpl(dy, mask, "qkit.fake_quantize_backward");
}

at::Tensor FakeQuantizeBackwardClippedOp(const at::Tensor& dy, const at::Tensor& x,
                                         const at::Tensor& scale,
                                         const c10::optional<at::Tensor>& zero_point,
                                         QKIT_SPEC_PARAMS) {
  return ClippedBackwardImpl(dy, x, scale, zero_point, QKIT_SPEC_ARGS,
                             "qkit.fake_quantize_backward_clipped");
}

// Autograd.
class FakeQuantizeFunction : public torch::autograd::Function<FakeQuantizeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const c10::optional<at::Tensor>& zero_point, const SpecArgs& a,
                            Ste ste) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const char* op = "qkit.fake_quantize";
    ctx->saved_data["ste"] = static_cast<int64_t>(ste);
    if (ste == Ste::kClipped) {
      auto [out, mask] = FakeQuantImpl(x, scale, zero_point, a, true, op);
      ctx->saved_data["mask"] = mask;
      return out;
    }
    if (ste == Ste::kClippedRecompute) {
      ctx->save_for_backward({x, scale, zero_point.value_or(at::Tensor())});
      a.Save(ctx);
    }
    return std::get<0>(FakeQuantImpl(x, scale, zero_point, a, false, op));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto ste = static_cast<Ste>(ctx->saved_data["ste"].toInt());
    at::Tensor dx;
    if (ste == Ste::kClipped) {
      dx = MaskedBackwardImpl(grads[0], ctx->saved_data["mask"].toTensor(),
                              "qkit.fake_quantize (backward)");
    } else if (ste == Ste::kClippedRecompute) {
      const auto s = ctx->get_saved_variables();
      const c10::optional<at::Tensor> zp =
          s[2].defined() ? c10::optional<at::Tensor>(s[2]) : c10::nullopt;
      dx = ClippedBackwardImpl(grads[0], s[0], s[1], zp, SpecArgs::Load(ctx),
                               "qkit.fake_quantize (backward)");
    } else {
      dx = grads[0];
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class FakeQuantizeInplaceFunction : public torch::autograd::Function<FakeQuantizeInplaceFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, const at::Tensor& scale,
                            const c10::optional<at::Tensor>& zero_point, const SpecArgs& a,
                            Ste ste) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const char* op = "qkit.fake_quantize_";
    TORCH_CHECK_VALUE(ste != Ste::kClippedRecompute, op,
                      ": `ste`='clipped_recompute' cannot be used in place (the input is "
                      "overwritten); use 'clipped' (packed mask) or 'identity'");
    ctx->saved_data["ste"] = static_cast<int64_t>(ste);
    at::Tensor mask = FakeQuantInplaceImpl(x, scale, zero_point, a, ste == Ste::kClipped, op);
    if (ste == Ste::kClipped) ctx->saved_data["mask"] = mask;
    ctx->mark_dirty({x});
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto ste = static_cast<Ste>(ctx->saved_data["ste"].toInt());
    at::Tensor dx = ste == Ste::kClipped
                        ? MaskedBackwardImpl(grads[0], ctx->saved_data["mask"].toTensor(),
                                             "qkit.fake_quantize_ (backward)")
                        : grads[0];
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor FakeQuantizeAutograd(const at::Tensor& x, const at::Tensor& scale,
                                const c10::optional<at::Tensor>& zero_point, QKIT_SPEC_PARAMS,
                                c10::string_view ste) {
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {  // no graph: no mask to keep
    at::AutoDispatchBelowADInplaceOrView guard;
    ParseSte(ste, "qkit.fake_quantize");
    return std::get<0>(
        FakeQuantImpl(x, scale, zero_point, QKIT_SPEC_ARGS, false, "qkit.fake_quantize"));
  }
  return FakeQuantizeFunction::apply(x, scale, zero_point, QKIT_SPEC_ARGS,
                                     ParseSte(ste, "qkit.fake_quantize"));
}

at::Tensor& FakeQuantizeInplaceAutograd(at::Tensor& x, const at::Tensor& scale,
                                        const c10::optional<at::Tensor>& zero_point,
                                        QKIT_SPEC_PARAMS, c10::string_view ste) {
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ParseSte(ste, "qkit.fake_quantize_");
    FakeQuantInplaceImpl(x, scale, zero_point, QKIT_SPEC_ARGS, false, "qkit.fake_quantize_");
    x.unsafeGetTensorImpl()->bump_version();
    return x;
  }
  FakeQuantizeInplaceFunction::apply(x, scale, zero_point, QKIT_SPEC_ARGS,
                                     ParseSte(ste, "qkit.fake_quantize_"));
  return x;
}

// ---- quantize / dequantize ---------------------------------------------------------------------

at::ScalarType SmallestIntType(const QuantSpec& spec) {
  const int64_t lo = spec.QuantMin(), hi = spec.QuantMax();
  if (lo >= -128 && hi <= 127) return at::kChar;
  if (lo >= 0 && hi <= 255) return at::kByte;
  if (lo >= -32768 && hi <= 32767) return at::kShort;
  return at::kInt;
}

at::Tensor QuantizeOp(const at::Tensor& x, const at::Tensor& scale,
                      const c10::optional<at::Tensor>& zero_point, QKIT_SPEC_PARAMS,
                      c10::optional<at::ScalarType> dtype) {
  const char* op = "qkit.quantize";
  const QuantSpec spec = QKIT_SPEC_ARGS.Spec(op);
  Translate([&] { spec.Validate(op); });
  at::Tensor xc = AsComputeDtype(x, op, "x");
  const TensorView xv = ToView(xc, Kind::kFloating, op, "x");
  const Params p = PrepareParams(xv, spec, scale, zero_point, op);
  const at::ScalarType out_type = dtype.has_value() ? *dtype : SmallestIntType(spec);
  at::Tensor q = at::empty(xc.sizes(), xc.options().dtype(out_type));
  // dtype float32: the codes as floats (NaN kept under nan_mode='propagate').
  const Kind kind = out_type == at::kFloat ? Kind::kFloating : Kind::kInteger;
  Translate([&] { Quantize(xv, spec, p.View(), ToView(q, kind, op, "q (dtype)"), MakeContext()); });
  return q;
}

at::Tensor DequantizeOp(const at::Tensor& q, const at::Tensor& scale,
                        const c10::optional<at::Tensor>& zero_point, QKIT_SPEC_PARAMS,
                        c10::optional<at::ScalarType> dtype) {
  const char* op = "qkit.dequantize";
  const QuantSpec spec = QKIT_SPEC_ARGS.Spec(op);
  const TensorView qv = ToView(q, Kind::kInteger, op, "q");
  const Params p = PrepareParams(qv, spec, scale, zero_point, op);
  const at::ScalarType out_type = dtype.has_value() ? *dtype : at::kFloat;
  TORCH_CHECK_VALUE(at::isFloatingType(out_type), op, ": `dtype`=", out_type,
                    " is not a floating type");
  const at::ScalarType compute = out_type == at::kDouble ? at::kFloat : out_type;
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(compute));
  Translate([&] {
    Dequantize(qv, spec, p.View(), ToView(out, Kind::kFloating, op, "out (dtype)"), MakeContext());
  });
  return out.to(out_type);
}

// ---- reductions ---------------------------------------------------------------------------------

ParamLayout ReductionLayout(c10::optional<int64_t> axis, int64_t group_size, const char* op) {
  if (!axis.has_value()) {
    TORCH_CHECK_VALUE(group_size == 0, op, ": `group_size`=", group_size, " needs an `axis`");
    return ParamLayout::PerTensor();
  }
  return group_size == 0 ? ParamLayout::PerChannel(*axis)
                         : ParamLayout::PerGroup(*axis, group_size);
}

// A fresh accumulator filled with `init`, or a float32 copy of the given one.
at::Tensor Accumulator(const c10::optional<at::Tensor>& acc, int64_t count, float init,
                       const char* op, const char* name) {
  if (acc.has_value() && acc->defined()) return ParamAsFloat(*acc, count, op, name).clone();
  return at::full({count}, init, at::TensorOptions().dtype(at::kFloat));
}

std::tuple<at::Tensor, at::Tensor, int64_t> MinMaxOp(const at::Tensor& x,
                                                     c10::optional<int64_t> axis,
                                                     int64_t group_size, c10::string_view nonfinite,
                                                     const c10::optional<at::Tensor>& min_acc,
                                                     const c10::optional<at::Tensor>& max_acc) {
  const char* op = "qkit.minmax";
  const ParamLayout layout = ReductionLayout(axis, group_size, op);
  const NonFinite policy = ParseNonFinite(nonfinite, op);
  at::Tensor xc = AsComputeDtype(x, op, "x");
  const TensorView xv = ToView(xc, Kind::kFloating, op, "x");
  const int64_t count = Translate([&] { return NumParams(xv, layout, op); });
  const float inf = std::numeric_limits<float>::infinity();
  at::Tensor mn = Accumulator(min_acc, count, inf, op, "min_acc");
  at::Tensor mx = Accumulator(max_acc, count, -inf, op, "max_acc");
  int64_t skipped = 0;
  Translate([&] {
    MinMax(xv, layout, policy, mn.data_ptr<float>(), mx.data_ptr<float>(), &skipped, MakeContext());
  });
  return {mn, mx, skipped};
}

std::tuple<at::Tensor, int64_t> AbsMaxOp(const at::Tensor& x, c10::optional<int64_t> axis,
                                         int64_t group_size, c10::string_view nonfinite,
                                         const c10::optional<at::Tensor>& amax_acc) {
  const char* op = "qkit.absmax";
  const ParamLayout layout = ReductionLayout(axis, group_size, op);
  const NonFinite policy = ParseNonFinite(nonfinite, op);
  at::Tensor xc = AsComputeDtype(x, op, "x");
  const TensorView xv = ToView(xc, Kind::kFloating, op, "x");
  const int64_t count = Translate([&] { return NumParams(xv, layout, op); });
  at::Tensor amax = Accumulator(amax_acc, count, 0.0f, op, "amax_acc");
  int64_t skipped = 0;
  Translate([&] { AbsMax(xv, layout, policy, amax.data_ptr<float>(), &skipped, MakeContext()); });
  return {amax, skipped};
}

// ---- parameter choice
// ----------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> ChooseQParamsOp(
    const at::Tensor& min, const at::Tensor& max, QKIT_SPEC_PARAMS, bool symmetric,
    c10::string_view divisor, bool widen_to_zero, c10::string_view degenerate, double eps,
    c10::string_view zero_point_rounding, bool integral_zero_point, bool clamp_zero_point,
    c10::string_view restriction, c10::string_view symmetric_zero_point,
    bool reciprocal_multiplier) {
  const char* op = "qkit.choose_qparams";
  QuantSpec spec = QKIT_SPEC_ARGS.Spec(op);
  spec.symmetric = symmetric;
  const QParamsRule rule =
      ParseRule(divisor, widen_to_zero, degenerate, eps, zero_point_rounding, integral_zero_point,
                clamp_zero_point, restriction, symmetric_zero_point, reciprocal_multiplier, op);
  CheckCpuDense(min, op, "min");
  CheckCpuDense(max, op, "max");
  TORCH_CHECK_VALUE(min.sizes() == max.sizes(), op, ": `min` has shape ", min.sizes(),
                    " but `max` has shape ", max.sizes());
  const at::Tensor mn = ParamAsFloat(min, min.numel(), op, "min");
  const at::Tensor mx = ParamAsFloat(max, max.numel(), op, "max");
  at::Tensor scale = at::empty(min.sizes(), at::TensorOptions().dtype(at::kFloat));
  at::Tensor zp = at::empty(min.sizes(), at::TensorOptions().dtype(at::kFloat));
  Translate([&] {
    ChooseQParams(mn.data_ptr<float>(), mx.data_ptr<float>(), mn.numel(), spec, rule,
                  scale.data_ptr<float>(), zp.data_ptr<float>(), op);
  });
  return {scale, zp};
}

}  // namespace

TORCH_LIBRARY_IMPL(qkit, CompositeExplicitAutograd, m) {
  m.impl("fake_quantize", FakeQuantizeOp);
  m.impl("fake_quantize_", FakeQuantizeInplaceOp);
  m.impl("fake_quantize_with_mask", FakeQuantizeWithMaskOp);
  m.impl("fake_quantize_backward", FakeQuantizeBackwardOp);
  m.impl("fake_quantize_backward_clipped", FakeQuantizeBackwardClippedOp);
  m.impl("quantize", QuantizeOp);
  m.impl("dequantize", DequantizeOp);
  m.impl("minmax", MinMaxOp);
  m.impl("absmax", AbsMaxOp);
  m.impl("choose_qparams", ChooseQParamsOp);
}

TORCH_LIBRARY_IMPL(qkit, Autograd, m) {
  m.impl("fake_quantize", FakeQuantizeAutograd);
  m.impl("fake_quantize_", FakeQuantizeInplaceAutograd);
}

// The ops without an autograd kernel: torch 1.13 registers an autograd fallthrough for CPU, CUDA
// and other backends but not for Meta, so without these a meta tensor got NotImplementedError
// ("... from the 'AutogradMeta' backend") instead of the device check's ValueError
// (tests/python/test_bad_input_matrix.py, "wrong device").
TORCH_LIBRARY_IMPL(qkit, AutogradMeta, m) {
  for (const char* op : {"fake_quantize_with_mask", "fake_quantize_backward",
                         "fake_quantize_backward_clipped", "quantize", "dequantize", "minmax",
                         "absmax", "choose_qparams"}) {
    m.impl(op, torch::CppFunction::makeFallthrough());
  }
}

}  // namespace qkit::torch_ext
