// The bad-input matrix (issue 8, docs/reliability.md): every public C++ entry point against
// each kind of bad or extreme input, with its documented outcome: a value, or a specific
// exception type whose message names the argument. Observers must keep their state (Save()
// bytes) after a rejected call. Nothing may crash (the sanitized CI build runs this too).
// QKIT_PRINT_MATRIX=1 prints the table as Markdown (docs/reliability.md mirrors it).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "qkit/context.h"
#include "qkit/error.h"
#include "qkit/io/npy.h"
#include "qkit/observers/histogram_calibrator.h"
#include "qkit/observers/histogram_observer.h"
#include "qkit/observers/observers.h"
#include "qkit/ops/fake_quant.h"
#include "qkit/ops/minmax.h"
#include "qkit/qparams.h"
#include "qkit/quant_spec.h"
#include "qkit/serialize.h"
#include "qkit/tensor.h"
#include "util/compare.h"

namespace qkit {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kDenorm = 1.0e-40f;

enum class Outcome { kValue, kInvalidArgument, kOutOfRange, kFailedPrecondition, kDataLoss };

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kValue: return "value";
    case Outcome::kInvalidArgument: return "InvalidArgument";
    case Outcome::kOutOfRange: return "OutOfRange";
    case Outcome::kFailedPrecondition: return "FailedPrecondition";
    case Outcome::kDataLoss: return "DataLoss";
  }
  return "?";
}

struct Row {
  const char* function;
  const char* input;
  Outcome outcome;
  // kValue: what the value is (the call asserts it); errors: a substring of the message that
  // names the argument.
  const char* detail;
  std::function<void()> call;
};

// Runs f on an observer; if f throws, asserts the Save() bytes are unchanged and rethrows.
template <typename Obs>
std::function<void()> Unchanged(Obs* obs, std::function<void(Obs&)> f) {
  return [obs, f] {
    const std::vector<uint8_t> before = obs->Save();
    try {
      f(*obs);
    } catch (const Error&) {
      EXPECT_EQ(before, obs->Save()) << "observer state changed by a rejected call";
      throw;
    }
  };
}

TensorView Vec(std::vector<float>& v) { return TensorView::Vector(v.data(), static_cast<int64_t>(v.size())); }

// MinMax per tensor of `values` under `policy`, returning {min, max, skipped}.
struct MM {
  float min = kInf, max = -kInf;
  int64_t skipped = 0;
};
MM RunMinMax(std::vector<float> values, NonFinite policy = NonFinite::kSkip) {
  MM r;
  MinMax(Vec(values), ParamLayout::PerTensor(), policy, &r.min, &r.max, &r.skipped, Context{});
  return r;
}

// Fake quant of one value, int8 symmetric, scale s, zero point z.
float Fq(float x, QuantSpec spec = {}, float s = 0.5f, float z = 0.0f) {
  float out = -123.0f;
  const QParamsView qp{&s, &z, 1};
  FakeQuantize(TensorView::Vector(&x, 1), spec, qp, TensorView::Vector(&out, 1), nullptr,
               Context{});
  return out;
}

void FqSpec(const QuantSpec& spec) {
  float x = 1.0f, out, s = 0.5f, z = 0.0f;
  FakeQuantize(TensorView::Vector(&x, 1), spec, {&s, &z, 1}, TensorView::Vector(&out, 1),
               nullptr, Context{});
}

QuantSpec Bits(int b) {
  QuantSpec s;
  s.bits = b;
  return s;
}

QParams Choose(float mn, float mx, QuantSpec spec = {}, QParamsRule rule = {}) {
  return ChooseQParams(mn, mx, spec, rule);
}

void ExpectSame(float want, float got) {
  EXPECT_TRUE(test::SameFloat(want, got)) << "want " << want << " got " << got;
}

// A tiny valid .npy (v1.0, '<f4', shape (2,)), written by hand from the format spec.
std::vector<uint8_t> NpyBytes(const std::string& header_dict, size_t payload) {
  std::string h = header_dict;
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  std::vector<uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                            static_cast<uint8_t>(h.size() & 0xff),
                            static_cast<uint8_t>(h.size() >> 8)};
  b.insert(b.end(), h.begin(), h.end());
  b.resize(b.size() + payload, 0);
  return b;
}

std::vector<Row> Matrix() {
  std::vector<Row> rows;
  auto add = [&](const char* fn, const char* in, Outcome o, const char* d, std::function<void()> f) {
    rows.push_back({fn, in, o, d, std::move(f)});
  };
  const Outcome V = Outcome::kValue, IA = Outcome::kInvalidArgument, OOR = Outcome::kOutOfRange,
                FP = Outcome::kFailedPrecondition, DL = Outcome::kDataLoss;

  // ---------------------------------------------------------------- MinMax / AbsMax
  add("MinMax", "empty tensor", V, "accumulators unchanged (+inf/-inf), skipped 0", [] {
    const MM r = RunMinMax({});
    EXPECT_EQ(r.min, kInf);
    EXPECT_EQ(r.max, -kInf);
    EXPECT_EQ(r.skipped, 0);
  });
  add("MinMax", "0-d tensor", V, "min = max = the element", [] {
    float x = -2.5f, mn = kInf, mx = -kInf;
    TensorView v = TensorView::Contiguous(&x, DType::kFloat32, {});
    MinMax(v, ParamLayout::PerTensor(), NonFinite::kSkip, &mn, &mx, nullptr, Context{});
    EXPECT_EQ(mn, -2.5f);
    EXPECT_EQ(mx, -2.5f);
  });
  add("MinMax", "NaN (kSkip / kPropagate)", V, "kSkip: left out and counted; kPropagate: NaN", [] {
    const MM a = RunMinMax({1.0f, kNaN, -1.0f});
    EXPECT_EQ(a.min, -1.0f);
    EXPECT_EQ(a.max, 1.0f);
    EXPECT_EQ(a.skipped, 1);
    const MM b = RunMinMax({1.0f, kNaN, -1.0f}, NonFinite::kPropagate);
    EXPECT_TRUE(std::isnan(b.min) && std::isnan(b.max));
  });
  add("MinMax", "+-Inf (kSkip / kSkipNaN)", V, "kSkip: left out and counted; kSkipNaN: taken", [] {
    const MM a = RunMinMax({kInf, 2.0f, -kInf});
    EXPECT_EQ(a.min, 2.0f);
    EXPECT_EQ(a.skipped, 2);
    const MM b = RunMinMax({kInf, 2.0f, -kInf}, NonFinite::kSkipNaN);
    EXPECT_EQ(b.min, -kInf);
    EXPECT_EQ(b.max, kInf);
  });
  add("MinMax", "denormals", V, "exact (no flush to zero)", [] {
    const MM r = RunMinMax({kDenorm, -kDenorm});
    EXPECT_EQ(r.min, -kDenorm);
    EXPECT_EQ(r.max, kDenorm);
  });
  add("MinMax", "FLT_MAX", V, "exact", [] {
    const MM r = RunMinMax({FLT_MAX, -FLT_MAX});
    EXPECT_EQ(r.min, -FLT_MAX);
    EXPECT_EQ(r.max, FLT_MAX);
  });
  add("MinMax", "all-equal values (incl. -0)", V, "min = max; zero reported as +0", [] {
    const MM r = RunMinMax({-0.0f, -0.0f, -0.0f});
    ExpectSame(0.0f, r.min);
    ExpectSame(0.0f, r.max);
  });
  add("MinMax", "wrong dtype (int8)", IA, "`x`", [] {
    int8_t q[2] = {1, 2};
    float mn = kInf, mx = -kInf;
    MinMax(TensorView::Contiguous(q, DType::kInt8, {2}), ParamLayout::PerTensor(),
           NonFinite::kSkip, &mn, &mx, nullptr, Context{});
  });
  add("MinMax", "non-contiguous (stride -2)", V, "same as the contiguous copy", [] {
    std::vector<float> d = {5, 0, -1, 0, 3};
    TensorView v = TensorView::Vector(d.data() + 4, 3);
    v.strides[0] = -2;
    float mn = kInf, mx = -kInf;
    MinMax(v, ParamLayout::PerTensor(), NonFinite::kSkip, &mn, &mx, nullptr, Context{});
    EXPECT_EQ(mn, -1.0f);
    EXPECT_EQ(mx, 5.0f);
  });
  add("MinMax", "channel axis out of range (2 on 2-d)", OOR, "axis", [] {
    float d[4] = {}, mn[2], mx[2];
    MinMax(TensorView::Contiguous(d, DType::kFloat32, {2, 2}), ParamLayout::PerChannel(2),
           NonFinite::kSkip, mn, mx, nullptr, Context{});
  });
  add("MinMax", "channel axis -3 on 2-d", OOR, "axis", [] {
    float d[4] = {}, mn[2], mx[2];
    MinMax(TensorView::Contiguous(d, DType::kFloat32, {2, 2}), ParamLayout::PerChannel(-3),
           NonFinite::kSkip, mn, mx, nullptr, Context{});
  });
  add("MinMax", "group_size 0", IA, "group_size", [] {
    float d[4] = {}, mn[2], mx[2];
    MinMax(TensorView::Contiguous(d, DType::kFloat32, {2, 2}), ParamLayout::PerGroup(1, 0),
           NonFinite::kSkip, mn, mx, nullptr, Context{});
  });
  add("MinMax", "ctx.num_threads 0", IA, "num_threads", [] {
    float d[2] = {}, mn = kInf, mx = -kInf;
    Context ctx;
    ctx.num_threads = 0;
    MinMax(TensorView::Vector(d, 2), ParamLayout::PerTensor(), NonFinite::kSkip, &mn, &mx,
           nullptr, ctx);
  });
  add("MinMax", "absurd size (2^62 x 4 elements)", IA, "shape", [] {
    float d[1] = {}, mn = kInf, mx = -kInf;
    MinMax(TensorView::Contiguous(d, DType::kFloat32, {int64_t{1} << 62, 4}),
           ParamLayout::PerTensor(), NonFinite::kSkip, &mn, &mx, nullptr, Context{});
  });
  add("MinMax", "negative dim", IA, "shape", [] {
    float d[1] = {}, mn = kInf, mx = -kInf;
    MinMax(TensorView::Contiguous(d, DType::kFloat32, {-3}), ParamLayout::PerTensor(),
           NonFinite::kSkip, &mn, &mx, nullptr, Context{});
  });
  add("AbsMax", "NaN, +-Inf, denormal (kSkip)", V, "max |x| of the finite elements", [] {
    std::vector<float> d = {kNaN, -kInf, -kDenorm, kInf};
    float amax = 0.0f;
    int64_t skipped = 0;
    AbsMax(Vec(d), ParamLayout::PerTensor(), NonFinite::kSkip, &amax, &skipped, Context{});
    EXPECT_EQ(amax, kDenorm);
    EXPECT_EQ(skipped, 3);
  });
  add("AbsMax", "wrong dtype (int32)", IA, "`x`", [] {
    int32_t q[2] = {1, 2};
    float amax = 0;
    AbsMax(TensorView::Contiguous(q, DType::kInt32, {2}), ParamLayout::PerTensor(),
           NonFinite::kSkip, &amax, nullptr, Context{});
  });

  // ---------------------------------------------------------------- QuantSpec::Validate
  for (int b : {0, 1, 17, -1}) {
    static const char* names[] = {"bits 0", "bits 1", "bits 17", "bits -1"};
    const int i = b == 0 ? 0 : b == 1 ? 1 : b == 17 ? 2 : 3;
    add("QuantSpec::Validate", names[i], IA, "`bits`", [b] { Bits(b).Validate("t"); });
  }
  add("QuantSpec::Validate", "narrow_range with unsigned", IA, "narrow_range", [] {
    QuantSpec s;
    s.is_signed = false;
    s.narrow_range = true;
    s.Validate("t");
  });
  add("QuantSpec::Validate", "only quant_min_override set", IA, "quant_m", [] {
    QuantSpec s;
    s.quant_min_override = -4;
    s.Validate("t");
  });
  add("QuantSpec::Validate", "quant_min_override >= quant_max_override", IA, "quant_m", [] {
    QuantSpec s;
    s.quant_min_override = 5;
    s.quant_max_override = 5;
    s.Validate("t");
  });
  add("QuantSpec::Validate", "override outside int32", IA, "quant_m", [] {
    QuantSpec s;
    s.quant_min_override = int64_t{-1} << 40;
    s.quant_max_override = 0;
    s.Validate("t");
  });

  // ---------------------------------------------------------------- ChooseQParams
  add("ChooseQParams", "min NaN", IA, "min", [] { Choose(kNaN, 1.0f); });
  add("ChooseQParams", "max +Inf", IA, "max", [] { Choose(0.0f, kInf); });
  add("ChooseQParams", "min -Inf", IA, "min", [] { Choose(-kInf, 0.0f); });
  add("ChooseQParams", "min > max", IA, "min", [] { Choose(1.0f, -1.0f); });
  add("ChooseQParams", "bits 0 / 1 / 17 / -1", IA, "`bits`", [] {
    for (int b : {0, 1, 17, -1}) {
      EXPECT_THROW(Choose(-1.0f, 1.0f, Bits(b)), InvalidArgument) << b;
    }
    Choose(-1.0f, 1.0f, Bits(17));
  });
  add("ChooseQParams", "all-equal (min == max == 0)", V, "scale = eps = 2^-23, zero_point 0", [] {
    const QParams q = Choose(0.0f, 0.0f);
    EXPECT_EQ(q.scale, 0x1p-23f);
    ExpectSame(0.0f, q.zero_point);
  });
  add("ChooseQParams", "denormal range", V, "scale floored at eps", [] {
    EXPECT_EQ(Choose(-kDenorm, kDenorm).scale, 0x1p-23f);
  });
  add("ChooseQParams", "FLT_MAX symmetric", V, "scale = FLT_MAX / 127.5", [] {
    EXPECT_EQ(Choose(-FLT_MAX, FLT_MAX).scale, FLT_MAX / 127.5f);
  });
  add("ChooseQParams", "[-FLT_MAX, FLT_MAX] affine (range overflows)", IA, "range", [] {
    QuantSpec s;
    s.symmetric = false;
    Choose(-FLT_MAX, FLT_MAX, s);
  });
  add("ChooseQParams", "eps NaN", IA, "eps", [] {
    QParamsRule r;
    r.eps = kNaN;
    Choose(-1.0f, 1.0f, {}, r);
  });
  add("ChooseQParams", "zero range [0, 0] under DegenerateRule::kNone, affine", IA,
      "qkit::ChooseQParams", [] {
    QuantSpec s;
    s.symmetric = false;
    QParamsRule r;
    r.degenerate = DegenerateRule::kNone;
    Choose(0.0f, 0.0f, s, r);
  });
  add("ChooseQParams (element-wise)", "one bad range of 3", IA, "min",
      [] {
        const float mn[3] = {0, kNaN, 0}, mx[3] = {1, 1, 1};
        float s[3] = {7, 7, 7}, z[3] = {7, 7, 7};
        try {
          ChooseQParams(mn, mx, 3, QuantSpec{}, QParamsRule{}, s, z);
        } catch (const InvalidArgument&) {
          EXPECT_EQ(s[0], 7.0f) << "output written before the throw";
          throw;
        }
      });

  // ---------------------------------------------------------------- ValidateQParams
  auto vq = [](float s, float z, QuantSpec spec = {}) {
    ValidateQParams(&s, &z, 1, spec, "t");
  };
  add("ValidateQParams", "scale 0", IA, "scale", [vq] { vq(0.0f, 0.0f); });
  add("ValidateQParams", "scale negative", IA, "scale", [vq] { vq(-0.5f, 0.0f); });
  add("ValidateQParams", "scale NaN", IA, "scale", [vq] { vq(kNaN, 0.0f); });
  add("ValidateQParams", "scale +Inf", IA, "scale", [vq] { vq(kInf, 0.0f); });
  add("ValidateQParams", "scale 0 under kMultiplier", V, "accepted (NVIDIA degenerate amax)",
      [vq] {
        QuantSpec s;
        s.scale_mode = ScaleMode::kMultiplier;
        vq(0.0f, 0.0f, s);
      });
  add("ValidateQParams", "zero_point 128 (int8)", IA, "zero_point", [vq] { vq(1.0f, 128.0f); });
  add("ValidateQParams", "zero_point NaN", IA, "zero_point", [vq] { vq(1.0f, kNaN); });
  add("ValidateQParams", "unsigned: null zero_point (0) accepted", V, "0 in [0, 255]", [] {
    QuantSpec s;
    s.is_signed = false;
    const float sc = 1.0f;
    ValidateQParams(&sc, nullptr, 1, s, "t");
  });

  // ---------------------------------------------------------------- FakeQuantize
  add("FakeQuantize", "empty tensor", V, "nothing written", [] {
    float s = 1.0f, z = 0.0f, out = 9.0f;
    TensorView e = TensorView::Contiguous(&out, DType::kFloat32, {0, 3});
    FakeQuantize(e, QuantSpec{}, {&s, &z, 1}, e, nullptr, Context{});
    EXPECT_EQ(out, 9.0f);
  });
  add("FakeQuantize", "0-d tensor", V, "one element", [] {
    float x = 0.74f, out = 0, s = 0.5f, z = 0;
    FakeQuantize(TensorView::Contiguous(&x, DType::kFloat32, {}), QuantSpec{}, {&s, &z, 1},
                 TensorView::Contiguous(&out, DType::kFloat32, {}), nullptr, Context{});
    EXPECT_EQ(out, 0.5f);
  });
  add("FakeQuantize", "NaN (kPropagate / kToQuantMin)", V, "NaN / (qmin - z) * s", [] {
    EXPECT_TRUE(std::isnan(Fq(kNaN)));
    QuantSpec s;
    s.nan_mode = NanMode::kToQuantMin;
    EXPECT_EQ(Fq(kNaN, s), -64.0f);
  });
  add("FakeQuantize", "NaN (kError)", IA, "`x`", [] {
    QuantSpec s;
    s.nan_mode = NanMode::kError;
    Fq(kNaN, s);
  });
  add("FakeQuantize", "+-Inf", V, "saturate to qmax / qmin", [] {
    EXPECT_EQ(Fq(kInf), 63.5f);
    EXPECT_EQ(Fq(-kInf), -64.0f);
  });
  add("FakeQuantize", "denormal", V, "+0", [] { ExpectSame(0.0f, Fq(kDenorm)); });
  add("FakeQuantize", "FLT_MAX", V, "saturates to qmax", [] { EXPECT_EQ(Fq(FLT_MAX), 63.5f); });
  add("FakeQuantize", "all-equal values", V, "all equal outputs", [] {
    std::vector<float> x(37, 1.3f), out(37);
    float s = 0.5f, z = 0;
    FakeQuantize(Vec(x), QuantSpec{}, {&s, &z, 1}, Vec(out), nullptr, Context{});
    for (float o : out) EXPECT_EQ(o, 1.5f);
  });
  add("FakeQuantize", "wrong dtype (int8 x)", IA, "`x`", [] {
    int8_t q[2] = {};
    float out[2], s = 1, z = 0;
    FakeQuantize(TensorView::Contiguous(q, DType::kInt8, {2}), QuantSpec{}, {&s, &z, 1},
                 TensorView::Vector(out, 2), nullptr, Context{});
  });
  add("FakeQuantize", "out shape mismatch", IA, "`out`", [] {
    float x[2] = {}, out[3], s = 1, z = 0;
    FakeQuantize(TensorView::Vector(x, 2), QuantSpec{}, {&s, &z, 1}, TensorView::Vector(out, 3),
                 nullptr, Context{});
  });
  add("FakeQuantize", "non-contiguous (stride 2 in, stride -1 out)", V, "element-wise as contiguous",
      [] {
        float x[4] = {0.74f, 99, -0.26f, 99}, out[2] = {}, s = 0.5f, z = 0;
        TensorView xv = TensorView::Vector(x, 2);
        xv.strides[0] = 2;
        TensorView ov = TensorView::Vector(out + 1, 2);
        ov.strides[0] = -1;
        FakeQuantize(xv, QuantSpec{}, {&s, &z, 1}, ov, nullptr, Context{});
        EXPECT_EQ(out[1], 0.5f);
        ExpectSame(-0.5f, out[0]);
      });
  add("FakeQuantize", "channel axis out of range", OOR, "axis", [] {
    float x[4] = {}, out[4], s[2] = {1, 1}, z[2] = {};
    QuantSpec spec;
    spec.layout = ParamLayout::PerChannel(2);
    FakeQuantize(TensorView::Contiguous(x, DType::kFloat32, {2, 2}), spec, {s, z, 2},
                 TensorView::Contiguous(out, DType::kFloat32, {2, 2}), nullptr, Context{});
  });
  add("FakeQuantize", "channel count mismatch (3 params, 2 channels)", IA, "qparams.count", [] {
    float x[4] = {}, out[4], s[3] = {1, 1, 1}, z[3] = {};
    QuantSpec spec;
    spec.layout = ParamLayout::PerChannel(0);
    FakeQuantize(TensorView::Contiguous(x, DType::kFloat32, {2, 2}), spec, {s, z, 3},
                 TensorView::Contiguous(out, DType::kFloat32, {2, 2}), nullptr, Context{});
  });
  add("FakeQuantize", "bits 0 / 1 / 17 / -1", IA, "`bits`", [] {
    for (int b : {0, 1, -1}) EXPECT_THROW(FqSpec(Bits(b)), InvalidArgument) << b;
    FqSpec(Bits(17));
  });
  add("FakeQuantize", "scale 0", IA, "scale", [] { Fq(1.0f, {}, 0.0f); });
  add("FakeQuantize", "scale negative", IA, "scale", [] { Fq(1.0f, {}, -1.0f); });
  add("FakeQuantize", "scale NaN", IA, "scale", [] { Fq(1.0f, {}, kNaN); });
  add("FakeQuantize", "scale denormal (no finite reciprocal, kMultiplyReciprocal)", IA, "scale",
      [] {
        QuantSpec s;
        s.scale_mode = ScaleMode::kMultiplyReciprocal;
        Fq(1.0f, s, kDenorm);
      });
  add("FakeQuantize", "zero_point outside the range", IA, "zero_point",
      [] { Fq(1.0f, {}, 0.5f, 200.0f); });
  add("FakeQuantize", "zero_point not integral (0.5)", V,
      "accepted (fake quant needs no integer codes): (clamp(round(x/s)+z) - z)*s", [] {
        EXPECT_EQ(Fq(1.0f, {}, 0.5f, 0.5f), 1.0f);
      });
  add("Quantize", "zero_point not integral (add_after_round)", IA, "zero_point", [] {
    float x = 1, s = 1, z = 0.5f;
    int8_t q;
    Quantize(TensorView::Vector(&x, 1), QuantSpec{}, {&s, &z, 1},
             TensorView::Contiguous(&q, DType::kInt8, {1}), Context{});
  });
  add("FakeQuantize", "unsigned with negative input", V, "clamps to qmin: (0 - z) * s", [] {
    QuantSpec s;
    s.is_signed = false;
    ExpectSame(0.0f, Fq(-3.0f, s));
    EXPECT_EQ(Fq(-3.0f, s, 0.5f, 2.0f), -1.0f);
  });
  add("FakeQuantize", "absurd size (2^62 x 4 elements)", IA, "shape", [] {
    float x[1] = {}, s = 1, z = 0;
    const TensorView v = TensorView::Contiguous(x, DType::kFloat32, {int64_t{1} << 62, 4});
    FakeQuantize(v, QuantSpec{}, {&s, &z, 1}, v, nullptr, Context{});
  });
  add("FakeQuantize", "null scale", IA, "scale", [] {
    float x = 1, out;
    FakeQuantize(TensorView::Vector(&x, 1), QuantSpec{}, {nullptr, nullptr, 1},
                 TensorView::Vector(&out, 1), nullptr, Context{});
  });
  add("Quantize", "NaN (kPropagate)", IA, "`x`", [] {
    float x = kNaN, s = 1, z = 0;
    int8_t q;
    Quantize(TensorView::Vector(&x, 1), QuantSpec{}, {&s, &z, 1},
             TensorView::Contiguous(&q, DType::kInt8, {1}), Context{});
  });
  add("Quantize", "q_out dtype too narrow (int8 for 16 bits)", IA, "q_out", [] {
    float x = 1, s = 1, z = 0;
    int8_t q;
    Quantize(TensorView::Vector(&x, 1), Bits(16), {&s, &z, 1},
             TensorView::Contiguous(&q, DType::kInt8, {1}), Context{});
  });
  add("Quantize", "+-Inf, FLT_MAX", V, "qmax / qmin codes", [] {
    float x[3] = {kInf, -kInf, FLT_MAX}, s = 1, z = 0;
    int8_t q[3];
    Quantize(TensorView::Vector(x, 3), QuantSpec{}, {&s, &z, 1},
             TensorView::Contiguous(q, DType::kInt8, {3}), Context{});
    EXPECT_EQ(q[0], 127);
    EXPECT_EQ(q[1], -128);
    EXPECT_EQ(q[2], 127);
  });
  add("Dequantize", "wrong dtype (float q)", IA, "`q`", [] {
    float q = 1, out, s = 1, z = 0;
    Dequantize(TensorView::Vector(&q, 1), QuantSpec{}, {&s, &z, 1}, TensorView::Vector(&out, 1),
               Context{});
  });
  add("FakeQuantizeBackwardMasked", "null mask", IA, "mask", [] {
    float dy = 1, dx;
    FakeQuantizeBackwardMasked(TensorView::Vector(&dy, 1), nullptr, TensorView::Vector(&dx, 1),
                               Context{});
  });
  add("FakeQuantizeBackwardClipped", "NaN x", V, "gradient +0", [] {
    float x = kNaN, dy = 1, dx = 7, s = 1, z = 0;
    FakeQuantizeBackwardClipped(TensorView::Vector(&dy, 1), TensorView::Vector(&x, 1),
                                QuantSpec{}, {&s, &z, 1}, TensorView::Vector(&dx, 1), Context{});
    ExpectSame(0.0f, dx);
  });

  // ---------------------------------------------------------------- observers
  static MinMaxObserver mm({ParamLayout::PerChannel(0), NonFinite::kSkip});
  static MovingAverageObserver ma([] {
    MovingAverageObserverOptions o = MovingAverageObserverOptions::Torch();
    o.layout = ParamLayout::PerChannel(0);
    return o;
  }());
  static PassiveObserver po;
  static std::vector<float> seed = {1, -2, 3, 4, 0.5f, -6};
  static bool seeded = false;
  if (!seeded) {
    mm.Observe(TensorView::Contiguous(seed.data(), DType::kFloat32, {2, 3}), Context{});
    ma.Observe(TensorView::Contiguous(seed.data(), DType::kFloat32, {2, 3}), Context{});
    const float s = 0.25f, z = 0.0f;
    po.SetQParams(&s, &z, 1);
    seeded = true;
  }
  using MMO = MinMaxObserver;
  using MAO = MovingAverageObserver;
  using PO = PassiveObserver;
  add("MinMaxObserver::Observe", "empty tensor", V, "state unchanged", [] {
    const auto before = mm.Save();
    float d = 0;
    mm.Observe(TensorView::Contiguous(&d, DType::kFloat32, {0, 3}), Context{});
    EXPECT_EQ(before, mm.Save());
  });
  add("MinMaxObserver::Observe", "all NaN / +-Inf batch (kSkip)", V,
      "ranges unchanged, nonfinite_count += 6", [] {
        const auto min_before = mm.state().min_val;
        const int64_t nf = mm.nonfinite_count();
        std::vector<float> d = {kNaN, kInf, -kInf, kNaN, kNaN, kInf};
        mm.Observe(TensorView::Contiguous(d.data(), DType::kFloat32, {2, 3}), Context{});
        EXPECT_EQ(min_before, mm.state().min_val);
        EXPECT_EQ(mm.nonfinite_count(), nf + 6);
      });
  add("MinMaxObserver::Observe", "wrong dtype (int8)", IA, "`x`", Unchanged<MMO>(&mm, [](MMO& o) {
        int8_t q[6] = {};
        o.Observe(TensorView::Contiguous(q, DType::kInt8, {2, 3}), Context{});
      }));
  add("MinMaxObserver::Observe", "channel count mismatch (3 vs 2)", IA, "slot",
      Unchanged<MMO>(&mm, [](MMO& o) {
        float d[9] = {};
        o.Observe(TensorView::Contiguous(d, DType::kFloat32, {3, 3}), Context{});
      }));
  add("MinMaxObserver::Observe", "channel axis out of range (0-d)", OOR, "axis",
      Unchanged<MMO>(&mm, [](MMO& o) {
        float d = 1;
        o.Observe(TensorView::Contiguous(&d, DType::kFloat32, {}), Context{});
      }));
  add("MinMaxObserver::Observe", "ctx.num_threads -1", IA, "num_threads",
      Unchanged<MMO>(&mm, [](MMO& o) {
        Context c;
        c.num_threads = -1;
        o.Observe(TensorView::Contiguous(seed.data(), DType::kFloat32, {2, 3}), c);
      }));
  add("MinMaxObserver::ComputeQParams", "bits 17", IA, "`bits`", [] {
    QuantSpec s = Bits(17);
    s.layout = ParamLayout::PerChannel(0);
    float sc[2] = {7, 7}, z[2] = {7, 7};
    try {
      mm.ComputeQParams(s, QParamsRule{}, sc, z);
    } catch (const Error&) {
      EXPECT_EQ(sc[0], 7.0f);
      throw;
    }
  });
  add("MinMaxObserver::ComputeQParams", "empty observer", FP, "not seen any data", [] {
    MinMaxObserver fresh;
    float s, z;
    fresh.ComputeQParams(QuantSpec{}, QParamsRule{}, &s, &z);
  });
  add("MinMaxObserver::Load", "truncated blob", DL, "", [] {
    auto b = mm.Save();
    b.pop_back();
    MinMaxObserver::Load(b.data(), b.size());
  });
  add("MinMaxObserver::Load", "flipped byte (checksum)", DL, "", [] {
    auto b = mm.Save();
    b[b.size() / 2] ^= 1;
    MinMaxObserver::Load(b.data(), b.size());
  });
  add("MinMaxObserver::Load", "empty / null blob", DL, "", [] { MinMaxObserver::Load(nullptr, 0); });
  add("MinMaxObserver::Load", "another observer's blob", DL, "qkit.PassiveObserver", [] {
    const auto b = po.Save();
    MinMaxObserver::Load(b.data(), b.size());
  });
  add("MinMaxObserver::FromJson", "malformed JSON", IA, "", [] { MinMaxObserver::FromJson("{\"min_val\": [1,"); });
  add("MinMaxObserver::FromJson", "min > max in state", IA, "min", [] {
    std::string j = MinMaxObserver().ToJson();
    MinMaxObserver o({}, MinMaxObserverState{{2.0f}, {1.0f}, {1}, 0});
  });
  add("MovingAverageObserver::Observe", "wrong dtype (int32)", IA, "`x`",
      Unchanged<MAO>(&ma, [](MAO& o) {
        int32_t q[6] = {};
        o.Observe(TensorView::Contiguous(q, DType::kInt32, {2, 3}), Context{});
      }));
  add("MovingAverageObserver::Observe", "NaN / +-Inf / denormal / FLT_MAX (kSkip)", V,
      "non-finite skipped; finite values averaged; state finite", [] {
        MovingAverageObserver o(MovingAverageObserverOptions::Torch());
        std::vector<float> d = {kNaN, kInf, kDenorm, FLT_MAX, -FLT_MAX, -kInf};
        o.Observe(Vec(d), Context{});
        o.Observe(Vec(d), Context{});
        EXPECT_EQ(o.state().min_val[0], -FLT_MAX);
        EXPECT_EQ(o.state().max_val[0], FLT_MAX);
        EXPECT_EQ(o.nonfinite_count(), 6);
      });
  add("MovingAverageObserver::Observe", "different slot count", IA, "slot",
      Unchanged<MAO>(&ma, [](MAO& o) {
        float d[4] = {};
        o.Observe(TensorView::Contiguous(d, DType::kFloat32, {4}), Context{});
      }));
  add("MovingAverageObserver (options)", "momentum NaN", IA, "momentum", [] {
    MovingAverageObserverOptions o = MovingAverageObserverOptions::Torch();
    o.momentum = kNaN;
    MovingAverageObserver x(o);
  });
  add("MovingAverageObserver (options)", "momentum 1 with Distiller", IA, "momentum", [] {
    MovingAverageObserverOptions o = MovingAverageObserverOptions::Distiller();
    o.momentum = 1.0f;
    MovingAverageObserver x(o);
  });
  add("MovingAverageObserver::Load", "truncated blob", DL, "", [] {
    auto b = ma.Save();
    b.resize(b.size() - 5);
    MovingAverageObserver::Load(b.data(), b.size());
  });
  add("MovingAverageObserver::FromJson", "empty string", IA, "", [] { MovingAverageObserver::FromJson(""); });
  add("PassiveObserver::SetQParams", "scale 0", IA, "scale", Unchanged<PO>(&po, [](PO& o) {
        const float s = 0, z = 0;
        o.SetQParams(&s, &z, 1);
      }));
  add("PassiveObserver::SetQParams", "scale NaN", IA, "scale", Unchanged<PO>(&po, [](PO& o) {
        const float s = kNaN, z = 0;
        o.SetQParams(&s, &z, 1);
      }));
  add("PassiveObserver::SetQParams", "zero_point outside the range", IA, "zero_point",
      Unchanged<PO>(&po, [](PO& o) {
        const float s = 1, z = -129;
        o.SetQParams(&s, &z, 1);
      }));
  add("PassiveObserver::SetQParams", "count 0", IA, "count", Unchanged<PO>(&po, [](PO& o) {
        const float s = 1, z = 0;
        o.SetQParams(&s, &z, 0);
      }));
  add("PassiveObserver::SetQParams", "channel count mismatch (2 vs 1)", IA, "count",
      Unchanged<PO>(&po, [](PO& o) {
        const float s[2] = {1, 1}, z[2] = {};
        o.SetQParams(s, z, 2);
      }));
  add("PassiveObserver::Observe", "wrong dtype (uint8)", IA, "`x`", [] {
    uint8_t q = 0;
    po.Observe(TensorView::Contiguous(&q, DType::kUInt8, {1}), Context{});
  });
  add("PassiveObserver::Load", "truncated blob", DL, "", [] {
    auto b = po.Save();
    b.resize(3);
    PassiveObserver::Load(b.data(), b.size());
  });

  // Regression (qparams_fuzzer, reproducer fuzz/corpus/qparams_fuzzer/
  // crash-4117a3aa_bits64_halffull_override): kHalfFullRange evaluated 1 << bits before checking
  // `bits` when a quant_min/max override made QuantSpec::Validate skip it; bits 64 (or -2) was a
  // shift out of range (UBSan). Fixed in src/qparams.cc (4d64be9); any affine or symmetric spec.
  static const char* const kRegressionLabels[] = {
      "bits 64, override [0, 259], kHalfFullRange, affine (fuzzer reproducer)",
      "bits 64, override [0, 259], kHalfFullRange, symmetric",
      "bits -2, override [0, 259], kHalfFullRange, affine",
      "bits -2, override [0, 259], kHalfFullRange, symmetric",
      "bits 17, override [0, 259], kHalfFullRange, affine",
      "bits 17, override [0, 259], kHalfFullRange, symmetric"};
  int label = 0;
  for (const int b : {64, -2, 17}) {
    for (const bool symmetric : {false, true}) {
      add("ChooseQParams", kRegressionLabels[label++], IA, "`bits`=",
          [b, symmetric] {
            QuantSpec spec;
            spec.bits = b;
            spec.is_signed = false;
            spec.symmetric = symmetric;
            spec.quant_min_override = 0;
            spec.quant_max_override = 259;
            QParamsRule rule;
            rule.divisor = SymmetricDivisor::kHalfFullRange;
            rule.eps = 5.8e-41f;
            float mn[2] = {-2.0f, -1.0f}, mx[2] = {2.0f, 1.0f}, s[2] = {-1, -1}, z[2] = {-1, -1};
            try {
              ChooseQParams(mn, mx, 2, spec, rule, s, z, "t");
            } catch (const InvalidArgument&) {
              EXPECT_EQ(s[0], -1.0f);  // nothing written
              Choose(-2.0f, 2.0f, spec, rule);
            }
          });
    }
  }

  // ---------------------------------------------------------------- HistogramObserver
  using HO = HistogramObserver;
  static HO ho = [] {
    HistogramObserverOptions o;
    o.bins = 16;
    o.upsample_rate = 4;
    HO h(o);
    std::vector<float> v = {-1.0f, 0.5f, 2.0f, 3.0f};
    h.Observe(Vec(v), Context{});
    return h;
  }();
  add("HistogramObserver (options)", "bins 0", IA, "`bins`=0", [] {
    HistogramObserverOptions o;
    o.bins = 0;
    HO h(o);
  });
  add("HistogramObserver (options)", "upsample_rate 0", IA, "`upsample_rate`=0", [] {
    HistogramObserverOptions o;
    o.upsample_rate = 0;
    HO h(o);
  });
  add("HistogramObserver::Observe", "wrong dtype (int8)", IA, "`x` has dtype int8",
      Unchanged<HO>(&ho, [](HO& o) {
        int8_t q[2] = {};
        o.Observe(TensorView::Contiguous(q, DType::kInt8, {2}), Context{});
      }));
  add("HistogramObserver::Observe", "NaN / +-Inf / denormal / FLT_MAX (skip)", V,
      "non-finite left out and counted; range covers FLT_MAX", [] {
        HO h;
        std::vector<float> v = {kNaN, kInf, -kInf, kDenorm, FLT_MAX, -1.0f};
        h.Observe(Vec(v), Context{});
        EXPECT_EQ(h.nonfinite_count(), 3);
        EXPECT_EQ(h.state().max_val[0], FLT_MAX);
        EXPECT_EQ(h.state().min_val[0], -1.0f);
      });
  add("HistogramObserver::Observe", "NaN with error_on_nonfinite", IA, "NaN", [] {
    HistogramObserverOptions o;
    o.error_on_nonfinite = true;
    static HO h(o);
    Unchanged<HO>(&h, [](HO& obs) {
      std::vector<float> v = {1.0f, kNaN};
      obs.Observe(Vec(v), Context{});
    })();
  });
  add("HistogramObserver::Observe", "empty tensor", V, "state unchanged", [] {
    HO h = ho;
    std::vector<float> v;
    h.Observe(Vec(v), Context{});
    EXPECT_EQ(h.Save(), ho.Save());
  });
  add("HistogramObserver::Observe", "all-equal values", V, "min = max, finite qparams", [] {
    HO h;
    std::vector<float> v(33, 0.25f);
    h.Observe(Vec(v), Context{});
    float s = 0, z = 0;
    h.ComputeQParams(QuantSpec{}, QParamsRule{}, &s, &z);
    EXPECT_TRUE(std::isfinite(s) && s > 0.0f && std::isfinite(z));
  });
  add("HistogramObserver::Observe", "channel count mismatch (3 vs 2)", IA, "slot",
      [] {
        HistogramObserverOptions o;
        o.layout = ParamLayout::PerChannel(0);
        o.bins = 8;
        static HO h(o);
        std::vector<float> a = {1, 2, 3, 4};
        if (h.empty()) h.Observe(TensorView::Contiguous(a.data(), DType::kFloat32, {2, 2}), Context{});
        Unchanged<HO>(&h, [](HO& obs) {
          std::vector<float> b(9, 1.0f);
          obs.Observe(TensorView::Contiguous(b.data(), DType::kFloat32, {3, 3}), Context{});
        })();
      });
  add("HistogramObserver::ComputeRange", "empty observer", FP, "", [] {
    HO h;
    float mn, mx;
    h.ComputeRange(QuantSpec{}, &mn, &mx);
  });
  add("HistogramObserver::ComputeQParams", "bits 17", IA, "`bits`=17", [] {
    float s = -1, z = -1;
    ho.ComputeQParams(Bits(17), QParamsRule{}, &s, &z);
  });
  add("HistogramObserver::Load", "truncated blob", DL, "", [] {
    auto b = ho.Save();
    b.pop_back();
    HO::Load(b.data(), b.size());
  });
  add("HistogramObserver::FromJson", "malformed JSON", IA, "JSON", [] { HO::FromJson("{\"bins\": "); });

  // ---------------------------------------------------------------- HistogramCalibrator
  using HC = HistogramCalibrator;
  static HC hc = [] {
    HistogramCalibratorOptions o;
    o.num_bins = 16;
    HC c(o);
    std::vector<float> v = {-1.0f, 0.5f, 2.0f, 3.0f};
    c.Observe(Vec(v), Context{});
    return c;
  }();
  add("HistogramCalibrator (options)", "num_bins 1", IA, "`num_bins`=1", [] {
    HistogramCalibratorOptions o;
    o.num_bins = 1;
    HC c(o);
  });
  add("HistogramCalibrator (options)", "num_bits 17", IA, "`num_bits`=17", [] {
    HistogramCalibratorOptions o;
    o.num_bits = 17;
    HC c(o);
  });
  add("HistogramCalibrator::Observe", "wrong dtype (int32)", IA, "`x` has dtype int32",
      Unchanged<HC>(&hc, [](HC& c) {
        int32_t q[2] = {};
        c.Observe(TensorView::Contiguous(q, DType::kInt32, {2}), Context{});
      }));
  add("HistogramCalibrator::Observe", "NaN / +-Inf with error_on_nonfinite", IA,
      "`error_on_nonfinite` is set", [] {
        HistogramCalibratorOptions o;
        o.error_on_nonfinite = true;
        static HC c(o);
        Unchanged<HC>(&c, [](HC& cal) {
          std::vector<float> v = {1.0f, kInf};
          cal.Observe(Vec(v), Context{});
        })();
      });
  add("HistogramCalibrator::Observe", "NaN / +-Inf / denormal (skip)", V,
      "non-finite left out and counted", [] {
        HC c;
        std::vector<float> v = {kNaN, kInf, -kInf, kDenorm, 1.0f};
        c.Observe(Vec(v), Context{});
        EXPECT_EQ(c.nonfinite_count(), 3);
      });
  add("HistogramCalibrator::Observe", "ctx.num_threads 0", IA, "`num_threads`=0",
      Unchanged<HC>(&hc, [](HC& c) {
        std::vector<float> v = {1.0f};
        Context ctx;
        ctx.num_threads = 0;
        c.Observe(Vec(v), ctx);
      }));
  add("HistogramCalibrator::ComputeAmax", "percentile 101", IA, "percentile", [] {
    hc.ComputeAmax(CalibMethod::kPercentile, 1, 128, 101.0);
  });
  add("HistogramCalibrator::ComputeAmax", "stride 0", IA, "stride", [] {
    hc.ComputeAmax(CalibMethod::kMse, 0, 0);
  });
  add("HistogramCalibrator::ComputeAmax", "unknown method", IA, "max", [] {
    hc.ComputeAmax("max");
  });
  add("HistogramCalibrator::ComputeAmax", "nothing collected", V, "nullopt (upstream None)", [] {
    EXPECT_FALSE(HC().ComputeAmax(CalibMethod::kEntropy).has_value());
  });
  add("HistogramCalibrator::Load", "flipped byte (checksum)", DL, "checksum", [] {
    auto b = hc.Save();
    b[b.size() / 2] ^= 1;
    HC::Load(b.data(), b.size());
  });
  add("HistogramCalibrator::FromJson", "malformed JSON", IA, "JSON", [] { HC::FromJson("[1, 2"); });

  // ---------------------------------------------------------------- ParseNpy / BlobReader
  add("ParseNpy", "empty input", DL, "", [] { ParseNpy(nullptr, 0, "t.npy"); });
  add("ParseNpy", "absurd shape (2^40, 2^40)", DL, "too large", [] {
    const auto b = NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", 0);
    ParseNpy(b.data(), b.size(), "t.npy");
  });
  add("ParseNpy", "truncated payload", DL, "", [] {
    const auto b = NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 15);
    ParseNpy(b.data(), b.size(), "t.npy");
  });
  add("ParseNpy", "wrong dtype ('<i8')", IA, "<i8", [] {
    const auto b = NpyBytes("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", 8);
    ParseNpy(b.data(), b.size(), "t.npy");
  });
  add("ParseNpy", "0-d and empty arrays", V, "shape () numel 1; shape (0, 3) numel 0", [] {
    auto b = NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4);
    EXPECT_EQ(ParseNpy(b.data(), b.size(), "t.npy").numel(), 1);
    b = NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 0);
    EXPECT_EQ(ParseNpy(b.data(), b.size(), "t.npy").numel(), 0);
  });
  add("BlobReader", "length prefix larger than the payload", DL, "", [] {
    BlobWriter w("k", 1);
    w.I64(int64_t{1} << 60);  // read back as an array length
    const auto b = w.Finish();
    BlobReader r(b.data(), b.size(), "k", 1, "t");
    r.F32Vector();
  });
  return rows;
}

TEST(BadInputMatrixTest, EveryRowHasItsDocumentedOutcome) {
  const std::vector<Row> rows = Matrix();
  const bool print = std::getenv("QKIT_PRINT_MATRIX") != nullptr;
  if (print) std::printf("| function | input | outcome | message names / value |\n|---|---|---|---|\n");
  for (const Row& row : rows) {
    SCOPED_TRACE(std::string(row.function) + " / " + row.input);
    Outcome got = Outcome::kValue;
    std::string what;
    try {
      row.call();
    } catch (const InvalidArgument& e) {
      got = Outcome::kInvalidArgument;
      what = e.what();
    } catch (const OutOfRange& e) {
      got = Outcome::kOutOfRange;
      what = e.what();
    } catch (const FailedPrecondition& e) {
      got = Outcome::kFailedPrecondition;
      what = e.what();
    } catch (const DataLoss& e) {
      got = Outcome::kDataLoss;
      what = e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "a non-qkit exception: " << e.what();
      continue;
    }
    EXPECT_STREQ(OutcomeName(row.outcome), OutcomeName(got)) << what;
    if (row.outcome != Outcome::kValue) {
      EXPECT_NE(what.find(row.detail), std::string::npos)
          << "message does not name `" << row.detail << "`: " << what;
    }
    if (print) {
      std::printf("| %s | %s | %s | %s |\n", row.function, row.input, OutcomeName(row.outcome),
                  row.outcome == Outcome::kValue ? row.detail : (what.empty() ? "" : what.c_str()));
    }
  }
  EXPECT_GE(rows.size(), 100u);
}

}  // namespace
}  // namespace qkit
