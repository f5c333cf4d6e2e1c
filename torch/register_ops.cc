// The qkit operator library: every schema of torch.ops.qkit.* in one place. Kernels live in
// core_ops.cc (fake quant, quantize, dequantize, reductions, qparams) and
// learned_range_ops.cc (LSQ, TQT, PACT, learned clip); ops without tensor arguments are
// defined here with their (catch-all) kernel.
//
// Every QuantSpec option is a keyword argument (see python/qkit/ops.py for the documentation):
//   bits, is_signed, narrow_range, quant_min / quant_max (both or neither), rounding
//   ('half_to_even' | 'half_away_from_zero' | 'floor_add_half'), scale_mode ('divide' |
//   'multiply_reciprocal' | 'multiplier'), zero_point_mode ('add_after_round' |
//   'add_before_round'), nan_mode ('propagate' | 'to_quant_min' | 'error'), and the layout:
//   axis=None per tensor, axis=k per channel, axis=k with group_size=g per group.
#include <torch/library.h>

#include <string>
#include <vector>

#include "errors.h"
#include "qkit/context.h"
#include "qkit/ops/learned_range.h"

namespace qkit::torch_ext {
namespace {

const std::string kSpec =
    "int bits=8, bool is_signed=True, bool narrow_range=False, int? quant_min=None, "
    "int? quant_max=None, str rounding=\"half_to_even\", str scale_mode=\"divide\", "
    "str zero_point_mode=\"add_after_round\", str nan_mode=\"propagate\", int? axis=None, "
    "int group_size=0, bool allow_zero_point_outside_range=False";

const std::string kLsq =
    "int quant_min=-128, int quant_max=127, str variant=\"pytorch\", float grad_scale=1.0, "
    "int? axis=None, str step_transform=\"identity\", float step_eps=0.0, bool fused=False";

// Observer keywords (observer_ops.cc): which core observer (`kind`: 'minmax',
// 'moving_average', 'histogram', 'histogram_calibrator', 'passive'), its layout and options, and
// the QuantSpec keywords (without layout: the observer's layout is the spec's).
const std::string kObs =
    "str kind, int? axis=None, int group_size=0, str nonfinite=\"skip\", str variant=\"torch\", "
    "float? momentum=None, str running_range=\"minmax\", int? stop_update_after_iters=None, "
    "int bins=2048, int upsample_rate=128, int dst_nbins=0, bool error_on_nonfinite=False, "
    "int num_bits=8, bool is_unsigned=False, bool skip_zeros=False, bool torch_hist=True, "
    "str torch_binning=\"histc\", int bits=8, bool is_signed=True, bool narrow_range=False, "
    "int? quant_min=None, int? quant_max=None, str rounding=\"half_to_even\", "
    "str scale_mode=\"divide\", str zero_point_mode=\"add_after_round\", "
    "str nan_mode=\"propagate\"";

const std::string kRule =
    "bool symmetric=True, str divisor=\"half_range\", bool widen_to_zero=True, "
    "str degenerate=\"floor_at_eps\", float eps=1.1920928955078125e-07, "
    "str zero_point_rounding=\"half_to_even\", bool integral_zero_point=True, "
    "bool clamp_zero_point=True, str restriction=\"none\", str symmetric_zero_point=\"zero\", "
    "bool reciprocal_multiplier=False";

const std::string kStats =
    "Tensor range_min, Tensor range_max, Tensor range_observed, Tensor range_nonfinite";

double LsqGradScaleOp(int64_t numel, int64_t quant_max) {
  return Translate([&] { return static_cast<double>(LsqGradScale(numel, quant_max)); });
}

std::vector<std::string> AvailableTargetsOp() { return AvailableTargets(); }

void ForceTargetOp(c10::string_view name) {
  Translate([&] { ForceTarget(std::string(name)); });
}

std::string CurrentTargetOp() { return CurrentTarget(); }

}  // namespace

TORCH_LIBRARY(qkit, m) {
  // ---- fake quantization and its backward (core_ops.cc) --------------------------------------
  // ste: 'clipped' (gradient masked by the bit-packed in-range mask saved by the forward),
  // 'clipped_recompute' (mask recomputed from the saved input), 'identity' (plain STE).
  m.def(("fake_quantize(Tensor x, Tensor scale, Tensor? zero_point=None, *, " + kSpec +
         ", str ste=\"clipped\") -> Tensor")
            .c_str());
  m.def(("fake_quantize_(Tensor(a!) x, Tensor scale, Tensor? zero_point=None, *, " + kSpec +
         ", str ste=\"clipped\") -> Tensor(a!)")
            .c_str());
  // (out, mask): mask is uint8 with ceil(numel / 8) bytes, bit i % 8 of byte i / 8 = element i
  // (row-major) inside the range.
  m.def(("fake_quantize_with_mask(Tensor x, Tensor scale, Tensor? zero_point=None, *, " + kSpec +
         ") -> (Tensor, Tensor)")
            .c_str());
  m.def("fake_quantize_backward(Tensor dy, Tensor mask) -> Tensor");
  m.def(("fake_quantize_backward_clipped(Tensor dy, Tensor x, Tensor scale, "
         "Tensor? zero_point=None, *, " +
         kSpec + ") -> Tensor")
            .c_str());
  m.def(("quantize(Tensor x, Tensor scale, Tensor? zero_point=None, *, " + kSpec +
         ", ScalarType? dtype=None) -> Tensor")
            .c_str());
  m.def(("dequantize(Tensor q, Tensor scale, Tensor? zero_point=None, *, " + kSpec +
         ", ScalarType? dtype=None) -> Tensor")
            .c_str());

  // ---- reductions and parameter choice (core_ops.cc) -----------------------------------------
  // nonfinite: 'skip' | 'skip_nan' | 'propagate'. Accumulators (float32, one per slot) are
  // folded into and returned as new tensors; `skipped` counts the elements left out.
  m.def(
      "minmax(Tensor x, *, int? axis=None, int group_size=0, str nonfinite=\"skip\", "
      "Tensor? min_acc=None, Tensor? max_acc=None) -> (Tensor min, Tensor max, int skipped)");
  m.def(
      "absmax(Tensor x, *, int? axis=None, int group_size=0, str nonfinite=\"skip\", "
      "Tensor? amax_acc=None) -> (Tensor amax, int skipped)");
  m.def(("choose_qparams(Tensor min, Tensor max, *, " + kSpec +
         ", bool symmetric=True, str divisor=\"half_range\", bool widen_to_zero=True, "
         "str degenerate=\"floor_at_eps\", float eps=1.1920928955078125e-07, "
         "str zero_point_rounding=\"half_to_even\", bool integral_zero_point=True, "
         "bool clamp_zero_point=True, str restriction=\"none\", "
         "str symmetric_zero_point=\"zero\", bool reciprocal_multiplier=False) -> (Tensor scale, "
         "Tensor zero_point)")
            .c_str());

  // ---- learned-range fake quantization (learned_range_ops.cc) --------------------------------
  m.def(("lsq(Tensor x, Tensor step, Tensor? zero_point=None, *, " + kLsq + ") -> Tensor").c_str());
  m.def(("lsq_backward(Tensor dy, Tensor x, Tensor step, Tensor? zero_point=None, *, " + kLsq +
         ") -> (Tensor dx, Tensor dstep, Tensor dzero_point)")
            .c_str());
  m.def("lsq_grad_scale(int numel, int quant_max) -> float", &LsqGradScaleOp);
  m.def(
      "tqt(Tensor x, Tensor log2_t, *, int quant_min=-127, int quant_max=127, "
      "int? axis=None) -> Tensor");
  m.def(
      "tqt_backward(Tensor dy, Tensor x, Tensor log2_t, *, int quant_min=-127, "
      "int quant_max=127, int? axis=None) -> (Tensor dx, Tensor dlog2_t)");
  m.def("pact(Tensor x, Tensor alpha, *, int bits=8, int? axis=None) -> Tensor");
  m.def(
      "pact_backward(Tensor dy, Tensor x, Tensor alpha, *, int bits=8, int? axis=None) -> "
      "(Tensor dx, Tensor dalpha)");
  m.def("learned_clip(Tensor x, Tensor cmin, Tensor cmax, *, int? axis=None) -> Tensor");
  m.def(
      "learned_clip_backward(Tensor dy, Tensor x, Tensor cmin, Tensor cmax, *, "
      "int? axis=None) -> (Tensor dx, Tensor dcmin, Tensor dcmax)");

  // ---- observers (observer_ops.cc; python/qkit/nn/observers.py) ------------------------------
  // The state is passed in and returned (new tensors); nothing is returned when a call throws.
  m.def(("observer_observe(Tensor x, Tensor[] state, *, bool training=True, "
         "int current_train_step=0, " +
         kObs + ") -> Tensor[]")
            .c_str());
  m.def(("observer_batch_range(Tensor x, Tensor[] state, *, " + kObs +
         ") -> (Tensor min, Tensor max, Tensor observed, Tensor nonfinite)")
            .c_str());
  m.def(
      ("observer_batch_counts(Tensor x, Tensor[] state, " + kStats + ", *, " + kObs + ") -> Tensor")
          .c_str());
  m.def(("observer_commit(Tensor[] state, " + kStats +
         ", Tensor? counts=None, *, "
         "bool training=True, int current_train_step=0, " +
         kObs + ") -> Tensor[]")
            .c_str());
  m.def(("observer_qparams(Tensor[] state, *, " + kObs + ", " + kRule +
         ") -> (Tensor scale, Tensor zero_point)")
            .c_str());
  m.def(("observer_observe_qparams(Tensor x, Tensor[] state, *, bool training=True, "
         "int current_train_step=0, " +
         kObs + ", " + kRule + ") -> (Tensor[] state, Tensor scale, Tensor zero_point)")
            .c_str());
  m.def(("observer_range(Tensor[] state, *, " + kObs + ") -> (Tensor min, Tensor max)").c_str());
  m.def(("observer_amax(Tensor[] state, *, str method, int stride=1, int start_bin=128, "
         "float percentile=99.99, " +
         kObs + ") -> Tensor")
            .c_str());
  m.def(("observer_validate(Tensor[] state, *, " + kObs + ") -> int").c_str());
  m.def(("observer_set_qparams(Tensor[] state, Tensor scale, Tensor? zero_point=None, *, "
         "bool scale_only=False, " +
         kObs + ") -> Tensor[]")
            .c_str());
  m.def(("observer_merge(Tensor[] a, Tensor[] b, *, " + kObs + ") -> Tensor[]").c_str());
  m.def(
      ("observer_gate_open(*, bool training=True, int current_train_step=0, " + kObs + ") -> bool")
          .c_str());
  m.def("observer_merge_counts(Tensor a, Tensor b, *, str kind) -> Tensor");
  m.def(
      "range_stats_merge(Tensor a_min, Tensor a_max, Tensor a_observed, Tensor a_nonfinite, "
      "Tensor b_min, Tensor b_max, Tensor b_observed, Tensor b_nonfinite) -> "
      "(Tensor min, Tensor max, Tensor observed, Tensor nonfinite)");
  m.def(("range_stats_flatten(" + kStats + ") -> (Tensor floats, Tensor counts)").c_str());
  m.def(
      "range_stats_unflatten(Tensor floats, Tensor counts) -> "
      "(Tensor min, Tensor max, Tensor observed, Tensor nonfinite)");

  // ---- SIMD target control (tests and benchmarks) --------------------------------------------
  m.def("available_targets() -> str[]", &AvailableTargetsOp);
  m.def("force_target(str name) -> ()", &ForceTargetOp);
  m.def("current_target() -> str", &CurrentTargetOp);
}

}  // namespace qkit::torch_ext
