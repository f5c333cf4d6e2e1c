// Kernels of the learned-range ops (schemas in register_ops.cc): the backend kernels
// (CompositeExplicitAutograd, so a tensor on any device reaches the CPU checks and gets a clear
// error) and the Autograd kernels (torch::autograd::Function around the core's backward).
// No formula here: every number comes from qkit::Lsq* / Tqt* / Pact* / LearnedClip*.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "errors.h"
#include "qkit/ops/learned_range.h"
#include "tensor_view.h"

namespace qkit::torch_ext {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

ParamLayout LayoutFor(c10::optional<int64_t> axis) {
  return axis.has_value() ? ParamLayout::PerChannel(*axis) : ParamLayout::PerTensor();
}

LsqVariant ParseVariant(c10::string_view v, const char* op) {
  if (v == "pytorch") return LsqVariant::kPyTorch;
  if (v == "megengine") return LsqVariant::kMegEngine;
  TORCH_CHECK_VALUE(false, op, ": `variant`='", std::string(v),
                    "' is not one of 'pytorch', 'megengine'");
  return LsqVariant::kPyTorch;  // not reached
}

StepTransform ParseTransform(c10::string_view v, const char* op) {
  if (v == "identity") return StepTransform::kIdentity;
  if (v == "abs_plus_eps") return StepTransform::kAbsPlusEps;
  TORCH_CHECK_VALUE(false, op, ": `step_transform`='", std::string(v),
                    "' is not one of 'identity', 'abs_plus_eps'");
  return StepTransform::kIdentity;  // not reached
}

const float* DataOrNull(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// A parameter gradient in the parameter's own shape and dtype.
at::Tensor GradLike(const at::Tensor& grad_f32, const at::Tensor& param) {
  return grad_f32.reshape(param.sizes()).to(param.scalar_type());
}

// The converted operands shared by a forward and its backward.
struct Prepared {
  at::Tensor x;  // compute dtype (float64 converted to float32)
  int64_t slots = 0;
  at::Tensor p0, p1;  // float32 contiguous parameters (p1 may be undefined)
};

Prepared Prepare(const char* op, const at::Tensor& x, c10::optional<int64_t> axis,
                 const at::Tensor& p0, const char* p0_name, const at::Tensor* p1,
                 const char* p1_name) {
  Prepared p;
  p.x = AsComputeDtype(x, op, "x");
  p.slots = NumSlots(p.x, axis, 0, op);
  p.p0 = ParamAsFloat(p0, p.slots, op, p0_name);
  if (p1 != nullptr && p1->defined()) p.p1 = ParamAsFloat(*p1, p.slots, op, p1_name);
  return p;
}

// dy in the compute dtype, with x's shape.
at::Tensor PrepareDy(const char* op, const at::Tensor& dy, const at::Tensor& x) {
  at::Tensor d = AsComputeDtype(dy, op, "dy");
  TORCH_CHECK_VALUE(d.sizes() == x.sizes(), op, ": `dy` has shape ", d.sizes(),
                    " but `x` has shape ", x.sizes());
  return d;
}

// ---- LSQ --------------------------------------------------------------------------------------

struct LsqArgs {
  int64_t quant_min, quant_max;
  c10::string_view variant;
  double grad_scale;
  c10::optional<int64_t> axis;
  c10::string_view step_transform;
  double step_eps;
  bool fused;

  LsqOptions Options(const char* op) const {
    LsqOptions o;
    o.variant = ParseVariant(variant, op);
    o.quant_min = quant_min;
    o.quant_max = quant_max;
    o.layout = LayoutFor(axis);
    o.grad_scale = static_cast<float>(grad_scale);
    o.step_transform = ParseTransform(step_transform, op);
    o.step_eps = static_cast<float>(step_eps);
    o.fused = fused;
    return o;
  }
};

at::Tensor LsqForwardImpl(const at::Tensor& x, const at::Tensor& step,
                          const c10::optional<at::Tensor>& zero_point, const LsqArgs& a) {
  const char* op = "qkit.lsq";
  const at::Tensor zp = zero_point.value_or(at::Tensor());
  Prepared p = Prepare(op, x, a.axis, step, "step", &zp, "zero_point");
  at::Tensor out = EmptyOutput(p.x);
  const LsqOptions o = a.Options(op);
  Translate([&] {
    LsqForward(ToView(p.x, Kind::kFloating, op, "x"), DataOrNull(p.p0), DataOrNull(p.p1), p.slots,
               o, ToView(out, Kind::kFloating, op, "out"), MakeContext());
  });
  return out.to(x.scalar_type());
}

// Gradients; the sums whose flag is false are skipped and returned undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor> LsqBackwardImpl(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& step, const at::Tensor& zp,
    const LsqArgs& a, bool want_step, bool want_zp) {
  const char* op = "qkit.lsq_backward";
  Prepared p = Prepare(op, x, a.axis, step, "step", &zp, "zero_point");
  at::Tensor d = PrepareDy(op, dy, p.x);
  const LsqOptions o = a.Options(op);
  at::Tensor dx = EmptyOutput(p.x);
  at::Tensor dstep = want_step ? at::empty({p.slots}, at::kFloat) : at::Tensor();
  const bool zp_grad = want_zp && o.variant == LsqVariant::kPyTorch && zp.defined();
  at::Tensor dzp = zp_grad ? at::empty({p.slots}, at::kFloat) : at::Tensor();
  Translate([&] {
    LsqBackward(ToView(d, Kind::kFloating, op, "dy"), ToView(p.x, Kind::kFloating, op, "x"),
                DataOrNull(p.p0), DataOrNull(p.p1), p.slots, o,
                ToView(dx, Kind::kFloating, op, "dx"),
                want_step ? dstep.data_ptr<float>() : nullptr,
                zp_grad ? dzp.data_ptr<float>() : nullptr, MakeContext());
  });
  return {dx.to(x.scalar_type()), dstep.defined() ? GradLike(dstep, step) : dstep,
          dzp.defined() ? GradLike(dzp, zp) : dzp};
}

// Op: lsq_backward. The zero point's gradient is zeros for the MegEngine variant (no gradient)
// and when no zero point is given (an empty tensor).
std::tuple<at::Tensor, at::Tensor, at::Tensor> LsqBackwardOp(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& step,
    const c10::optional<at::Tensor>& zero_point, int64_t quant_min, int64_t quant_max,
    c10::string_view variant, double grad_scale, c10::optional<int64_t> axis,
    c10::string_view step_transform, double step_eps, bool fused) {
  const LsqArgs a{quant_min, quant_max, variant, grad_scale, axis, step_transform, step_eps, fused};
  const at::Tensor zp = zero_point.value_or(at::Tensor());
  auto [dx, dstep, dzp] = LsqBackwardImpl(dy, x, step, zp, a, true, true);
  if (!dzp.defined()) dzp = zp.defined() ? at::zeros_like(zp) : at::empty({0}, step.options());
  return {dx, dstep, dzp};
}

at::Tensor LsqOp(const at::Tensor& x, const at::Tensor& step,
                 const c10::optional<at::Tensor>& zero_point, int64_t quant_min, int64_t quant_max,
                 c10::string_view variant, double grad_scale, c10::optional<int64_t> axis,
                 c10::string_view step_transform, double step_eps, bool fused) {
  return LsqForwardImpl(
      x, step, zero_point,
      {quant_min, quant_max, variant, grad_scale, axis, step_transform, step_eps, fused});
}

// IValue round trip of the options (strings are owned by the saved IValues).
void SaveLsqArgs(AutogradContext* ctx, const LsqArgs& a) {
  ctx->saved_data["quant_min"] = a.quant_min;
  ctx->saved_data["quant_max"] = a.quant_max;
  ctx->saved_data["variant"] = std::string(a.variant);
  ctx->saved_data["grad_scale"] = a.grad_scale;
  ctx->saved_data["axis"] = a.axis.has_value() ? c10::IValue(*a.axis) : c10::IValue();
  ctx->saved_data["step_transform"] = std::string(a.step_transform);
  ctx->saved_data["step_eps"] = a.step_eps;
  ctx->saved_data["fused"] = a.fused;
}

c10::optional<int64_t> SavedAxis(AutogradContext* ctx) {
  const c10::IValue& v = ctx->saved_data["axis"];
  return v.isNone() ? c10::nullopt : c10::optional<int64_t>(v.toInt());
}

class LsqFunction : public torch::autograd::Function<LsqFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& step,
                            const c10::optional<at::Tensor>& zero_point, const LsqArgs& a) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor zp = zero_point.value_or(at::Tensor());
    ctx->save_for_backward({x, step, zp});
    SaveLsqArgs(ctx, a);
    ctx->saved_data["has_zp"] = zp.defined();
    ctx->saved_data["want_step"] = step.requires_grad();
    ctx->saved_data["want_zp"] = zp.defined() && zp.requires_grad();
    return LsqForwardImpl(x, step, zero_point, a);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::string variant = ctx->saved_data["variant"].toStringRef();
    const std::string transform = ctx->saved_data["step_transform"].toStringRef();
    const LsqArgs a{ctx->saved_data["quant_min"].toInt(),
                    ctx->saved_data["quant_max"].toInt(),
                    variant,
                    ctx->saved_data["grad_scale"].toDouble(),
                    SavedAxis(ctx),
                    transform,
                    ctx->saved_data["step_eps"].toDouble(),
                    ctx->saved_data["fused"].toBool()};
    auto [dx, dstep, dzp] =
        LsqBackwardImpl(grads[0], saved[0], saved[1], saved[2], a,
                        ctx->saved_data["want_step"].toBool(), ctx->saved_data["want_zp"].toBool());
    return {dx, dstep, dzp, at::Tensor()};
  }
};

at::Tensor LsqAutograd(const at::Tensor& x, const at::Tensor& step,
                       const c10::optional<at::Tensor>& zero_point, int64_t quant_min,
                       int64_t quant_max, c10::string_view variant, double grad_scale,
                       c10::optional<int64_t> axis, c10::string_view step_transform,
                       double step_eps, bool fused) {
  return LsqFunction::apply(
      x, step, zero_point,
      LsqArgs{quant_min, quant_max, variant, grad_scale, axis, step_transform, step_eps, fused});
}

// ---- TQT, PACT, Clip: one parameter tensor (two for Clip) and integer options ----------------

at::Tensor TqtForwardImpl(const at::Tensor& x, const at::Tensor& log2_t, int64_t qmin, int64_t qmax,
                          c10::optional<int64_t> axis) {
  const char* op = "qkit.tqt";
  Prepared p = Prepare(op, x, axis, log2_t, "log2_t", nullptr, nullptr);
  at::Tensor out = EmptyOutput(p.x);
  Translate([&] {
    TqtForward(ToView(p.x, Kind::kFloating, op, "x"), DataOrNull(p.p0), p.slots,
               TqtOptions{qmin, qmax, LayoutFor(axis)}, ToView(out, Kind::kFloating, op, "out"),
               MakeContext());
  });
  return out.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> TqtBackwardImpl(const at::Tensor& dy, const at::Tensor& x,
                                                   const at::Tensor& log2_t, int64_t qmin,
                                                   int64_t qmax, c10::optional<int64_t> axis,
                                                   bool want) {
  const char* op = "qkit.tqt_backward";
  Prepared p = Prepare(op, x, axis, log2_t, "log2_t", nullptr, nullptr);
  at::Tensor d = PrepareDy(op, dy, p.x);
  at::Tensor dx = EmptyOutput(p.x);
  at::Tensor g = want ? at::empty({p.slots}, at::kFloat) : at::Tensor();
  Translate([&] {
    TqtBackward(ToView(d, Kind::kFloating, op, "dy"), ToView(p.x, Kind::kFloating, op, "x"),
                DataOrNull(p.p0), p.slots, TqtOptions{qmin, qmax, LayoutFor(axis)},
                ToView(dx, Kind::kFloating, op, "dx"), want ? g.data_ptr<float>() : nullptr,
                MakeContext());
  });
  return {dx.to(x.scalar_type()), g.defined() ? GradLike(g, log2_t) : g};
}

at::Tensor PactForwardImpl(const at::Tensor& x, const at::Tensor& alpha, int64_t bits,
                           c10::optional<int64_t> axis) {
  const char* op = "qkit.pact";
  Prepared p = Prepare(op, x, axis, alpha, "alpha", nullptr, nullptr);
  at::Tensor out = EmptyOutput(p.x);
  Translate([&] {
    PactForward(ToView(p.x, Kind::kFloating, op, "x"), DataOrNull(p.p0), p.slots,
                PactOptions{static_cast<int>(bits), LayoutFor(axis)},
                ToView(out, Kind::kFloating, op, "out"), MakeContext());
  });
  return out.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> PactBackwardImpl(const at::Tensor& dy, const at::Tensor& x,
                                                    const at::Tensor& alpha, int64_t bits,
                                                    c10::optional<int64_t> axis, bool want) {
  const char* op = "qkit.pact_backward";
  Prepared p = Prepare(op, x, axis, alpha, "alpha", nullptr, nullptr);
  at::Tensor d = PrepareDy(op, dy, p.x);
  at::Tensor dx = EmptyOutput(p.x);
  at::Tensor g = want ? at::empty({p.slots}, at::kFloat) : at::Tensor();
  Translate([&] {
    PactBackward(ToView(d, Kind::kFloating, op, "dy"), ToView(p.x, Kind::kFloating, op, "x"),
                 DataOrNull(p.p0), p.slots, PactOptions{static_cast<int>(bits), LayoutFor(axis)},
                 ToView(dx, Kind::kFloating, op, "dx"), want ? g.data_ptr<float>() : nullptr,
                 MakeContext());
  });
  return {dx.to(x.scalar_type()), g.defined() ? GradLike(g, alpha) : g};
}

at::Tensor ClipForwardImpl(const at::Tensor& x, const at::Tensor& cmin, const at::Tensor& cmax,
                           c10::optional<int64_t> axis) {
  const char* op = "qkit.learned_clip";
  Prepared p = Prepare(op, x, axis, cmin, "cmin", &cmax, "cmax");
  at::Tensor out = EmptyOutput(p.x);
  Translate([&] {
    LearnedClipForward(ToView(p.x, Kind::kFloating, op, "x"), DataOrNull(p.p0), DataOrNull(p.p1),
                       p.slots, ClipOptions{LayoutFor(axis)},
                       ToView(out, Kind::kFloating, op, "out"), MakeContext());
  });
  return out.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ClipBackwardImpl(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& cmin, const at::Tensor& cmax,
    c10::optional<int64_t> axis, bool want_min, bool want_max) {
  const char* op = "qkit.learned_clip_backward";
  Prepared p = Prepare(op, x, axis, cmin, "cmin", &cmax, "cmax");
  at::Tensor d = PrepareDy(op, dy, p.x);
  at::Tensor dx = EmptyOutput(p.x);
  at::Tensor gmin = want_min ? at::empty({p.slots}, at::kFloat) : at::Tensor();
  at::Tensor gmax = want_max ? at::empty({p.slots}, at::kFloat) : at::Tensor();
  Translate([&] {
    LearnedClipBackward(ToView(d, Kind::kFloating, op, "dy"), ToView(p.x, Kind::kFloating, op, "x"),
                        DataOrNull(p.p0), DataOrNull(p.p1), p.slots, ClipOptions{LayoutFor(axis)},
                        ToView(dx, Kind::kFloating, op, "dx"),
                        want_min ? gmin.data_ptr<float>() : nullptr,
                        want_max ? gmax.data_ptr<float>() : nullptr, MakeContext());
  });
  return {dx.to(x.scalar_type()), gmin.defined() ? GradLike(gmin, cmin) : gmin,
          gmax.defined() ? GradLike(gmax, cmax) : gmax};
}

// Backend ops.
at::Tensor TqtOp(const at::Tensor& x, const at::Tensor& log2_t, int64_t qmin, int64_t qmax,
                 c10::optional<int64_t> axis) {
  return TqtForwardImpl(x, log2_t, qmin, qmax, axis);
}
std::tuple<at::Tensor, at::Tensor> TqtBackwardOp(const at::Tensor& dy, const at::Tensor& x,
                                                 const at::Tensor& log2_t, int64_t qmin,
                                                 int64_t qmax, c10::optional<int64_t> axis) {
  return TqtBackwardImpl(dy, x, log2_t, qmin, qmax, axis, true);
}
at::Tensor PactOp(const at::Tensor& x, const at::Tensor& alpha, int64_t bits,
                  c10::optional<int64_t> axis) {
  return PactForwardImpl(x, alpha, bits, axis);
}
std::tuple<at::Tensor, at::Tensor> PactBackwardOp(const at::Tensor& dy, const at::Tensor& x,
                                                  const at::Tensor& alpha, int64_t bits,
                                                  c10::optional<int64_t> axis) {
  return PactBackwardImpl(dy, x, alpha, bits, axis, true);
}
at::Tensor ClipOp(const at::Tensor& x, const at::Tensor& cmin, const at::Tensor& cmax,
                  c10::optional<int64_t> axis) {
  return ClipForwardImpl(x, cmin, cmax, axis);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> ClipBackwardOp(const at::Tensor& dy,
                                                              const at::Tensor& x,
                                                              const at::Tensor& cmin,
                                                              const at::Tensor& cmax,
                                                              c10::optional<int64_t> axis) {
  return ClipBackwardImpl(dy, x, cmin, cmax, axis, true, true);
}

// Autograd.
class TqtFunction : public torch::autograd::Function<TqtFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& log2_t,
                            int64_t qmin, int64_t qmax, c10::optional<int64_t> axis) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, log2_t});
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["axis"] = axis.has_value() ? c10::IValue(*axis) : c10::IValue();
    ctx->saved_data["want"] = log2_t.requires_grad();
    return TqtForwardImpl(x, log2_t, qmin, qmax, axis);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dx, g] = TqtBackwardImpl(grads[0], s[0], s[1], ctx->saved_data["qmin"].toInt(),
                                   ctx->saved_data["qmax"].toInt(), SavedAxis(ctx),
                                   ctx->saved_data["want"].toBool());
    return {dx, g, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class PactFunction : public torch::autograd::Function<PactFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            int64_t bits, c10::optional<int64_t> axis) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, alpha});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["axis"] = axis.has_value() ? c10::IValue(*axis) : c10::IValue();
    ctx->saved_data["want"] = alpha.requires_grad();
    return PactForwardImpl(x, alpha, bits, axis);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dx, g] = PactBackwardImpl(grads[0], s[0], s[1], ctx->saved_data["bits"].toInt(),
                                    SavedAxis(ctx), ctx->saved_data["want"].toBool());
    return {dx, g, at::Tensor(), at::Tensor()};
  }
};

class ClipFunction : public torch::autograd::Function<ClipFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cmin,
                            const at::Tensor& cmax, c10::optional<int64_t> axis) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, cmin, cmax});
    ctx->saved_data["axis"] = axis.has_value() ? c10::IValue(*axis) : c10::IValue();
    ctx->saved_data["want_min"] = cmin.requires_grad();
    ctx->saved_data["want_max"] = cmax.requires_grad();
    return ClipForwardImpl(x, cmin, cmax, axis);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dx, gmin, gmax] = ClipBackwardImpl(grads[0], s[0], s[1], s[2], SavedAxis(ctx),
                                             ctx->saved_data["want_min"].toBool(),
                                             ctx->saved_data["want_max"].toBool());
    return {dx, gmin, gmax, at::Tensor()};
  }
};

at::Tensor TqtAutograd(const at::Tensor& x, const at::Tensor& log2_t, int64_t qmin, int64_t qmax,
                       c10::optional<int64_t> axis) {
  return TqtFunction::apply(x, log2_t, qmin, qmax, axis);
}
at::Tensor PactAutograd(const at::Tensor& x, const at::Tensor& alpha, int64_t bits,
                        c10::optional<int64_t> axis) {
  return PactFunction::apply(x, alpha, bits, axis);
}
at::Tensor ClipAutograd(const at::Tensor& x, const at::Tensor& cmin, const at::Tensor& cmax,
                        c10::optional<int64_t> axis) {
  return ClipFunction::apply(x, cmin, cmax, axis);
}

}  // namespace

TORCH_LIBRARY_IMPL(qkit, CompositeExplicitAutograd, m) {
  m.impl("lsq", LsqOp);
  m.impl("lsq_backward", LsqBackwardOp);
  m.impl("tqt", TqtOp);
  m.impl("tqt_backward", TqtBackwardOp);
  m.impl("pact", PactOp);
  m.impl("pact_backward", PactBackwardOp);
  m.impl("learned_clip", ClipOp);
  m.impl("learned_clip_backward", ClipBackwardOp);
}

TORCH_LIBRARY_IMPL(qkit, Autograd, m) {
  m.impl("lsq", LsqAutograd);
  m.impl("tqt", TqtAutograd);
  m.impl("pact", PactAutograd);
  m.impl("learned_clip", ClipAutograd);
}

// The backward ops have no autograd kernel; see core_ops.cc (AutogradMeta): a meta tensor
// reaches the device check's ValueError.
TORCH_LIBRARY_IMPL(qkit, AutogradMeta, m) {
  for (const char* op :
       {"lsq_backward", "tqt_backward", "pact_backward", "learned_clip_backward"}) {
    m.impl(op, torch::CppFunction::makeFallthrough());
  }
}

}  // namespace qkit::torch_ext
