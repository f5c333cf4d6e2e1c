// A plain libtorch program (no Python) that loads the extension and calls torch.ops.qkit.*
// through the dispatcher, autograd included: the C++ route described in docs/torch.md.
// Expected values are SPEC.md's worked examples (§10.5 LSQ, §10.6 TQT, §10.2 A).
// Usage: qkit_torch_cpp_smoke_test path/to/_C.so
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <dlfcn.h>
#include <torch/autograd.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

int failures = 0;

void Expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

bool Equal(const at::Tensor& a, const std::vector<float>& want) {
  return at::equal(a.detach().contiguous(), at::tensor(want));
}

// Calls torch.ops.qkit.<name> boxed, with the schema's defaults for every argument not in
// `args` (the keyword-heavy observer ops are easiest to call this way from C++).
std::vector<c10::IValue> CallBoxed(const char* name,
                                   const std::map<std::string, c10::IValue>& args) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  std::vector<c10::IValue> stack;
  for (const auto& a : op.schema().arguments()) {
    const auto it = args.find(a.name());
    if (it != args.end()) {
      stack.push_back(it->second);
    } else {
      TORCH_CHECK(a.default_value().has_value(), name, ": argument ", a.name(), " missing");
      stack.push_back(*a.default_value());
    }
  }
  op.callBoxed(&stack);
  return stack;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::fprintf(stderr, "usage: %s path/to/_C.so (%s)\n", argv[0], dlerror());
    return 2;
  }
  auto& dispatcher = c10::Dispatcher::singleton();

  // LSQ, PyTorch learnable variant, SPEC §10.5 (s = 0.1, zp = 0, [-128, 127]).
  auto lsq =
      dispatcher.findSchemaOrThrow("qkit::lsq", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                            int64_t, int64_t, c10::string_view, double, c10::optional<int64_t>,
                            c10::string_view, double, bool)>();
  at::Tensor x = at::tensor({-13.0f, -0.26f, 0.04f, 0.05f, 0.15f, 12.74f, 12.8f});
  x.set_requires_grad(true);
  at::Tensor step = at::tensor({0.1f});
  step.set_requires_grad(true);
  at::Tensor y = lsq.call(x, step, c10::nullopt, -128, 127, "pytorch", 1.0, c10::nullopt,
                          "identity", 0.0, false);
  Expect(Equal(y, {-12.8f, -0.3f, 0.0f, 0.0f, 0.2f, 12.7f, 12.7f}), "lsq forward (SPEC 10.5)");
  y.backward(at::ones_like(y));
  Expect(Equal(x.grad(), {0, 1, 1, 1, 1, 1, 0}), "lsq dx (SPEC 10.5)");
  Expect(step.grad().defined() && step.grad().numel() == 1, "lsq dstep");

  // TQT, SPEC §10.6 (log2 t = -3, [-127, 127]).
  auto tqt = dispatcher.findSchemaOrThrow("qkit::tqt", "")
                 .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                                   c10::optional<int64_t>)>();
  at::Tensor xt = at::tensor({-16.0f, -0.3f, 0.1f, 15.9f, 15.95f});
  Expect(Equal(tqt.call(xt, at::tensor({-3.0f}), -127, 127, c10::nullopt),
               {-15.875f, -0.25f, 0.125f, 15.875f, 15.875f}),
         "tqt forward (SPEC 10.6)");

  // fake_quantize, SPEC §10.2 A codes times the step (qint8, s = 2 / 127.5).
  auto fq =
      dispatcher.findSchemaOrThrow("qkit::fake_quantize", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                            int64_t, bool, bool, c10::optional<int64_t>, c10::optional<int64_t>,
                            c10::string_view, c10::string_view, c10::string_view, c10::string_view,
                            c10::optional<int64_t>, int64_t, bool, c10::string_view)>();
  const float s = 2.0f / 127.5f;
  at::Tensor xf = at::tensor({-1.5f, -0.75f, -0.2f, 0.0f, 0.1f, 0.35f, 0.9f, 2.0f});
  at::Tensor out =
      fq.call(xf, at::tensor({s}), c10::nullopt, 8, true, false, c10::nullopt, c10::nullopt,
              "half_to_even", "divide", "add_after_round", "propagate", c10::nullopt, 0, false,
              "clipped");
  std::vector<float> want;
  for (float q : {-96.0f, -48.0f, -13.0f, 0.0f, 6.0f, 22.0f, 57.0f, 127.0f}) want.push_back(q * s);
  Expect(Equal(out, want), "fake_quantize (SPEC 10.2 A)");

  // A MinMax observer over state tensors: observe {-1, 3, 2}, then PyTorch's affine quint8
  // qparams of [-1, 3]: scale = 4 / 255, zero point = 0 - round(-1 / scale) = 64.
  const std::vector<at::Tensor> empty_state{at::empty({0}), at::empty({0}),
                                            at::empty({0}, at::kLong), at::zeros({}, at::kLong)};
  auto observed = CallBoxed(
      "qkit::observer_observe",
      {{"x", at::tensor({-1.0f, 3.0f, 2.0f})}, {"state", empty_state}, {"kind", "minmax"}});
  const auto state = observed.at(0).toTensorVector();
  Expect(Equal(state.at(0), {-1.0f}) && Equal(state.at(1), {3.0f}), "observer_observe min / max");
  auto qparams = CallBoxed("qkit::observer_qparams", {{"state", state},
                                                      {"kind", "minmax"},
                                                      {"quant_min", int64_t{0}},
                                                      {"quant_max", int64_t{255}},
                                                      {"symmetric", false}});
  Expect(
      Equal(qparams.at(0).toTensor(), {4.0f / 255.0f}) && Equal(qparams.at(1).toTensor(), {64.0f}),
      "observer_qparams (PyTorch affine quint8)");

  // Errors reach C++ callers as c10 exceptions (ValueError in Python).
  bool threw = false;
  try {
    tqt.call(xt, at::tensor({-3.0f}), 5, 5, c10::nullopt);
  } catch (const c10::ValueError&) {
    threw = true;
  }
  Expect(threw, "quant_min == quant_max raises c10::ValueError");

  std::printf("qkit torch C++ smoke test: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
