// FakeQuantize / Quantize / Dequantize / FakeQuantizeBackward{Masked,Clipped}: bit-exact against
// the scalar reference (tests/reference/fake_quant_ref.h) over every QuantSpec option, layouts,
// dtypes, sizes, SIMD targets and thread counts; SPEC.md golden values; argument errors.
#include "qkit/ops/fake_quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qkit/error.h"
#include "reference/fake_quant_ref.h"
#include "util/compare.h"
#include "util/seeded_rng.h"
#include "util/special_values.h"
#include "util/sweeps.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::BitwiseEqual;
using test::SameFloat;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ------------------------------------------------------------------ storage helpers
// (written here, independently of src/internal/half.h)

uint16_t F16Bits(float f) {
  const _Float16 h = static_cast<_Float16>(f);  // IEEE binary16, round to nearest-even
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float FromF16Bits(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}
uint16_t BF16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  const uint64_t rounded = static_cast<uint64_t>(u) + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}
float FromBF16Bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The float a value becomes when stored as `dtype` (floating dtypes only).
float StoredAs(DType dtype, float v) {
  switch (dtype) {
    case DType::kFloat16:
      return FromF16Bits(F16Bits(v));
    case DType::kBFloat16:
      return FromBF16Bits(BF16Bits(v));
    default:
      return v;
  }
}

enum class Layout {
  kContiguous,
  kPadded,        // row-major, every outer stride padded by one element (no dims collapse)
  kInnerStride2,  // row-major with a gap after every element (gather/scatter path)
  kTransposed,    // column-major storage
  kNegative,      // row-major, every dim flipped (negative strides)
  kBroadcast,     // dim 0 has stride 0 (inputs only)
};
const char* LayoutName(Layout l) {
  switch (l) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kPadded:
      return "padded";
    case Layout::kInnerStride2:
      return "inner_stride2";
    case Layout::kTransposed:
      return "transposed";
    case Layout::kNegative:
      return "negative";
    case Layout::kBroadcast:
      return "broadcast";
  }
  return "?";
}

// A strided tensor over exactly-sized storage of its own.
class Tensor {
 public:
  Tensor(DType dtype, std::vector<int64_t> shape, Layout layout = Layout::kContiguous)
      : shape_(std::move(shape)) {
    const int nd = static_cast<int>(shape_.size());
    view_.dtype = dtype;
    view_.ndim = nd;
    std::vector<int64_t> strides(shape_.size());
    int64_t acc = 1;
    if (layout == Layout::kTransposed) {
      for (int d = 0; d < nd; ++d) {
        strides[d] = acc;
        acc *= std::max<int64_t>(shape_[d], 1);
      }
    } else {
      const int64_t inner = layout == Layout::kInnerStride2 ? 2 : 1;
      acc = inner;
      for (int d = nd - 1; d >= 0; --d) {
        strides[d] = acc;
        acc *= std::max<int64_t>(shape_[d], 1);
        if (layout == Layout::kPadded) acc += 1;
      }
    }
    if (layout == Layout::kBroadcast && nd > 0) strides[0] = 0;
    if (layout == Layout::kNegative) {
      for (auto& s : strides) s = -s;
    }
    int64_t lo = 0, hi = 0;
    bool empty = false;
    for (int d = 0; d < nd; ++d) {
      view_.shape[d] = shape_[d];
      view_.strides[d] = strides[d];
      if (shape_[d] == 0) empty = true;
      const int64_t reach = strides[d] * (shape_[d] - 1);
      if (shape_[d] > 0) (reach < 0 ? lo : hi) += reach;
    }
    const size_t es = DTypeSize(dtype);
    const int64_t count = empty ? 0 : hi - lo + 1;
    storage_.reset(new unsigned char[std::max<int64_t>(count, 1) * es]);
    std::memset(storage_.get(), 0, std::max<int64_t>(count, 1) * es);
    view_.data = storage_.get() + (-lo) * static_cast<int64_t>(es);
  }

  const TensorView& view() const { return view_; }
  int64_t numel() const { return view_.numel(); }
  const std::vector<int64_t>& shape() const { return shape_; }

  void Set(int64_t logical, float v) {
    char* p = static_cast<char*>(view_.data) + Offset(logical) * DTypeSize(view_.dtype);
    switch (view_.dtype) {
      case DType::kFloat32:
        std::memcpy(p, &v, 4);
        break;
      case DType::kFloat16: {
        const uint16_t b = F16Bits(v);
        std::memcpy(p, &b, 2);
        break;
      }
      case DType::kBFloat16: {
        const uint16_t b = BF16Bits(v);
        std::memcpy(p, &b, 2);
        break;
      }
      default:
        FAIL() << "Set on an integer tensor";
    }
  }
  float Get(int64_t logical) const {
    const char* p = static_cast<const char*>(view_.data) + Offset(logical) * DTypeSize(view_.dtype);
    switch (view_.dtype) {
      case DType::kFloat32: {
        float v;
        std::memcpy(&v, p, 4);
        return v;
      }
      case DType::kFloat16: {
        uint16_t b;
        std::memcpy(&b, p, 2);
        return FromF16Bits(b);
      }
      case DType::kBFloat16: {
        uint16_t b;
        std::memcpy(&b, p, 2);
        return FromBF16Bits(b);
      }
      case DType::kInt8:
        return static_cast<float>(*reinterpret_cast<const int8_t*>(p));
      case DType::kUInt8:
        return static_cast<float>(*reinterpret_cast<const uint8_t*>(p));
      case DType::kInt16: {
        int16_t v;
        std::memcpy(&v, p, 2);
        return static_cast<float>(v);
      }
      case DType::kInt32: {
        int32_t v;
        std::memcpy(&v, p, 4);
        return static_cast<float>(v);
      }
    }
    return 0.0f;
  }
  void Fill(const std::vector<float>& logical) {
    for (int64_t i = 0; i < numel(); ++i) Set(i, logical[static_cast<size_t>(i)]);
  }
  std::vector<float> GetAll() const {
    std::vector<float> v(static_cast<size_t>(numel()));
    for (int64_t i = 0; i < numel(); ++i) v[static_cast<size_t>(i)] = Get(i);
    return v;
  }
  std::vector<unsigned char> RawLogical() const {  // bytes of every element, logical order
    const size_t es = DTypeSize(view_.dtype);
    std::vector<unsigned char> b(static_cast<size_t>(numel()) * es);
    for (int64_t i = 0; i < numel(); ++i) {
      std::memcpy(&b[static_cast<size_t>(i) * es],
                  static_cast<const char*>(view_.data) + Offset(i) * static_cast<int64_t>(es), es);
    }
    return b;
  }

 private:
  int64_t Offset(int64_t logical) const {
    int64_t off = 0;
    for (int d = view_.ndim - 1; d >= 0; --d) {
      off += (logical % view_.shape[d]) * view_.strides[d];
      logical /= view_.shape[d];
    }
    return off;
  }
  std::vector<int64_t> shape_;
  std::unique_ptr<unsigned char[]> storage_;
  TensorView view_;
};

struct Params {
  std::vector<float> scale, zero_point;
  bool null_zero_point = false;
  QParamsView View() const {
    return {scale.data(), null_zero_point ? nullptr : zero_point.data(),
            static_cast<int64_t>(scale.size())};
  }
  float z(int64_t slot) const {
    return null_zero_point ? 0.0f : zero_point[static_cast<size_t>(slot)];
  }
  float s(int64_t slot) const { return scale[static_cast<size_t>(slot)]; }
};

Params PerTensor(float scale, float zp = 0.0f) {
  Params p;
  p.scale = {scale};
  p.zero_point = {zp};
  return p;
}

std::string Describe(const QuantSpec& spec) {
  const char* nan = spec.nan_mode == NanMode::kPropagate    ? "propagate"
                    : spec.nan_mode == NanMode::kToQuantMin ? "to_qmin"
                                                            : "error";
  return spec.ToString() + " nan=" + nan;
}

// Random parameters for every slot of `shape` under `spec`: power-of-two steps (exact ties)
// or arbitrary ones, multipliers including 0 now and then, zero points anywhere in the range
// (non-integral ones only where `integral_zp` is false).
Params RandomParams(const QuantSpec& spec, const std::vector<int64_t>& shape, std::mt19937_64& rng,
                    bool integral_zp = false) {
  const int64_t n = ref::NumParamsRef(shape, spec.layout);
  Params p;
  p.scale.resize(static_cast<size_t>(n));
  p.zero_point.resize(static_cast<size_t>(n));
  std::uniform_int_distribution<int> pow2(-10, 3);
  std::uniform_real_distribution<float> logu(-4.0f, 1.0f);
  std::uniform_int_distribution<int> coin(0, 9);
  const int64_t qmin = spec.QuantMin(), qmax = spec.QuantMax();
  std::uniform_int_distribution<int64_t> zdist(qmin, qmax);
  for (int64_t i = 0; i < n; ++i) {
    float step = coin(rng) < 5 ? std::ldexp(1.0f, pow2(rng)) : std::pow(10.0f, logu(rng));
    float s = step;
    if (spec.scale_mode == ScaleMode::kMultiplier) {
      s = coin(rng) < 5 ? std::ldexp(1.0f, -pow2(rng)) : 1.0f / step;
      if (coin(rng) == 0) s = 0.0f;  // NVIDIA's degenerate amax
    }
    p.scale[static_cast<size_t>(i)] = s;
    // 0 when the range holds it, else quant_min (override ranges may exclude 0).
    float z = static_cast<float>(std::clamp<int64_t>(0, qmin, qmax));
    const int c = coin(rng);
    if (c < 5) {
      z = static_cast<float>(zdist(rng));
    } else if (c < 7 && !integral_zp) {
      z = std::min(static_cast<float>(zdist(rng)) + 0.5f, static_cast<float>(qmax));
    }
    p.zero_point[static_cast<size_t>(i)] = z;
  }
  return p;
}

// Inputs near and beyond the range of each element's slot: integer codes ± fractions,
// exact ties k + 0.5, ties ± one ulp, then the special values at head, middle, tail and
// randomly.
std::vector<float> RandomInputs(const QuantSpec& spec, const Params& p,
                                const std::vector<int64_t>& shape, std::mt19937_64& rng,
                                double special_p = 0.03) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<float> x(static_cast<size_t>(n));
  const double qmin = static_cast<double>(spec.QuantMin());
  const double qmax = static_cast<double>(spec.QuantMax());
  std::uniform_real_distribution<double> code(qmin - 4.0, qmax + 4.0);
  std::uniform_int_distribution<int> kind(0, 5);
  std::uniform_real_distribution<float> frac(-1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = ref::SlotRef(i, shape, spec.layout);
    const float s = p.s(slot);
    const float z = p.z(slot);
    float t = static_cast<float>(std::floor(code(rng))) - z;
    switch (kind(rng)) {
      case 0:
        t += 0.5f;
        break;
      case 1:
        t -= 0.5f;
        break;
      case 2:
        t += frac(rng);
        break;
      case 3:
        t = test::NextUp(t + 0.5f);
        break;
      case 4:
        t = test::NextDown(t + 0.5f);
        break;
      default:
        break;
    }
    float v;
    if (spec.scale_mode == ScaleMode::kMultiplier) {
      v = s == 0.0f ? t * 0.01f : t / s;
    } else {
      v = t * s;
    }
    x[static_cast<size_t>(i)] = v;
  }
  test::InjectSpecials(x, rng, special_p);
  return x;
}

// Runs FakeQuantize on x into out (nullptr: in place) and compares out and the mask with the
// reference, bit for bit.
::testing::AssertionResult CheckFakeQuant(Tensor& x, Tensor* out, const QuantSpec& spec,
                                          const Params& p, int threads, bool with_mask = true) {
  const std::vector<float> xs = x.GetAll();
  Tensor& dst = out ? *out : x;
  const int64_t n = x.numel();
  std::vector<float> want(static_cast<size_t>(n));
  std::vector<uint8_t> want_mask(static_cast<size_t>(MaskBytes(n)), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = ref::SlotRef(i, x.shape(), spec.layout);
    const float xi = xs[static_cast<size_t>(i)];
    want[static_cast<size_t>(i)] =
        StoredAs(dst.view().dtype, ref::FakeQuantRef(xi, p.s(slot), p.z(slot), spec));
    if (ref::InRangeRef(xi, p.s(slot), p.z(slot), spec)) {
      want_mask[static_cast<size_t>(i / 8)] |= static_cast<uint8_t>(1u << (i % 8));
    }
  }
  std::vector<uint8_t> mask(static_cast<size_t>(MaskBytes(n)), 0xA5);  // garbage: all overwritten
  Context ctx;
  ctx.num_threads = threads;
  FakeQuantize(x.view(), spec, p.View(), dst.view(), with_mask ? mask.data() : nullptr, ctx);
  const std::vector<float> got = dst.GetAll();
  auto r = BitwiseEqual(want.data(), got.data(), n, xs.data());
  if (!r) return r << "\n  spec: " << Describe(spec) << " n=" << n << " threads=" << threads;
  if (with_mask) {
    for (size_t b = 0; b < mask.size(); ++b) {
      if (mask[b] != want_mask[b]) {
        return ::testing::AssertionFailure()
               << "mask byte " << b << " (elements " << b * 8 << "..): expected 0x" << std::hex
               << int{want_mask[b]} << " got 0x" << int{mask[b]} << std::dec
               << "\n  spec: " << Describe(spec) << " n=" << n;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

QuantSpec SpecWith(Rounding r, ScaleMode s, ZeroPointMode z, NanMode nan) {
  QuantSpec spec;
  spec.rounding = r;
  spec.scale_mode = s;
  spec.zero_point_mode = z;
  spec.nan_mode = nan;
  return spec;
}

// The four kinds of integer range: signed, unsigned, narrow (signed), explicit override.
void ApplyRange(QuantSpec& spec, int kind, int bits, std::mt19937_64& rng) {
  spec.bits = bits;
  spec.is_signed = kind != 1;
  spec.narrow_range = kind == 2;
  if (kind == 3) {
    std::uniform_int_distribution<int64_t> lo(-300, 100);
    const int64_t qmin = lo(rng);
    spec.quant_min_override = qmin;
    spec.quant_max_override = qmin + (int64_t{1} << bits) - 1 + (bits % 2);  // odd level counts too
  }
}

class FakeQuantTest : public test::PerTargetTest {};

// ------------------------------------------------------------------ every option combination

TEST_P(FakeQuantTest, EveryOptionCombinationMatchesReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::uniform_int_distribution<int> bits_dist(2, 16);
  std::uniform_int_distribution<int64_t> count(1, 300);
  int cases = 0;
  for (Rounding r : {Rounding::kHalfToEven, Rounding::kHalfAwayFromZero, Rounding::kFloorAddHalf}) {
    for (ScaleMode s :
         {ScaleMode::kDivide, ScaleMode::kMultiplyReciprocal, ScaleMode::kMultiplier}) {
      for (ZeroPointMode z : {ZeroPointMode::kAddAfterRound, ZeroPointMode::kAddBeforeRound}) {
        for (NanMode nan : {NanMode::kPropagate, NanMode::kToQuantMin}) {
          for (int range = 0; range < 4; ++range) {
            QuantSpec spec = SpecWith(r, s, z, nan);
            ApplyRange(spec, range, bits_dist(rng), rng);
            const bool per_channel = (cases % 3) == 1;
            std::vector<int64_t> shape = {count(rng)};
            if (per_channel) {
              shape = {3, count(rng) / 3 + 1};
              spec.layout = ParamLayout::PerChannel(cases % 2 ? 0 : -1);
            }
            const Params p = RandomParams(spec, shape, rng);
            Tensor x(DType::kFloat32, shape);
            x.Fill(RandomInputs(spec, p, shape, rng, 0.05));
            Tensor out(DType::kFloat32, shape);
            ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1)) << "case " << cases;
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 3 * 3 * 2 * 2 * 4);
}

// Every bit width, with and without narrow range, at a tie-heavy power-of-two scale.
TEST_P(FakeQuantTest, EveryBitWidth) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (int bits = 2; bits <= 16; ++bits) {
    for (int kind = 0; kind < 3; ++kind) {
      QuantSpec spec;
      ApplyRange(spec, kind, bits, rng);
      spec.rounding = static_cast<Rounding>(bits % 3);
      const std::vector<int64_t> shape = {97};
      Params p;
      p.scale = {0.25f};
      p.zero_point = {static_cast<float>(kind == 1 ? (spec.QuantMax() + 1) / 2 : 0)};
      Tensor x(DType::kFloat32, shape);
      x.Fill(RandomInputs(spec, p, shape, rng));
      Tensor out(DType::kFloat32, shape);
      ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1)) << "bits=" << bits;
    }
  }
}

// ------------------------------------------------------------------ sizes, layouts, dtypes

TEST_P(FakeQuantTest, SizeSweepPerTensor) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  int k = 0;
  for (int64_t n : test::Counts(rng)) {
    QuantSpec spec;
    spec.rounding = static_cast<Rounding>(k % 3);
    spec.scale_mode = static_cast<ScaleMode>((k / 3) % 3);
    spec.nan_mode = k % 2 ? NanMode::kToQuantMin : NanMode::kPropagate;
    ++k;
    const std::vector<int64_t> shape = {n};
    const Params p = RandomParams(spec, shape, rng);
    Tensor x(DType::kFloat32, shape);
    x.Fill(RandomInputs(spec, p, shape, rng));
    Tensor out(DType::kFloat32, shape);
    const int threads = n > (int64_t{1} << 16) ? 2 : 1;
    ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, threads)) << "n=" << n;
  }
}

TEST_P(FakeQuantTest, StridedLayoutsAndDtypes) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const std::vector<std::vector<int64_t>> shapes = {{7, 9}, {3, 5, 17}, {2, 1, 33}, {65, 3}};
  for (const auto& shape : shapes) {
    for (Layout lx : {Layout::kContiguous, Layout::kPadded, Layout::kInnerStride2,
                      Layout::kTransposed, Layout::kNegative, Layout::kBroadcast}) {
      for (Layout lo :
           {Layout::kContiguous, Layout::kTransposed, Layout::kNegative, Layout::kInnerStride2}) {
        for (DType dx : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
          for (DType dout : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
            QuantSpec spec;
            spec.rounding = Rounding::kHalfAwayFromZero;
            spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
            spec.layout = ParamLayout::PerChannel(1);
            const Params p = RandomParams(spec, shape, rng);
            Tensor x(dx, shape, lx);
            x.Fill(RandomInputs(spec, p, shape, rng));
            Tensor out(dout, shape, lo);
            ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1))
                << "x " << LayoutName(lx) << " " << DTypeName(dx) << ", out " << LayoutName(lo)
                << " " << DTypeName(dout);
          }
        }
      }
    }
  }
}

TEST_P(FakeQuantTest, PerChannelAlongEveryAxis) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (int64_t c : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{1000}}) {
    const std::vector<std::vector<int64_t>> shapes = {{c, 5, 7}, {4, c, 3}, {6, c}, {2, 3, c}};
    const std::vector<int64_t> axes = {0, 1, -1, 2};
    for (size_t k = 0; k < shapes.size(); ++k) {
      for (Layout l : {Layout::kContiguous, Layout::kTransposed, Layout::kPadded}) {
        QuantSpec spec;
        spec.scale_mode = static_cast<ScaleMode>(k % 3);
        spec.rounding = static_cast<Rounding>((k + static_cast<size_t>(c)) % 3);
        spec.layout = ParamLayout::PerChannel(axes[k]);
        const Params p = RandomParams(spec, shapes[k], rng);
        Tensor x(DType::kFloat32, shapes[k], l);
        x.Fill(RandomInputs(spec, p, shapes[k], rng));
        Tensor out(DType::kFloat32, shapes[k], l);
        ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1))
            << "channels=" << c << " axis=" << axes[k] << " " << LayoutName(l);
      }
    }
  }
}

TEST_P(FakeQuantTest, PerChannelManyChunksBothThreadCounts) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  // Contiguous channels-last (periodic fast path) and channels-first, several 64K chunks,
  // ragged everywhere.
  for (const auto& [shape, axis] : std::vector<std::pair<std::vector<int64_t>, int64_t>>{
           {{4099, 37}, 1},
           {{37, 4099}, 0},
           {{1027, 3, 41}, 1},
           {{2, 70001}, 1},
           {{150, 999}, -1}}) {  // 999: a tile that is not a multiple of 16 (unaligned bits)
    QuantSpec spec;
    spec.layout = ParamLayout::PerChannel(axis);
    spec.nan_mode = NanMode::kToQuantMin;
    const Params p = RandomParams(spec, shape, rng);
    Tensor x(DType::kFloat32, shape);
    x.Fill(RandomInputs(spec, p, shape, rng));
    for (int threads : {1, 2}) {
      Tensor out(DType::kFloat32, shape);
      ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, threads)) << "axis=" << axis;
    }
  }
}

TEST_P(FakeQuantTest, PerGroupWithRaggedLastGroup) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const std::vector<std::tuple<std::vector<int64_t>, int64_t, int64_t>> cases = {
      {{4, 10}, 1, 3},  {{10, 4}, 0, 3}, {{3, 7, 5}, 1, 4}, {{2, 130}, -1, 32},
      {{5, 16}, 1, 16}, {{9}, 0, 2},     {{3, 5}, 1, 7}};
  for (const auto& [shape, axis, g] : cases) {
    for (Layout l : {Layout::kContiguous, Layout::kTransposed}) {
      QuantSpec spec;
      spec.layout = ParamLayout::PerGroup(axis, g);
      spec.is_signed = false;
      spec.bits = 4;
      const Params p = RandomParams(spec, shape, rng);
      Tensor x(DType::kFloat32, shape, l);
      x.Fill(RandomInputs(spec, p, shape, rng));
      Tensor out(DType::kFloat32, shape, l);
      ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1))
          << "axis=" << axis << " group=" << g << " " << LayoutName(l);
    }
  }
}

TEST_P(FakeQuantTest, InPlace) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (Layout l : {Layout::kContiguous, Layout::kNegative, Layout::kInnerStride2}) {
      for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{1000}, (int64_t{1} << 16) + 5}) {
        QuantSpec spec;
        spec.rounding = Rounding::kFloorAddHalf;
        const std::vector<int64_t> shape = {n};
        const Params p = RandomParams(spec, shape, rng);
        Tensor x(dt, shape, l);
        x.Fill(RandomInputs(spec, p, shape, rng));
        ASSERT_TRUE(CheckFakeQuant(x, nullptr, spec, p, 2)) << DTypeName(dt) << " n=" << n;
      }
    }
  }
}

TEST_P(FakeQuantTest, NullZeroPointMeansZero) {
  auto rng = test::MakeRng();
  QuantSpec spec;
  spec.layout = ParamLayout::PerChannel(0);
  const std::vector<int64_t> shape = {3, 50};
  Params p = RandomParams(spec, shape, rng);
  p.null_zero_point = true;
  Tensor x(DType::kFloat32, shape);
  x.Fill(RandomInputs(spec, p, shape, rng));
  Tensor out(DType::kFloat32, shape);
  EXPECT_TRUE(CheckFakeQuant(x, &out, spec, p, 1));
}

// A -0.0 zero point counts as +0: codes are integers, never -0, in both placements; and small
// negative inputs (code -0 before normalisation) give +0 outputs.
TEST_P(FakeQuantTest, NegativeZeroZeroPoint) {
  for (ZeroPointMode zm : {ZeroPointMode::kAddAfterRound, ZeroPointMode::kAddBeforeRound}) {
    for (Rounding r :
         {Rounding::kHalfToEven, Rounding::kHalfAwayFromZero, Rounding::kFloorAddHalf}) {
      QuantSpec spec;
      spec.zero_point_mode = zm;
      spec.rounding = r;
      const Params p = PerTensor(0.5f, -0.0f);
      const std::vector<float> xs = {-0.0f, 0.0f, -0.1f, 0.1f, -0.2f, -1e-30f, -0.25f, 3.0f};
      Tensor x(DType::kFloat32, {static_cast<int64_t>(xs.size())});
      x.Fill(xs);
      Tensor out(DType::kFloat32, x.shape());
      ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1));
      for (int64_t i = 0; i < 6; ++i) {
        EXPECT_TRUE(SameFloat(out.Get(i), 0.0f)) << "x=" << xs[static_cast<size_t>(i)];
      }
    }
  }
}

// Every special value against every option, at every position of a vector (head, body, tail).
TEST_P(FakeQuantTest, SpecialValuesEverywhere) {
  const auto sv = test::SpecialValues();
  for (Rounding r : {Rounding::kHalfToEven, Rounding::kHalfAwayFromZero, Rounding::kFloorAddHalf}) {
    for (ScaleMode s :
         {ScaleMode::kDivide, ScaleMode::kMultiplyReciprocal, ScaleMode::kMultiplier}) {
      for (NanMode nan : {NanMode::kPropagate, NanMode::kToQuantMin}) {
        for (float scale : {1.0f, 0.5f, 3e-3f, 1e-38f, 1e30f, 0.0f}) {
          if (scale == 0.0f && s != ScaleMode::kMultiplier) continue;
          if (scale == 1e-38f && s == ScaleMode::kMultiplyReciprocal) continue;  // 1/s = inf
          QuantSpec spec = SpecWith(r, s, ZeroPointMode::kAddBeforeRound, nan);
          spec.is_signed = false;
          const std::vector<int64_t> shape = {static_cast<int64_t>(sv.size()) * 3 + 1};
          Params p;
          p.scale = {scale};
          p.zero_point = {128.0f};
          std::vector<float> xs(static_cast<size_t>(shape[0]));
          for (size_t i = 0; i < xs.size(); ++i) xs[i] = sv[(i * 7) % sv.size()];
          Tensor x(DType::kFloat32, shape);
          x.Fill(xs);
          Tensor out(DType::kFloat32, shape);
          ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1)) << "scale=" << scale;
        }
      }
    }
  }
}

// ------------------------------------------------------------------ the bit-packed mask

TEST_P(FakeQuantTest, MaskBitsWithUnalignedRuns) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  // Transposed views give runs of 1..few elements starting at arbitrary bit offsets.
  const std::vector<std::vector<int64_t>> shapes = {{5, 3},  {3, 5},    {13, 7},      {7, 13, 3},
                                                    {1, 9},  {9, 1},    {33, 65},     {100, 11},
                                                    {2, 64}, {64, 129}, {3, 21845, 2}};
  for (const auto& shape : shapes) {
    for (Layout l : {Layout::kTransposed, Layout::kPadded, Layout::kContiguous}) {
      QuantSpec spec;
      spec.bits = 3;  // small range: about half the elements are out of range
      const Params p = RandomParams(spec, shape, rng);
      Tensor x(DType::kFloat32, shape, l);
      x.Fill(RandomInputs(spec, p, shape, rng));
      Tensor out(DType::kFloat32, shape);
      ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 2)) << LayoutName(l);
    }
  }
}

// ------------------------------------------------------------------ Quantize / Dequantize

TEST_P(FakeQuantTest, QuantizeDequantizeRoundTrip) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  struct Case {
    int bits;
    bool is_signed;
    DType dtype;
  };
  const std::vector<Case> cases = {{8, true, DType::kInt8},   {8, false, DType::kUInt8},
                                   {4, true, DType::kInt8},   {12, false, DType::kInt16},
                                   {16, true, DType::kInt16}, {16, false, DType::kInt32},
                                   {2, true, DType::kInt32},  {7, false, DType::kUInt8}};
  int k = 0;
  for (const Case& c : cases) {
    for (Layout l : {Layout::kContiguous, Layout::kTransposed}) {
      QuantSpec spec;
      spec.bits = c.bits;
      spec.is_signed = c.is_signed;
      spec.rounding = static_cast<Rounding>(k % 3);
      spec.scale_mode = static_cast<ScaleMode>((k / 3) % 3);
      spec.zero_point_mode = static_cast<ZeroPointMode>(k % 2);
      spec.nan_mode = NanMode::kToQuantMin;
      spec.layout = ParamLayout::PerChannel(k % 2);
      ++k;
      const std::vector<int64_t> shape = {5, 203};
      // Integer codes need an integral zero point when it is added after rounding.
      const Params p = RandomParams(spec, shape, rng, /*integral_zp=*/true);
      Tensor x(DType::kFloat32, shape, l);
      x.Fill(RandomInputs(spec, p, shape, rng));
      const std::vector<float> xs = x.GetAll();
      Tensor q(c.dtype, shape, l);
      Context ctx;
      Quantize(x.view(), spec, p.View(), q.view(), ctx);
      const std::vector<float> codes = q.GetAll();
      Tensor back(DType::kFloat32, shape);
      Dequantize(q.view(), spec, p.View(), back.view(), ctx);
      Tensor fq(DType::kFloat32, shape);
      FakeQuantize(x.view(), spec, p.View(), fq.view(), nullptr, ctx);
      std::vector<float> want_codes(xs.size()), want_back(xs.size());
      for (size_t i = 0; i < xs.size(); ++i) {
        const int64_t slot = ref::SlotRef(static_cast<int64_t>(i), shape, spec.layout);
        want_codes[i] = ref::CodeRef(xs[i], p.s(slot), p.z(slot), spec);
        want_back[i] = ref::DequantRef(want_codes[i], p.s(slot), p.z(slot), spec.scale_mode);
      }
      ASSERT_TRUE(BitwiseEqual(want_codes.data(), codes.data(), q.numel(), xs.data()))
          << Describe(spec) << " " << DTypeName(c.dtype);
      ASSERT_TRUE(BitwiseEqual(want_back.data(), back.GetAll().data(), q.numel()));
      // Quantize + Dequantize is exactly FakeQuantize (NaN -> quant_min here).
      ASSERT_TRUE(BitwiseEqual(fq.GetAll().data(), back.GetAll().data(), q.numel()));
    }
  }
}

// QuantSpec::allow_zero_point_outside_range: integral zero points beyond either end of the range
// (OneFlow's affine zero point with b < 8 bits, SPEC §2.2 / §2.4). The reference formula never
// assumed z inside [qmin, qmax]; fake quant, mask, quantize and dequantize agree with it.
TEST_P(FakeQuantTest, ZeroPointOutsideRangeMatchesReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::uniform_int_distribution<int> bits_dist(2, 8);
  std::uniform_int_distribution<int> beyond(1, 300);
  std::uniform_int_distribution<int> coin(0, 1);
  int cases = 0;
  for (ScaleMode s : {ScaleMode::kDivide, ScaleMode::kMultiplyReciprocal, ScaleMode::kMultiplier}) {
    for (ZeroPointMode zm : {ZeroPointMode::kAddAfterRound, ZeroPointMode::kAddBeforeRound}) {
      for (int per_channel = 0; per_channel < 2; ++per_channel) {
        QuantSpec spec;
        spec.bits = bits_dist(rng);
        spec.is_signed = cases % 3 == 0;
        spec.rounding = static_cast<Rounding>(cases % 3);
        spec.scale_mode = s;
        spec.zero_point_mode = zm;
        spec.nan_mode = NanMode::kToQuantMin;
        spec.allow_zero_point_outside_range = true;
        std::vector<int64_t> shape = {150};
        if (per_channel) {
          shape = {4, 37};
          spec.layout = ParamLayout::PerChannel(cases % 2 ? 0 : 1);
        }
        Params p = RandomParams(spec, shape, rng, /*integral_zp=*/true);
        const float qmin = static_cast<float>(spec.QuantMin());
        const float qmax = static_cast<float>(spec.QuantMax());
        for (size_t i = 0; i < p.zero_point.size(); ++i) {
          if (i % 4 != 3) {  // most slots outside, some inside
            p.zero_point[i] = coin(rng) ? qmax + static_cast<float>(beyond(rng))
                                        : qmin - static_cast<float>(beyond(rng));
          }
        }
        Tensor x(DType::kFloat32, shape);
        x.Fill(RandomInputs(spec, p, shape, rng, 0.05));
        Tensor out(DType::kFloat32, shape);
        ASSERT_TRUE(CheckFakeQuant(x, &out, spec, p, 1)) << "case " << cases;
        const std::vector<float> xs = x.GetAll();
        Tensor q(DType::kInt32, shape);
        Quantize(x.view(), spec, p.View(), q.view(), Context{});
        Tensor back(DType::kFloat32, shape);
        Dequantize(q.view(), spec, p.View(), back.view(), Context{});
        std::vector<float> want_codes(xs.size()), want_back(xs.size());
        for (size_t i = 0; i < xs.size(); ++i) {
          const int64_t slot = ref::SlotRef(static_cast<int64_t>(i), shape, spec.layout);
          want_codes[i] = ref::CodeRef(xs[i], p.s(slot), p.z(slot), spec);
          want_back[i] = ref::DequantRef(want_codes[i], p.s(slot), p.z(slot), spec.scale_mode);
        }
        ASSERT_TRUE(BitwiseEqual(want_codes.data(), q.GetAll().data(), q.numel(), xs.data()))
            << Describe(spec);
        ASSERT_TRUE(BitwiseEqual(want_back.data(), back.GetAll().data(), q.numel()))
            << Describe(spec);
        ASSERT_TRUE(BitwiseEqual(out.GetAll().data(), back.GetAll().data(), q.numel()));
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 12);
}

TEST_P(FakeQuantTest, QuantizeNaNHandling) {
  QuantSpec spec;
  const std::vector<int64_t> shape = {40};
  Params p;
  p.scale = {0.5f};
  p.zero_point = {3.0f};
  Tensor x(DType::kFloat32, shape);
  std::vector<float> xs(40, 1.0f);
  xs[37] = kNaN;
  x.Fill(xs);
  Tensor q(DType::kInt8, shape);
  Context ctx;
  for (NanMode m : {NanMode::kPropagate, NanMode::kError}) {
    spec.nan_mode = m;
    try {
      Quantize(x.view(), spec, p.View(), q.view(), ctx);
      FAIL() << "NaN accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("qkit::Quantize"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("index 37"), std::string::npos) << e.what();
    }
  }
  spec.nan_mode = NanMode::kToQuantMin;
  Quantize(x.view(), spec, p.View(), q.view(), ctx);
  EXPECT_EQ(q.Get(37), -128.0f);  // NaN -> quant_min
  EXPECT_EQ(q.Get(0), 5.0f);      // RNE(1 / 0.5) + 3
  // Dequantize of quant_min: (-128 - 3) * 0.5.
  Tensor back(DType::kFloat32, shape);
  Dequantize(q.view(), spec, p.View(), back.view(), ctx);
  EXPECT_EQ(back.Get(37), -65.5f);
  // Float32 codes keep NaN under kPropagate (OneFlow's Quantization, Distiller's
  // linear_quantize), store quant_min under kToQuantMin, and throw under kError.
  Tensor f(DType::kFloat32, shape);
  spec.nan_mode = NanMode::kPropagate;
  Quantize(x.view(), spec, p.View(), f.view(), ctx);
  EXPECT_TRUE(std::isnan(f.Get(37)));
  EXPECT_EQ(f.Get(0), 5.0f);
  EXPECT_EQ(f.Get(39), 5.0f);
  spec.nan_mode = NanMode::kToQuantMin;
  Quantize(x.view(), spec, p.View(), f.view(), ctx);
  EXPECT_EQ(f.Get(37), -128.0f);
  spec.nan_mode = NanMode::kError;
  EXPECT_THROW(Quantize(x.view(), spec, p.View(), f.view(), ctx), InvalidArgument);
  // In place (q_out is x itself): the same codes, NaN kept.
  spec.nan_mode = NanMode::kPropagate;
  Tensor y(DType::kFloat32, shape);
  y.Fill(xs);
  Quantize(y.view(), spec, p.View(), y.view(), ctx);
  EXPECT_TRUE(std::isnan(y.Get(37)));
  EXPECT_EQ(y.Get(1), 5.0f);
  // float16 codes are not offered.
  Tensor h(DType::kFloat16, shape);
  EXPECT_THROW(Quantize(x.view(), spec, p.View(), h.view(), ctx), InvalidArgument);
}

// Float32 codes of random inputs equal the reference codes (and the int32 ones) bit for bit,
// for every option, per tensor and per channel, strided, with NaN kept under kPropagate.
TEST_P(FakeQuantTest, QuantizeToFloatCodesMatchesReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  int k = 0;
  for (ScaleMode s : {ScaleMode::kDivide, ScaleMode::kMultiplyReciprocal, ScaleMode::kMultiplier}) {
    for (ZeroPointMode zm : {ZeroPointMode::kAddAfterRound, ZeroPointMode::kAddBeforeRound}) {
      for (Layout l : {Layout::kContiguous, Layout::kTransposed}) {
        QuantSpec spec;
        ApplyRange(spec, k % 4, 2 + (k * 5) % 15, rng);
        spec.rounding = static_cast<Rounding>(k % 3);
        spec.scale_mode = s;
        spec.zero_point_mode = zm;
        spec.nan_mode = k % 2 ? NanMode::kPropagate : NanMode::kToQuantMin;
        spec.layout = k % 3 ? ParamLayout::PerChannel(k % 2) : ParamLayout::PerTensor();
        ++k;
        const std::vector<int64_t> shape = {6, 77};
        const Params p = RandomParams(spec, shape, rng,
                                      zm == ZeroPointMode::kAddAfterRound);
        Tensor x(DType::kFloat32, shape, l);
        x.Fill(RandomInputs(spec, p, shape, rng, 0.05));
        const std::vector<float> xs = x.GetAll();
        Tensor f(DType::kFloat32, shape, l);
        Quantize(x.view(), spec, p.View(), f.view(), Context{});
        std::vector<float> want(xs.size());
        for (size_t i = 0; i < xs.size(); ++i) {
          const int64_t slot = ref::SlotRef(static_cast<int64_t>(i), shape, spec.layout);
          want[i] = std::isnan(xs[i]) && spec.nan_mode == NanMode::kPropagate
                        ? xs[i]
                        : ref::CodeRef(xs[i], p.s(slot), p.z(slot), spec);
        }
        ASSERT_TRUE(BitwiseEqual(want.data(), f.GetAll().data(), f.numel(), xs.data()))
            << Describe(spec);
      }
    }
  }
}

TEST_P(FakeQuantTest, QuantizeSaturatesInfinities) {
  QuantSpec spec;
  spec.is_signed = false;
  Params p;
  p.scale = {0.1f};
  p.zero_point = {10.0f};
  Tensor x(DType::kFloat32, {4});
  x.Fill({kInf, -kInf, FLT_MAX, -FLT_MAX});
  Tensor q(DType::kUInt8, {4});
  Quantize(x.view(), spec, p.View(), q.view(), Context{});
  EXPECT_EQ(q.GetAll(), (std::vector<float>{255, 0, 255, 0}));
}

// Dequantize alone: strided / negative-stride integer codes of every dtype, every scale mode
// (m == 0 divides by 1), per group, float16 / bfloat16 outputs.
TEST_P(FakeQuantTest, DequantizeLayoutsAndModes) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  int k = 0;
  for (DType qt : {DType::kInt8, DType::kUInt8, DType::kInt16, DType::kInt32}) {
    for (Layout l : {Layout::kContiguous, Layout::kNegative, Layout::kInnerStride2}) {
      for (DType ot : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        QuantSpec spec;
        spec.bits = qt == DType::kInt8 || qt == DType::kUInt8 ? 8 : 16;
        spec.is_signed = qt != DType::kUInt8;
        spec.scale_mode = static_cast<ScaleMode>(k % 3);
        spec.layout = k % 2 ? ParamLayout::PerGroup(1, 5) : ParamLayout::PerChannel(0);
        ++k;
        const std::vector<int64_t> shape = {3, 37};
        const Params p = RandomParams(spec, shape, rng);
        Tensor q(qt, shape, l);
        std::uniform_int_distribution<int64_t> code(spec.QuantMin(), spec.QuantMax());
        std::vector<float> codes(static_cast<size_t>(q.numel()));
        for (int64_t i = 0; i < q.numel(); ++i) {
          const int64_t c = code(rng);
          codes[static_cast<size_t>(i)] = static_cast<float>(c);
          void* base = q.view().data;
          const int64_t off = (i % 37) * q.view().strides[1] + (i / 37) * q.view().strides[0];
          switch (qt) {
            case DType::kInt8:
              static_cast<int8_t*>(base)[off] = static_cast<int8_t>(c);
              break;
            case DType::kUInt8:
              static_cast<uint8_t*>(base)[off] = static_cast<uint8_t>(c);
              break;
            case DType::kInt16:
              static_cast<int16_t*>(base)[off] = static_cast<int16_t>(c);
              break;
            default:
              static_cast<int32_t*>(base)[off] = static_cast<int32_t>(c);
              break;
          }
        }
        ASSERT_EQ(q.GetAll(), codes);
        Tensor out(ot, shape, l);
        Dequantize(q.view(), spec, p.View(), out.view(), Context{});
        std::vector<float> want(codes.size());
        for (size_t i = 0; i < codes.size(); ++i) {
          const int64_t slot = ref::SlotRef(static_cast<int64_t>(i), shape, spec.layout);
          want[i] = StoredAs(ot, ref::DequantRef(codes[i], p.s(slot), p.z(slot), spec.scale_mode));
        }
        ASSERT_TRUE(BitwiseEqual(want.data(), out.GetAll().data(), out.numel(), codes.data()))
            << DTypeName(qt) << " -> " << DTypeName(ot) << " " << Describe(spec);
      }
    }
  }
}

// ------------------------------------------------------------------ backward

TEST_P(FakeQuantTest, BackwardMaskedAndClippedMatchReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::normal_distribution<float> g(0.0f, 1.0f);
  const std::vector<std::vector<int64_t>> shapes = {
      {1}, {17}, {64}, {200}, {5, 3}, {13, 7}, {3, 21845, 2}, {1000, 3}, {(1 << 16) * 2 + 5}};
  int k = 0;
  for (const auto& shape : shapes) {
    for (Layout l : {Layout::kContiguous, Layout::kTransposed, Layout::kNegative}) {
      QuantSpec spec;
      spec.bits = 4;
      spec.rounding = static_cast<Rounding>(k % 3);
      spec.scale_mode = static_cast<ScaleMode>((k / 3) % 3);
      spec.zero_point_mode = static_cast<ZeroPointMode>(k % 2);
      spec.layout = shape.size() > 1 ? ParamLayout::PerChannel(1) : ParamLayout::PerTensor();
      ++k;
      const Params p = RandomParams(spec, shape, rng);
      Tensor x(DType::kFloat32, shape, l);
      x.Fill(RandomInputs(spec, p, shape, rng));
      const std::vector<float> xs = x.GetAll();
      Tensor dy(DType::kFloat32, shape, l);
      std::vector<float> dys(xs.size());
      for (auto& v : dys) v = g(rng);
      test::InjectSpecials(dys, rng);
      dy.Fill(dys);
      const int64_t n = x.numel();
      std::vector<float> want(xs.size());
      for (size_t i = 0; i < xs.size(); ++i) {
        const int64_t slot = ref::SlotRef(static_cast<int64_t>(i), shape, spec.layout);
        want[i] = ref::ClippedGradRef(dys[i], ref::InRangeRef(xs[i], p.s(slot), p.z(slot), spec));
      }
      Context ctx;
      ctx.num_threads = 2;
      // Clipped (recomputes the mask).
      Tensor dx(DType::kFloat32, shape);
      FakeQuantizeBackwardClipped(dy.view(), x.view(), spec, p.View(), dx.view(), ctx);
      ASSERT_TRUE(BitwiseEqual(want.data(), dx.GetAll().data(), n, dys.data()))
          << "clipped " << LayoutName(l) << " " << Describe(spec);
      // Masked, from FakeQuantize's mask, out of place and in place.
      std::vector<uint8_t> mask(static_cast<size_t>(MaskBytes(n)));
      Tensor out(DType::kFloat32, shape);
      FakeQuantize(x.view(), spec, p.View(), out.view(), mask.data(), ctx);
      Tensor dx2(DType::kFloat32, shape, l);
      FakeQuantizeBackwardMasked(dy.view(), mask.data(), dx2.view(), ctx);
      ASSERT_TRUE(BitwiseEqual(want.data(), dx2.GetAll().data(), n, dys.data()))
          << "masked " << LayoutName(l);
      FakeQuantizeBackwardMasked(dy.view(), mask.data(), dy.view(), ctx);
      ASSERT_TRUE(BitwiseEqual(want.data(), dy.GetAll().data(), n, dys.data()))
          << "masked in place " << LayoutName(l);
    }
  }
}

// Backward with float16 / bfloat16 gradients, a broadcast dy and a strided dx.
TEST_P(FakeQuantTest, BackwardHalfPrecisionAndBroadcast) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  std::normal_distribution<float> g(0.0f, 1.0f);
  const std::vector<int64_t> shape = {6, 45};
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    for (Layout ldy : {Layout::kBroadcast, Layout::kTransposed, Layout::kInnerStride2}) {
      QuantSpec spec;
      spec.bits = 3;
      spec.layout = ParamLayout::PerGroup(1, 8);
      const Params p = RandomParams(spec, shape, rng);
      Tensor x(dt, shape, Layout::kNegative);
      x.Fill(RandomInputs(spec, p, shape, rng));
      const std::vector<float> xs = x.GetAll();
      Tensor dy(dt, shape, ldy);
      std::vector<float> dys(xs.size());
      for (auto& v : dys) v = g(rng);
      dy.Fill(dys);
      dys = dy.GetAll();  // what the (possibly broadcast, rounded) view holds
      std::vector<float> want(xs.size());
      for (size_t i = 0; i < xs.size(); ++i) {
        const int64_t slot = ref::SlotRef(static_cast<int64_t>(i), shape, spec.layout);
        want[i] = ref::ClippedGradRef(dys[i], ref::InRangeRef(xs[i], p.s(slot), p.z(slot), spec));
      }
      Tensor dx(dt, shape, Layout::kInnerStride2);
      FakeQuantizeBackwardClipped(dy.view(), x.view(), spec, p.View(), dx.view(), Context{});
      ASSERT_TRUE(BitwiseEqual(want.data(), dx.GetAll().data(), dx.numel()))
          << "clipped " << DTypeName(dt) << " dy " << LayoutName(ldy);
      std::vector<uint8_t> mask(static_cast<size_t>(MaskBytes(x.numel())));
      Tensor fq(dt, shape);
      FakeQuantize(x.view(), spec, p.View(), fq.view(), mask.data(), Context{});
      Tensor dx2(dt, shape, Layout::kTransposed);
      FakeQuantizeBackwardMasked(dy.view(), mask.data(), dx2.view(), Context{});
      ASSERT_TRUE(BitwiseEqual(want.data(), dx2.GetAll().data(), dx2.numel()))
          << "masked " << DTypeName(dt) << " dy " << LayoutName(ldy);
    }
  }
}

// ------------------------------------------------------------------ determinism

// The same inputs under every target and 1 / 2 threads give the same bytes (outputs and masks),
// NaN payloads included.
TEST(FakeQuantDeterminism, IdenticalAcrossTargetsAndThreads) {
  auto rng = test::MakeRng();
  const std::vector<int64_t> shape = {3, (int64_t{1} << 16) + 77};
  struct Variant {
    QuantSpec spec;
    Layout layout;
  };
  std::vector<Variant> variants;
  for (int k = 0; k < 6; ++k) {
    QuantSpec spec;
    spec.rounding = static_cast<Rounding>(k % 3);
    spec.scale_mode = static_cast<ScaleMode>(k / 2);
    spec.zero_point_mode = static_cast<ZeroPointMode>(k % 2);
    spec.nan_mode = k % 2 ? NanMode::kToQuantMin : NanMode::kPropagate;
    spec.layout = k < 3 ? ParamLayout::PerChannel(0) : ParamLayout::PerTensor();
    variants.push_back({spec, k % 3 == 2 ? Layout::kTransposed : Layout::kContiguous});
  }
  for (const Variant& v : variants) {
    const Params p = RandomParams(v.spec, shape, rng);
    Tensor x(DType::kFloat32, shape, v.layout);
    x.Fill(RandomInputs(v.spec, p, shape, rng, 0.1));
    std::vector<unsigned char> first_out;
    std::vector<uint8_t> first_mask;
    std::string first;
    for (const std::string& target : AvailableTargets()) {
      ForceTarget(target);
      for (int threads : {1, 2}) {
        Tensor out(DType::kFloat32, shape);
        std::vector<uint8_t> mask(static_cast<size_t>(MaskBytes(x.numel())), 0xFF);
        Context ctx;
        ctx.num_threads = threads;
        FakeQuantize(x.view(), v.spec, p.View(), out.view(), mask.data(), ctx);
        const auto bytes = out.RawLogical();
        if (first.empty()) {
          first = target + "/" + std::to_string(threads);
          first_out = bytes;
          first_mask = mask;
          continue;
        }
        EXPECT_TRUE(bytes == first_out)
            << target << "/" << threads << " vs " << first << " " << Describe(v.spec);
        EXPECT_TRUE(mask == first_mask) << target << "/" << threads << " vs " << first;
      }
    }
    ForceTarget("");
  }
}

// Outputs larger than the streaming threshold take the non-temporal store path; results must
// not change (aligned and unaligned destinations, per tensor and channels-last).
TEST(FakeQuantLarge, StreamingStoresMatchReference) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const int64_t n = (int64_t{1} << 22) + 64 * 3 + 5;  // > 16 MiB of float32
  QuantSpec spec;
  const std::vector<int64_t> shape = {n};
  const Params p = RandomParams(spec, shape, rng);
  Tensor x(DType::kFloat32, shape);
  x.Fill(RandomInputs(spec, p, shape, rng, 0.001));
  Tensor out(DType::kFloat32, shape);
  EXPECT_TRUE(CheckFakeQuant(x, &out, spec, p, 2));
  // Unaligned destination: the same tensor shifted by one element.
  Tensor wide(DType::kFloat32, {n + 1});
  TensorView shifted = wide.view();
  shifted.data = static_cast<float*>(shifted.data) + 1;
  shifted.shape[0] = n;
  std::vector<uint8_t> mask(static_cast<size_t>(MaskBytes(n)));
  FakeQuantize(x.view(), spec, p.View(), shifted, mask.data(), Context{});
  for (int64_t i = 0; i < n; i += 4099) {
    ASSERT_TRUE(SameFloat(out.Get(i), static_cast<const float*>(shifted.data)[i])) << i;
  }
  // Masked backward into a large buffer (streamed), against the clipped one.
  Tensor dy(DType::kFloat32, shape);
  dy.Fill(RandomInputs(spec, p, shape, rng, 0.01));
  Tensor dx1(DType::kFloat32, shape), dx2(DType::kFloat32, shape);
  FakeQuantizeBackwardMasked(dy.view(), mask.data(), dx1.view(), Context{2});
  FakeQuantizeBackwardClipped(dy.view(), x.view(), spec, p.View(), dx2.view(), Context{1});
  EXPECT_TRUE(dx1.RawLogical() == dx2.RawLogical());
  // Channels-last, periodic path, streamed.
  QuantSpec pc;
  pc.layout = ParamLayout::PerChannel(1);
  const std::vector<int64_t> shape2 = {n / 64, 64};
  const Params p2 = RandomParams(pc, shape2, rng);
  Tensor x2(DType::kFloat32, shape2);
  x2.Fill(RandomInputs(pc, p2, shape2, rng, 0.001));
  Tensor out2(DType::kFloat32, shape2);
  EXPECT_TRUE(CheckFakeQuant(x2, &out2, pc, p2, 2));
}

// ------------------------------------------------------------------ golden values

// Codes from Quantize into int32 for a float32 vector.
std::vector<float> Codes(const std::vector<float>& xs, const QuantSpec& spec, const Params& p) {
  Tensor x(DType::kFloat32, {static_cast<int64_t>(xs.size())});
  x.Fill(xs);
  Tensor q(DType::kInt32, {static_cast<int64_t>(xs.size())});
  Quantize(x.view(), spec, p.View(), q.view(), Context{});
  return q.GetAll();
}

std::vector<float> Fake(const std::vector<float>& xs, const QuantSpec& spec, const Params& p) {
  Tensor x(DType::kFloat32, {static_cast<int64_t>(xs.size())});
  x.Fill(xs);
  Tensor out(DType::kFloat32, {static_cast<int64_t>(xs.size())});
  FakeQuantize(x.view(), spec, p.View(), out.view(), nullptr, Context{});
  return out.GetAll();
}

// SPEC.md §10.3 / §9.1: s = 0.5, x/s in {-2.5, -1.5, -0.5, 0.5, 1.5, 2.5}.
TEST_P(FakeQuantTest, GoldenRoundingTiesSpec10_3) {
  const std::vector<float> x = {-1.25f, -0.75f, -0.25f, 0.25f, 0.75f, 1.25f};
  QuantSpec spec;
  spec.rounding = Rounding::kHalfToEven;
  EXPECT_EQ(Codes(x, spec, PerTensor(0.5f)), (std::vector<float>{-2, -2, 0, 0, 2, 2}));
  spec.rounding = Rounding::kHalfAwayFromZero;
  EXPECT_EQ(Codes(x, spec, PerTensor(0.5f)), (std::vector<float>{-3, -2, -1, 1, 2, 3}));
  spec.rounding = Rounding::kFloorAddHalf;
  EXPECT_EQ(Codes(x, spec, PerTensor(0.5f)), (std::vector<float>{-2, -1, 0, 1, 2, 3}));
  // §10.3: x/s = 0.5 - 2^-25 (0.49999997): RNE 0, RHAZ 0, RFLOOR 1 (the f32 add rounds up).
  const float just_below_half = 0.5f - std::ldexp(1.0f, -25);
  ASSERT_EQ(just_below_half, 0.49999997f);
  for (auto [r, want] :
       {std::pair{Rounding::kHalfToEven, 0.0f}, std::pair{Rounding::kHalfAwayFromZero, 0.0f},
        std::pair{Rounding::kFloorAddHalf, 1.0f}}) {
    spec.rounding = r;
    EXPECT_EQ(Codes({just_below_half, -just_below_half}, spec, PerTensor(1.0f))[0], want)
        << RoundingName(r);
    // Fake quant: code * s with s = 1.
    EXPECT_EQ(Fake({just_below_half}, spec, PerTensor(1.0f))[0], want);
  }
  // -(0.5 - 2^-25): RFLOOR gives floor(f32(-0.49999997 + 0.5)) = floor(2^-25) = 0.
  spec.rounding = Rounding::kFloorAddHalf;
  EXPECT_EQ(Codes({-just_below_half}, spec, PerTensor(1.0f))[0], 0.0f);
}

// SPEC.md §10.8 / §9.2: s = 0.1f, division vs multiplication by f32(1/s) = 10.0f.
TEST_P(FakeQuantTest, GoldenDivisionVsReciprocalSpec10_8) {
  const float a = 1.55f;                        // 1.5499999523 (x/s = 15.499999, x*10 = 15.5)
  const float b = std::nextafter(3.25f, 4.0f);  // 3.2500002384 (x/s = 32.5, x*10 = 32.500004)
  QuantSpec spec;
  spec.scale_mode = ScaleMode::kDivide;
  EXPECT_EQ(Codes({a, b}, spec, PerTensor(0.1f)), (std::vector<float>{15, 32}));
  spec.scale_mode = ScaleMode::kMultiplyReciprocal;
  EXPECT_EQ(Codes({a, b}, spec, PerTensor(0.1f)), (std::vector<float>{16, 33}));
}

// SPEC.md §10.2: x = [-1.5, -0.75, -0.2, 0, 0.1, 0.35, 0.9, 2.0] through each system, with the
// parameters the SPEC states (built here from their defining float32 expressions).
TEST_P(FakeQuantTest, GoldenSystemsSpec10_2) {
  const std::vector<float> x = {-1.5f, -0.75f, -0.2f, 0.0f, 0.1f, 0.35f, 0.9f, 2.0f};
  const std::vector<float> sym_95 = {-95, -48, -13, 0, 6, 22, 57, 127};
  const std::vector<float> sym_96 = {-96, -48, -13, 0, 6, 22, 57, 127};
  const std::vector<float> affine = {0, 54, 94, 109, 116, 134, 175, 255};
  {  // D OneFlow google symmetric: s = 2/127, RNE, x / s, [-128, 127] (kernel is not narrow).
    QuantSpec spec;
    EXPECT_EQ(Codes(x, spec, PerTensor(2.0f / 127.0f)), sym_95) << "OneFlow D";
  }
  {  // E OneFlow google affine (CPU): s = 3.5/255, zu = 109, q = RNE(x/s + zu), [0, 255].
    QuantSpec spec;
    spec.is_signed = false;
    spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
    EXPECT_EQ(Codes(x, spec, PerTensor(3.5f / 255.0f, 109.0f)), affine) << "OneFlow E";
  }
  {  // C MegEngine qint8: s = 2/127.5, RHAZ, x / s, zero point added after rounding.
    QuantSpec spec;
    spec.rounding = Rounding::kHalfAwayFromZero;
    EXPECT_EQ(Codes(x, spec, PerTensor(2.0f / 127.5f)), sym_96) << "MegEngine C";
    // C' qint8_narrow: s = 2/127, [-127, 127].
    spec.narrow_range = true;
    EXPECT_EQ(Codes(x, spec, PerTensor(2.0f / 127.0f)), sym_95) << "MegEngine C'";
  }
  {  // A PyTorch qint8 symmetric: x * f32(1/s) with s = 2/127.5 (1/s = 63.749996, so 2.0 gives
     // 127.49999 and rounds to 127 without clamping). B quint8 affine: s = 3.5/255, zp 109.
    QuantSpec spec;
    spec.scale_mode = ScaleMode::kMultiplyReciprocal;
    EXPECT_EQ(Codes(x, spec, PerTensor(2.0f / 127.5f)), sym_96) << "PyTorch A";
    spec.is_signed = false;
    EXPECT_EQ(Codes(x, spec, PerTensor(3.5f / 255.0f, 109.0f)), affine) << "PyTorch B";
  }
  {  // G NVIDIA tensor_quant: multiplier 127/amax = 63.5, RNE, narrow [-127, 127].
    QuantSpec spec;
    spec.scale_mode = ScaleMode::kMultiplier;
    spec.narrow_range = true;
    EXPECT_EQ(Codes(x, spec, PerTensor(127.0f / 2.0f)), sym_95) << "NVIDIA G";
  }
  {  // H Distiller SYMMETRIC: multiplier 127.5/amax = 63.75, RNE, no clamp (257 levels:
     // [-128, 128]); 2.0 -> 128, which dequantizes to 128 / 63.75 = 2.0078433.
    QuantSpec spec;
    spec.scale_mode = ScaleMode::kMultiplier;
    spec.quant_min_override = -128;
    spec.quant_max_override = 128;
    EXPECT_EQ(Codes(x, spec, PerTensor(127.5f / 2.0f)),
              (std::vector<float>{-96, -48, -13, 0, 6, 22, 57, 128}))
        << "Distiller H";
    EXPECT_EQ(Fake({2.0f}, spec, PerTensor(127.5f / 2.0f))[0], 2.0078433f);
  }
  {  // I Distiller ASYMMETRIC_UNSIGNED: q = RNE(scale * x - zp) with scale = 255/3.5 and
     // zp = -109: qkit's zero point is -zp = 109, added before rounding.
    QuantSpec spec;
    spec.scale_mode = ScaleMode::kMultiplier;
    spec.zero_point_mode = ZeroPointMode::kAddBeforeRound;
    spec.is_signed = false;
    EXPECT_EQ(Codes(x, spec, PerTensor(255.0f / 3.5f, 109.0f)), affine) << "Distiller I";
  }
}

// Zero multiplier (NVIDIA amax <= 2^-24): every code is the zero point, dequantized with m := 1.
TEST_P(FakeQuantTest, ZeroMultiplierGivesZeroPoint) {
  QuantSpec spec;
  spec.scale_mode = ScaleMode::kMultiplier;
  const std::vector<float> x = {1.0f, -3.0f, kInf, -kInf, 0.0f, -0.0f, FLT_MAX};
  EXPECT_EQ(Codes(x, spec, PerTensor(0.0f, 5.0f)), std::vector<float>(x.size(), 5.0f));
  EXPECT_EQ(Fake(x, spec, PerTensor(0.0f, 5.0f)), std::vector<float>(x.size(), 0.0f));
  EXPECT_TRUE(std::isnan(Fake({kNaN}, spec, PerTensor(0.0f, 5.0f))[0]));
}

// NaN: propagate gives NaN (mask 0), to_quant_min gives (qmin - z) * s (mask 0) (SPEC §9.6).
TEST_P(FakeQuantTest, NaNPolicies) {
  QuantSpec spec;
  const std::vector<float> x = {kNaN, 1.0f};
  EXPECT_TRUE(std::isnan(Fake(x, spec, PerTensor(0.5f, 2.0f))[0]));
  spec.nan_mode = NanMode::kToQuantMin;
  EXPECT_EQ(Fake(x, spec, PerTensor(0.5f, 2.0f))[0], (-128.0f - 2.0f) * 0.5f);  // PyTorch's value
  // ±Inf saturate in every mode, with mask 0.
  Tensor xi(DType::kFloat32, {2});
  xi.Fill({kInf, -kInf});
  Tensor out(DType::kFloat32, {2});
  uint8_t mask = 0xFF;
  FakeQuantize(xi.view(), spec, PerTensor(0.5f).View(), out.view(), &mask, Context{});
  EXPECT_EQ(out.GetAll(), (std::vector<float>{63.5f, -64.0f}));
  EXPECT_EQ(mask, 0);
}

// ------------------------------------------------------------------ errors

template <class E, class Fn>
void ExpectError(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning " << parts[0];
  } catch (const E& e) {
    for (const auto& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << part << "\"";
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST(FakeQuantErrors, BadParameters) {
  Tensor x(DType::kFloat32, {4});
  Tensor out(DType::kFloat32, {4});
  QuantSpec spec;
  auto fq = [&](const Params& p) {
    return [&, p] { FakeQuantize(x.view(), spec, p.View(), out.view(), nullptr, Context{}); };
  };
  ExpectError<InvalidArgument>(fq(PerTensor(0.0f)), {"qkit::FakeQuantize", "`scale[0]`=0"});
  ExpectError<InvalidArgument>(fq(PerTensor(-1.0f)), {"`scale[0]`=-1"});
  ExpectError<InvalidArgument>(fq(PerTensor(kNaN)), {"`scale[0]`=nan"});
  ExpectError<InvalidArgument>(fq(PerTensor(kInf)), {"`scale[0]`=inf"});
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, 128.0f)),
                               {"`zero_point[0]`=128", "`quant_max`=127"});
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, kNaN)), {"`zero_point[0]`=nan"});
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, -129.0f)), {"`zero_point[0]`=-129"});
  // Outside the range only with allow_zero_point_outside_range, and then integral and within
  // 2^24 of both ends (code - zero_point exact).
  spec.allow_zero_point_outside_range = true;
  EXPECT_NO_THROW(fq(PerTensor(1.0f, 200.0f))());
  EXPECT_NO_THROW(fq(PerTensor(1.0f, -16777216.0f + 127.0f))());
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, 128.5f)), {"`zero_point[0]`=128.5", "integral"});
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, -16777216.0f)),
                               {"`zero_point[0]`=-16777216", "2^24"});
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, kInf)), {"`zero_point[0]`=inf", "not finite"});
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f, kNaN)), {"`zero_point[0]`=nan"});
  EXPECT_NO_THROW(fq(PerTensor(1.0f, 3.5f))());  // inside: non-integral allowed as before
  spec = QuantSpec{};
  Params two = PerTensor(1.0f);
  two.scale.push_back(1.0f);
  two.zero_point.push_back(0.0f);
  ExpectError<InvalidArgument>(fq(two), {"`qparams.count`=2", "1 parameter slot"});
  spec.scale_mode = ScaleMode::kMultiplier;
  ExpectError<InvalidArgument>(fq(PerTensor(-0.5f)), {"`scale[0]`=-0.5", ">= 0"});
  EXPECT_NO_THROW(fq(PerTensor(0.0f))());
  spec.scale_mode = ScaleMode::kMultiplyReciprocal;
  ExpectError<InvalidArgument>(fq(PerTensor(1e-39f)), {"`scale[0]`", "reciprocal"});
  spec = QuantSpec{};
  spec.bits = 17;
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f)), {"qkit::FakeQuantize", "`bits`=17"});
  spec.bits = 1;
  ExpectError<InvalidArgument>(fq(PerTensor(1.0f)), {"`bits`=1"});
  spec = QuantSpec{};
  const QParamsView v{nullptr, nullptr, 1};
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), spec, v, out.view(), nullptr, Context{}); },
      {"`qparams.scale` is null"});
  const Params one = PerTensor(1.0f);
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), spec, one.View(), out.view(), nullptr, Context{0}); },
      {"`ctx.num_threads`=0"});
}

TEST(FakeQuantErrors, BadTensors) {
  QuantSpec spec;
  const Params p = PerTensor(1.0f);
  Tensor x(DType::kFloat32, {2, 3});
  Tensor out(DType::kFloat32, {2, 3});
  Tensor xi(DType::kInt8, {2, 3});
  Tensor out_bad_shape(DType::kFloat32, {3, 2});
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(xi.view(), spec, p.View(), out.view(), nullptr, Context{}); },
      {"qkit::FakeQuantize", "`x`", "int8"});
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), spec, p.View(), xi.view(), nullptr, Context{}); },
      {"`out`", "int8"});
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), spec, p.View(), out_bad_shape.view(), nullptr, Context{}); },
      {"`out` has shape [3, 2] but `x` has shape [2, 3]"});
  QuantSpec pc;
  pc.layout = ParamLayout::PerChannel(2);
  ExpectError<OutOfRange>(
      [&] { FakeQuantize(x.view(), pc, p.View(), out.view(), nullptr, Context{}); }, {"`axis`=2"});
  pc.layout = ParamLayout::PerChannel(-3);
  ExpectError<OutOfRange>(
      [&] { FakeQuantize(x.view(), pc, p.View(), out.view(), nullptr, Context{}); }, {"`axis`=-3"});
  pc.layout = ParamLayout::PerChannel(1);  // needs 3 parameters
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), pc, p.View(), out.view(), nullptr, Context{}); },
      {"`qparams.count`=1", "3 parameter slot"});
  // Output with a zero stride (elements sharing memory).
  Tensor bcast(DType::kFloat32, {2, 3}, Layout::kBroadcast);
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), spec, p.View(), bcast.view(), nullptr, Context{}); },
      {"`out`", "share memory"});
  // Output partially overlapping the input.
  TensorView shifted = x.view();
  shifted.data = static_cast<float*>(shifted.data) + 1;
  shifted.shape[0] = 1;
  TensorView x1 = x.view();
  x1.shape[0] = 1;
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x1, spec, p.View(), shifted, nullptr, Context{}); },
      {"`out` overlaps `x`"});
  // Quantize: a float16 output (float32 codes are allowed), and a dtype too narrow for the range.
  Tensor h16(DType::kFloat16, x.shape());
  ExpectError<InvalidArgument>([&] { Quantize(x.view(), spec, p.View(), h16.view(), Context{}); },
                               {"qkit::Quantize", "`q_out`", "float16", "float32"});
  QuantSpec u8;
  u8.is_signed = false;
  ExpectError<InvalidArgument>([&] { Quantize(x.view(), u8, p.View(), xi.view(), Context{}); },
                               {"int8", "`quant_max`=255"});
  QuantSpec half_zp;
  Params hz = PerTensor(1.0f, 0.5f);
  Tensor q32(DType::kInt32, {2, 3});
  ExpectError<InvalidArgument>(
      [&] { Quantize(x.view(), half_zp, hz.View(), q32.view(), Context{}); },
      {"`zero_point[0]`=0.5", "integral"});
  // Dequantize: float codes.
  ExpectError<InvalidArgument>([&] { Dequantize(x.view(), spec, p.View(), out.view(), Context{}); },
                               {"qkit::Dequantize", "`q`", "float32"});
  // Backward: null mask, integer dy.
  ExpectError<InvalidArgument>(
      [&] { FakeQuantizeBackwardMasked(x.view(), nullptr, out.view(), Context{}); },
      {"qkit::FakeQuantizeBackwardMasked", "`mask` is null"});
  uint8_t m = 0;
  ExpectError<InvalidArgument>(
      [&] { FakeQuantizeBackwardMasked(xi.view(), &m, out.view(), Context{}); }, {"`dy`"});
  ExpectError<InvalidArgument>(
      [&] {
        FakeQuantizeBackwardClipped(x.view(), out_bad_shape.view(), spec, p.View(), out.view(),
                                    Context{});
      },
      {"qkit::FakeQuantizeBackwardClipped", "`x` has shape [3, 2]"});
}

// kError: NaN is reported with its index before anything is written, in place included.
TEST(FakeQuantErrors, NaNUnderErrorLeavesTensorsUntouched) {
  QuantSpec spec;
  spec.nan_mode = NanMode::kError;
  const int64_t n = (int64_t{1} << 16) * 2 + 9;
  std::vector<float> xs(static_cast<size_t>(n), 0.3f);
  xs[static_cast<size_t>(n - 3)] = kNaN;
  Tensor x(DType::kFloat32, {n});
  x.Fill(xs);
  const auto before = x.RawLogical();
  ExpectError<InvalidArgument>(
      [&] { FakeQuantize(x.view(), spec, PerTensor(0.1f).View(), x.view(), nullptr, Context{2}); },
      {"qkit::FakeQuantize", "`x` has NaN", std::to_string(n - 3)});
  EXPECT_TRUE(x.RawLogical() == before) << "in-place call wrote before failing";
  Tensor out(DType::kFloat32, {n});
  out.Fill(std::vector<float>(static_cast<size_t>(n), 7.0f));
  const auto out_before = out.RawLogical();
  EXPECT_THROW(FakeQuantize(x.view(), spec, PerTensor(0.1f).View(), out.view(), nullptr, Context{}),
               InvalidArgument);
  EXPECT_TRUE(out.RawLogical() == out_before);
  Tensor dx(DType::kFloat32, {n});
  EXPECT_THROW(FakeQuantizeBackwardClipped(out.view(), x.view(), spec, PerTensor(0.1f).View(),
                                           dx.view(), Context{}),
               InvalidArgument);
  // Without NaN the same call works.
  x.Set(n - 3, 1.0f);
  EXPECT_NO_THROW(
      FakeQuantize(x.view(), spec, PerTensor(0.1f).View(), x.view(), nullptr, Context{}));
}

TEST(FakeQuantErrors, EmptyTensorsAreValid) {
  QuantSpec spec;
  Tensor x(DType::kFloat32, {0, 5});
  Tensor out(DType::kFloat32, {0, 5});
  FakeQuantize(x.view(), spec, PerTensor(1.0f).View(), out.view(), nullptr, Context{});
  QuantSpec pc;
  pc.layout = ParamLayout::PerChannel(0);  // zero channels: zero parameters
  FakeQuantize(x.view(), pc, QParamsView{nullptr, nullptr, 0}, out.view(), nullptr, Context{});
  FakeQuantizeBackwardMasked(x.view(), nullptr, out.view(), Context{});
  EXPECT_EQ(MaskBytes(0), 0);
  EXPECT_EQ(MaskBytes(9), 2);
}

QKIT_INSTANTIATE_PER_TARGET(FakeQuantTest);

}  // namespace
}  // namespace qkit
