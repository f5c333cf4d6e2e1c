// qkit_example: the end-to-end path on synthetic data. For a fixed-seed activation-like tensor
// (Gaussian with a few outliers) and a weight-like tensor (rows of different magnitude) it runs
// MinMax / AbsMax -> ChooseQParams -> FakeQuantize for a few specs and prints, per spec, the
// scale (first channel for per-channel specs), the zero point, the SQNR in dB (computed in
// double) and the time taken by the three steps (the fastest of --repeat runs).
//
//   qkit_example [--threads N] [--n NUM_ACTIVATIONS] [--seed S] [--repeat R]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qkit/qkit.h"

namespace {

struct Options {
  int threads = 1;
  int64_t n = 1 << 20;
  uint64_t seed = 20261122;
  int repeat = 3;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "qkit_example: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") {
      o.threads = std::atoi(next());
    } else if (a == "--n") {
      o.n = std::atoll(next());
    } else if (a == "--repeat") {
      o.repeat = std::atoi(next());
    } else if (a == "--seed") {
      o.seed = std::strtoull(next(), nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: qkit_example [--threads N] [--n NUM] [--seed S] [--repeat R]\n");
      std::exit(a == "--help" || a == "-h" ? 0 : 2);
    }
  }
  if (o.threads < 1 || o.n < 1 || o.repeat < 1) {
    std::fprintf(stderr, "qkit_example: --threads, --n and --repeat must be >= 1\n");
    std::exit(2);
  }
  return o;
}

// N(0, 1) activations with one outlier of +-(8..20) sigma every ~50k samples.
std::vector<float> MakeActivations(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> big(8.0f, 20.0f);
  std::bernoulli_distribution outlier(1.0 / 50000.0);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) {
    v = normal(rng);
    if (outlier(rng)) v = std::copysign(big(rng), v);
  }
  return x;
}

// [rows, cols] weights, row r ~ N(0, sigma_r^2) with sigma_r log-spread over 0.01 .. 0.5, so
// one per-tensor scale fits the small rows badly.
std::vector<float> MakeWeights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float sigma =
        0.01f * std::pow(50.0f, static_cast<float>(r) / static_cast<float>(rows - 1));
    for (int64_t c = 0; c < cols; ++c) w[static_cast<size_t>(r * cols + c)] = sigma * normal(rng);
  }
  return w;
}

double SqnrDb(const std::vector<float>& x, const std::vector<float>& xq) {
  double signal = 0.0, noise = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(xq[i]);
    signal += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    noise += d * d;
  }
  if (noise == 0.0) return INFINITY;
  return 10.0 * std::log10(signal / noise);
}

struct Case {
  const char* name;
  const char* data;  // "act" or "weight"
  qkit::QuantSpec spec;
  qkit::QParamsRule rule;
  bool abs_max = false;  // reduce with AbsMax and pass [-amax, amax]
};

std::vector<Case> Cases() {
  using namespace qkit;
  std::vector<Case> cases;
  {
    Case c{"int8 symmetric per-tensor", "act", {}, {}};
    cases.push_back(c);
  }
  {
    Case c{"int8 affine per-tensor", "act", {}, {}};
    c.spec.is_signed = false;
    c.spec.symmetric = false;
    cases.push_back(c);
  }
  {
    Case c{"int4 symmetric per-tensor", "act", {}, {}};
    c.spec.bits = 4;
    cases.push_back(c);
  }
  {
    Case c{"NVIDIA int8 narrow (amax)", "act", {}, {}};
    c.spec.narrow_range = true;
    c.spec.scale_mode = ScaleMode::kMultiplier;
    c.rule.divisor = SymmetricDivisor::kQuantMax;
    c.rule.degenerate = DegenerateRule::kZeroBelowEps;
    c.rule.eps = 1.0f / static_cast<float>(1 << 24);
    c.abs_max = true;
    cases.push_back(c);
  }
  {
    Case c{"OneFlow cambricon int8", "act", {}, {}};
    c.rule.restriction = ScaleRestriction::kPow2FloorLog2Amax;
    c.rule.degenerate = DegenerateRule::kNone;
    cases.push_back(c);
  }
  {
    Case c{"int8 symmetric per-tensor", "weight", {}, {}};
    cases.push_back(c);
  }
  {
    Case c{"int8 symmetric per-channel", "weight", {}, {}};
    c.spec.layout = ParamLayout::PerChannel(0);
    cases.push_back(c);
  }
  {
    Case c{"NVIDIA int8 per-channel", "weight", {}, {}};
    c.spec.narrow_range = true;
    c.spec.scale_mode = ScaleMode::kMultiplier;
    c.spec.layout = ParamLayout::PerChannel(0);
    c.rule.divisor = SymmetricDivisor::kQuantMax;
    c.rule.degenerate = DegenerateRule::kZeroBelowEps;
    c.rule.eps = 1.0f / static_cast<float>(1 << 24);
    c.abs_max = true;
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = ParseArgs(argc, argv);
  constexpr int64_t kRows = 256, kCols = 1024;
  std::vector<float> act = MakeActivations(opt.n, opt.seed);
  std::vector<float> weight = MakeWeights(kRows, kCols, opt.seed);
  const qkit::Context ctx{opt.threads};

  std::printf(
      "qkit_example: activations %lld (N(0,1) + outliers), weights [%lld, %lld], "
      "seed %llu, %d thread(s), target %s\n",
      static_cast<long long>(opt.n), static_cast<long long>(kRows), static_cast<long long>(kCols),
      static_cast<unsigned long long>(opt.seed), opt.threads, qkit::CurrentTarget().c_str());
  std::printf("%-30s %-7s %-8s %14s %10s %9s %10s\n", "spec", "data", "params", "scale[0]",
              "zero_pt", "SQNR dB", "time ms");
  try {
    for (const Case& c : Cases()) {
      std::vector<float>& x = std::strcmp(c.data, "act") == 0 ? act : weight;
      const qkit::TensorView xv =
          x.data() == act.data()
              ? qkit::TensorView::Vector(x.data(), static_cast<int64_t>(x.size()))
              : qkit::TensorView::Contiguous(x.data(), qkit::DType::kFloat32, {kRows, kCols});
      std::vector<float> out(x.size());
      const qkit::TensorView ov =
          qkit::TensorView::Contiguous(out.data(), qkit::DType::kFloat32, xv.ndim, xv.shape);

      const int64_t np = qkit::NumParams(xv, c.spec.layout, "qkit_example");
      std::vector<float> mn(np), mx(np), scale(np), zp(np), amax(np);
      double ms = INFINITY;
      for (int rep = 0; rep < opt.repeat; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        std::fill(mn.begin(), mn.end(), INFINITY);  // fresh accumulators
        std::fill(mx.begin(), mx.end(), -INFINITY);
        std::fill(amax.begin(), amax.end(), 0.0f);
        int64_t skipped = 0;
        if (c.abs_max) {
          qkit::AbsMax(xv, c.spec.layout, qkit::NonFinite::kSkip, amax.data(), &skipped, ctx);
          for (int64_t i = 0; i < np; ++i) {
            mn[i] = -amax[i];
            mx[i] = amax[i];
          }
        } else {
          qkit::MinMax(xv, c.spec.layout, qkit::NonFinite::kSkip, mn.data(), mx.data(), &skipped,
                       ctx);
        }
        qkit::ChooseQParams(mn.data(), mx.data(), np, c.spec, c.rule, scale.data(), zp.data(),
                            "qkit_example");
        qkit::FakeQuantize(xv, c.spec, qkit::QParamsView{scale.data(), zp.data(), np}, ov, nullptr,
                           ctx);
        const auto t1 = std::chrono::steady_clock::now();
        ms = std::min(ms, std::chrono::duration<double, std::milli>(t1 - t0).count());
      }

      std::printf("%-30s %-7s %-8lld %14.8g %10g %9.2f %10.3f\n", c.name, c.data,
                  static_cast<long long>(np), static_cast<double>(scale[0]),
                  static_cast<double>(zp[0]), SqnrDb(x, out), ms);
    }
  } catch (const qkit::Error& e) {
    std::fprintf(stderr, "qkit_example: %s\n", e.what());
    return 1;
  }
  std::printf(
      "(scale is the step, or the multiplier 1/step for the NVIDIA rows; SQNR = "
      "10 log10(sum x^2 / sum (x - fq(x))^2))\n");
  return 0;
}
