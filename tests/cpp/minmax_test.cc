// MinMax / AbsMax / NumParams: bit-exact against tests/reference/minmax_ref.h on every SIMD
// target, for every NonFinite policy, layout (per tensor / channel on every axis / group),
// dtype, stride pattern, thread count and accumulator state; plus literal goldens from the
// contract (include/qkit/ops/minmax.h, docs/reductions.md) and the argument errors.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qkit/qkit.h"
#include "reference/minmax_ref.h"
#include "util/compare.h"
#include "util/seeded_rng.h"
#include "util/special_values.h"
#include "util/sweeps.h"
#include "util/targets.h"

namespace qkit {
namespace {

using test::BitwiseEqual;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kGrain = int64_t{1} << 16;  // threading chunk of internal::kGrain (for sizes)
constexpr NonFinite kPolicies[] = {NonFinite::kSkip, NonFinite::kSkipNaN, NonFinite::kPropagate};

const char* PolicyName(NonFinite p) {
  switch (p) {
    case NonFinite::kSkip:
      return "kSkip";
    case NonFinite::kSkipNaN:
      return "kSkipNaN";
    case NonFinite::kPropagate:
      return "kPropagate";
  }
  return "?";
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- test tensors ---------------------------------------------------------------------------

// Owns the storage behind a strided view of any floating dtype. Storage elements outside the
// view hold sentinels (NaN, ±3e38) so that a kernel reading outside the view changes results.
struct TestTensor {
  std::vector<uint32_t> storage;  // raw bytes, 4-byte aligned
  TensorView view;

  static uint16_t ToHalfBits(float v, DType dt) {
    if (dt == DType::kBFloat16) return static_cast<uint16_t>(Bits(v) >> 16);  // truncate
    const _Float16 h = static_cast<_Float16>(v);  // test data only; the reference decodes
    uint16_t b;
    std::memcpy(&b, &h, 2);
    return b;
  }
  void Store(int64_t offset, float v) {
    char* base = reinterpret_cast<char*>(storage.data());
    if (view.dtype == DType::kFloat32) {
      std::memcpy(static_cast<char*>(view.data) + offset * 4, &v, 4);
    } else {
      const uint16_t b = ToHalfBits(v, view.dtype);
      std::memcpy(static_cast<char*>(view.data) + offset * 2, &b, 2);
    }
    (void)base;
  }

  // shape / strides in elements; `lead` extra elements before the lowest address (misaligned
  // starts); values are taken in row-major order from `values` (cycled).
  static TestTensor Make(DType dt, std::vector<int64_t> shape, std::vector<int64_t> strides,
                         const std::vector<float>& values, int64_t lead = 0) {
    TestTensor t;
    const int nd = static_cast<int>(shape.size());
    int64_t lo = 0, hi = 0;  // extent of offsets relative to element [0, ...]
    bool empty = false;
    for (int d = 0; d < nd; ++d) {
      if (shape[d] == 0) empty = true;
      const int64_t span = (shape[d] - 1) * strides[d];
      if (span < 0)
        lo += span;
      else
        hi += span;
    }
    if (empty) lo = hi = 0;
    const size_t es = DTypeSize(dt);
    const int64_t count = hi - lo + 1 + lead + 1;  // +1 trailing sentinel
    t.storage.assign(static_cast<size_t>((count * static_cast<int64_t>(es) + 3) / 4 + 1), 0);
    t.view.dtype = dt;
    t.view.ndim = nd;
    for (int d = 0; d < nd; ++d) {
      t.view.shape[d] = shape[d];
      t.view.strides[d] = strides[d];
    }
    char* base = reinterpret_cast<char*>(t.storage.data());
    t.view.data = base + (lead - lo) * static_cast<int64_t>(es);
    // Sentinels everywhere first.
    const float sentinels[] = {kNaN, 3e38f, -3e38f};
    for (int64_t i = 0; i < count; ++i) {
      const int64_t off = i - (lead - lo);
      t.Store(off, sentinels[i % 3]);
    }
    if (empty || values.empty()) return t;
    std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
    size_t k = 0;
    for (;;) {
      int64_t off = 0;
      for (int d = 0; d < nd; ++d) off += idx[d] * strides[d];
      t.Store(off, values[k++ % values.size()]);
      int d = nd - 1;
      for (; d >= 0; --d) {
        if (++idx[d] < shape[d]) break;
        idx[d] = 0;
      }
      if (d < 0) break;
    }
    return t;
  }

  static std::vector<int64_t> RowMajorStrides(const std::vector<int64_t>& shape) {
    std::vector<int64_t> s(shape.size());
    int64_t acc = 1;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      s[d] = acc;
      acc *= shape[d];
    }
    return s;
  }
  static TestTensor Contiguous(DType dt, std::vector<int64_t> shape,
                               const std::vector<float>& values) {
    auto strides = RowMajorStrides(shape);
    return Make(dt, std::move(shape), std::move(strides), values);
  }
};

// n values: N(0,1) times a random power of ten, with the edge values of special_values.h at
// head, middle and tail (and with probability p elsewhere) when `specials`.
std::vector<float> RandomValues(std::mt19937_64& rng, int64_t n, bool specials = true,
                                double p = 0.02) {
  std::vector<float> v(static_cast<size_t>(n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exp10(-3, 3);
  const float scale = std::pow(10.0f, static_cast<float>(exp10(rng)));
  for (auto& x : v) x = normal(rng) * scale;
  if (specials) test::InjectSpecials(v, rng, p);
  return v;
}

// ---- the comparison -------------------------------------------------------------------------

// Runs MinMax and AbsMax under every policy with 1 and 2 threads, from fresh accumulators or
// (running) from the given ones, and expects the reference's results bit for bit (NaN-aware),
// the same skip count, and bit-identical results (NaN payloads included) across thread counts.
void ExpectMatchesReference(const TensorView& x, const ParamLayout& layout, const std::string& what,
                            const std::vector<float>* init_lo = nullptr,
                            const std::vector<float>* init_hi = nullptr) {
  SCOPED_TRACE(what + " dtype=" + DTypeName(x.dtype) + " shape=" + x.ShapeString() +
               " layout=" + layout.ToString() + " target=" + CurrentTarget());
  const int64_t P = ref::RefNumParams(x, layout);
  ASSERT_EQ(NumParams(x, layout, "test"), P);
  const std::vector<float> lo0 = init_lo ? *init_lo : std::vector<float>(P, kInf);
  const std::vector<float> hi0 = init_hi ? *init_hi : std::vector<float>(P, -kInf);
  const std::vector<float> amax0 = init_hi ? *init_hi : std::vector<float>(P, 0.0f);
  for (NonFinite policy : kPolicies) {
    SCOPED_TRACE(PolicyName(policy));
    std::vector<float> want_lo = lo0, want_hi = hi0, want_amax = amax0;
    int64_t want_skipped = 5, want_abs_skipped = 11;  // skip counts add to the current value
    ref::RefMinMax(x, layout, policy, want_lo.data(), want_hi.data(), &want_skipped);
    ref::RefAbsMax(x, layout, policy, want_amax.data(), &want_abs_skipped);
    std::vector<float> first_lo, first_hi, first_amax;
    for (int threads : {1, 2}) {
      SCOPED_TRACE("threads=" + std::to_string(threads));
      std::vector<float> lo = lo0, hi = hi0, amax = amax0;
      int64_t skipped = 5, abs_skipped = 11;
      MinMax(x, layout, policy, lo.data(), hi.data(), &skipped, Context{threads});
      AbsMax(x, layout, policy, amax.data(), &abs_skipped, Context{threads});
      EXPECT_TRUE(BitwiseEqual(want_lo.data(), lo.data(), P)) << "min";
      EXPECT_TRUE(BitwiseEqual(want_hi.data(), hi.data(), P)) << "max";
      EXPECT_TRUE(BitwiseEqual(want_amax.data(), amax.data(), P)) << "absmax";
      EXPECT_EQ(skipped, want_skipped);
      EXPECT_EQ(abs_skipped, want_abs_skipped);
      if (threads == 1) {
        first_lo = lo;
        first_hi = hi;
        first_amax = amax;
      } else {
        EXPECT_EQ(0, std::memcmp(first_lo.data(), lo.data(), P * 4)) << "threads differ";
        EXPECT_EQ(0, std::memcmp(first_hi.data(), hi.data(), P * 4)) << "threads differ";
        EXPECT_EQ(0, std::memcmp(first_amax.data(), amax.data(), P * 4)) << "threads differ";
      }
    }
  }
}

class MinMaxTest : public test::PerTargetTest {};

// ---- literal goldens (from the contract) -----------------------------------------------------

// Values and expected results are read off the header's contract: kSkip leaves NaN and ±Inf
// out and counts them, kSkipNaN leaves out NaN only, kPropagate makes the slot NaN.
TEST_P(MinMaxTest, PoliciesOnLiteralVector) {
  std::vector<float> v = {1.0f, kNaN, -kInf, 2.0f, kInf, -kNaN, -3.0f, 0.0f, 0.5f};
  // Repeat to 4 * 16 + 9 elements so the vector body (AVX3: 16 lanes) sees them too.
  const std::vector<float> base = v;
  for (int r = 0; r < 8; ++r) v.insert(v.end(), base.begin(), base.end());
  const int64_t reps = 9;
  auto x = TensorView::Vector(v.data(), static_cast<int64_t>(v.size()));
  struct Case {
    NonFinite policy;
    float lo, hi, amax;
    int64_t skipped, abs_skipped;
  };
  const Case cases[] = {
      {NonFinite::kSkip, -3.0f, 2.0f, 3.0f, 4 * reps, 4 * reps},  // 2 NaN + 2 Inf per copy
      {NonFinite::kSkipNaN, -kInf, kInf, kInf, 2 * reps, 2 * reps},
      {NonFinite::kPropagate, kNaN, kNaN, kNaN, 0, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(PolicyName(c.policy));
    float lo = kInf, hi = -kInf, amax = 0.0f;
    int64_t skipped = 0, abs_skipped = 0;
    MinMax(x, ParamLayout::PerTensor(), c.policy, &lo, &hi, &skipped, Context{});
    AbsMax(x, ParamLayout::PerTensor(), c.policy, &amax, &abs_skipped, Context{});
    EXPECT_TRUE(BitwiseEqual(&c.lo, &lo, 1));
    EXPECT_TRUE(BitwiseEqual(&c.hi, &hi, 1));
    EXPECT_TRUE(BitwiseEqual(&c.amax, &amax, 1));
    EXPECT_EQ(skipped, c.skipped);
    EXPECT_EQ(abs_skipped, c.abs_skipped);
  }
}

// ±0 rule: a zero extreme is +0 whatever the signs and order of the zeros (and a -0
// accumulator that absorbs a zero becomes +0).
TEST_P(MinMaxTest, ZeroExtremesArePlusZero) {
  for (int64_t n : {1, 2, 3, 17, 64, 65, 1000}) {
    for (int pattern = 0; pattern < 3; ++pattern) {
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        v[i] = pattern == 0   ? -0.0f
               : pattern == 1 ? ((i % 2) ? 0.0f : -0.0f)
                              : ((i % 2) ? -0.0f : 0.0f);
      }
      auto x = TensorView::Vector(v.data(), n);
      for (NonFinite policy : kPolicies) {
        float lo = kInf, hi = -kInf, amax = -0.0f;
        MinMax(x, ParamLayout::PerTensor(), policy, &lo, &hi, nullptr, Context{});
        AbsMax(x, ParamLayout::PerTensor(), policy, &amax, nullptr, Context{});
        EXPECT_EQ(Bits(lo), 0u) << "n=" << n << " pattern=" << pattern;
        EXPECT_EQ(Bits(hi), 0u) << "n=" << n << " pattern=" << pattern;
        EXPECT_EQ(Bits(amax), 0u) << "n=" << n << " pattern=" << pattern;
        float acc_lo = -0.0f, acc_hi = -0.0f;  // running -0 meets zeros: +0
        MinMax(x, ParamLayout::PerTensor(), policy, &acc_lo, &acc_hi, nullptr, Context{});
        EXPECT_EQ(Bits(acc_lo), 0u);
        EXPECT_EQ(Bits(acc_hi), 0u);
      }
    }
  }
  // A slot with no participating element is left unchanged, -0 included.
  float nan_only[3] = {kNaN, kNaN, kInf};
  float lo = -0.0f, hi = -0.0f, amax = -0.0f;
  auto x = TensorView::Vector(nan_only, 3);
  MinMax(x, ParamLayout::PerTensor(), NonFinite::kSkip, &lo, &hi, nullptr, Context{});
  AbsMax(x, ParamLayout::PerTensor(), NonFinite::kSkip, &amax, nullptr, Context{});
  EXPECT_EQ(Bits(lo), 0x80000000u);
  EXPECT_EQ(Bits(hi), 0x80000000u);
  EXPECT_EQ(Bits(amax), 0x80000000u);
}

// kPropagate writes the canonical quiet NaN (0x7fc00000) whatever the input NaN's payload,
// and the slot stays NaN when later folded with clean data.
TEST_P(MinMaxTest, PropagatedNaNIsCanonicalAndSticky) {
  std::vector<float> v(200, 1.0f);
  uint32_t payload = 0xffa01234u;  // negative signalling-pattern NaN with a payload
  std::memcpy(&v[150], &payload, 4);
  auto x = TensorView::Vector(v.data(), 200);
  float lo = -5.0f, hi = 5.0f, amax = 7.0f;
  int64_t skipped = 3;
  MinMax(x, ParamLayout::PerTensor(), NonFinite::kPropagate, &lo, &hi, &skipped, Context{});
  AbsMax(x, ParamLayout::PerTensor(), NonFinite::kPropagate, &amax, &skipped, Context{});
  EXPECT_EQ(Bits(lo), 0x7fc00000u);
  EXPECT_EQ(Bits(hi), 0x7fc00000u);
  EXPECT_EQ(Bits(amax), 0x7fc00000u);
  EXPECT_EQ(skipped, 3);  // kPropagate leaves nothing out
  std::vector<float> clean(100, 2.0f);
  auto y = TensorView::Vector(clean.data(), 100);
  for (NonFinite policy : kPolicies) {
    MinMax(y, ParamLayout::PerTensor(), policy, &lo, &hi, nullptr, Context{});
    AbsMax(y, ParamLayout::PerTensor(), policy, &amax, nullptr, Context{});
    EXPECT_TRUE(std::isnan(lo) && std::isnan(hi) && std::isnan(amax)) << PolicyName(policy);
  }
}

// Per channel with one NaN in channel 1 only: only that slot is NaN under kPropagate, and the
// accumulators of the other slots fold normally.
TEST_P(MinMaxTest, PropagateIsPerSlot) {
  // [3, 40]: channel c holds c*100 + i for i < 40; NaN at [1, 33].
  std::vector<float> v(120);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 40; ++i) v[c * 40 + i] = static_cast<float>(c * 100 + i);
  }
  v[40 + 33] = kNaN;
  for (const auto& [shape, strides, axis] :
       {std::make_tuple(std::vector<int64_t>{3, 40}, std::vector<int64_t>{40, 1}, 0),
        std::make_tuple(std::vector<int64_t>{40, 3}, std::vector<int64_t>{1, 40}, 1)}) {
    TensorView x;
    x.data = v.data();
    x.ndim = 2;
    for (int d = 0; d < 2; ++d) {
      x.shape[d] = shape[d];
      x.strides[d] = strides[d];
    }
    float lo[3] = {-1.0f, 1e9f, 50.0f}, hi[3] = {-1.0f, 0.0f, 1e9f};
    MinMax(x, ParamLayout::PerChannel(axis), NonFinite::kPropagate, lo, hi, nullptr, Context{});
    EXPECT_EQ(lo[0], -1.0f);  // accumulator below the data
    EXPECT_EQ(hi[0], 39.0f);
    EXPECT_TRUE(std::isnan(lo[1]) && std::isnan(hi[1]));
    EXPECT_EQ(lo[2], 50.0f);
    EXPECT_EQ(hi[2], 1e9f);
  }
}

// ---- sweeps against the reference -----------------------------------------------------------

TEST_P(MinMaxTest, PerTensorContiguousEveryCount) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (int64_t n : test::Counts(rng)) {
    for (bool specials : {true, false}) {
      auto values = RandomValues(rng, n, specials);
      auto x = TensorView::Vector(values.data(), n);
      ExpectMatchesReference(x, ParamLayout::PerTensor(),
                             "n=" + std::to_string(n) + (specials ? " specials" : ""));
    }
  }
}

// Dense specials (every element drawn from the edge list half of the time), misaligned starts.
TEST_P(MinMaxTest, PerTensorDenseSpecialsMisaligned) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (int64_t n : {1, 7, 16, 63, 64, 65, 257, 1000, 4097}) {
    for (int64_t lead : {0, 1, 3}) {
      auto values = RandomValues(rng, n, true, 0.5);
      auto t = TestTensor::Make(DType::kFloat32, {n}, {1}, values, lead);
      ExpectMatchesReference(t.view, ParamLayout::PerTensor(),
                             "dense n=" + std::to_string(n) + " lead=" + std::to_string(lead));
    }
  }
}

// Non-contiguous views: padded rows, transposed, negative strides, broadcast (stride 0), a
// strided inner dim; under every layout.
TEST_P(MinMaxTest, StridedViews) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  struct View {
    const char* name;
    std::vector<int64_t> shape, strides;
  };
  const std::vector<View> views = {
      {"padded rows", {13, 37}, {40, 1}},
      {"transposed", {37, 13}, {1, 37}},
      {"negative inner", {13, 37}, {37, -1}},
      {"negative both", {13, 37}, {-37, -1}},
      {"negative outer transposed", {37, 13}, {-1, 37}},
      {"broadcast rows", {13, 37}, {0, 1}},
      {"negative rows", {13, 37}, {-37, 1}},
      {"3d rows not collapsible", {4, 5, 6}, {40, 7, 1}},
      {"3d rows collapsible padded", {4, 5, 6}, {-70, 14, 1}},
      {"broadcast inner", {13, 37}, {37, 0}},
      {"inner stride 3", {13, 37}, {200, 3}},
      {"3d permuted", {5, 7, 9}, {1, 45, 5}},
      {"3d with size-1 dims", {1, 9, 1, 11}, {500, 11, 7, 1}},
  };
  for (const View& v : views) {
    int64_t n = 1;
    for (int64_t s : v.shape) n *= s;
    auto values = RandomValues(rng, n);
    auto t = TestTensor::Make(DType::kFloat32, v.shape, v.strides, values);
    const int nd = static_cast<int>(v.shape.size());
    ExpectMatchesReference(t.view, ParamLayout::PerTensor(), v.name);
    for (int axis = -nd; axis < nd; ++axis) {
      ExpectMatchesReference(t.view, ParamLayout::PerChannel(axis), v.name);
      for (int64_t g : {1, 4, 5})
        ExpectMatchesReference(t.view, ParamLayout::PerGroup(axis, g), v.name);
    }
  }
}

TEST_P(MinMaxTest, HalfAndBFloat16) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t n : {0, 1, 15, 16, 17, 100, 1025, 3000}) {
      auto values = RandomValues(rng, n);
      auto t = TestTensor::Contiguous(dt, {n}, values);
      ExpectMatchesReference(t.view, ParamLayout::PerTensor(), "contiguous n=" + std::to_string(n));
    }
    auto values = RandomValues(rng, 24 * 35);
    auto strided = TestTensor::Make(dt, {24, 35}, {1, -30}, values, 2);  // transposed, negative
    ExpectMatchesReference(strided.view, ParamLayout::PerTensor(), "strided");
    ExpectMatchesReference(strided.view, ParamLayout::PerChannel(0), "strided");
    ExpectMatchesReference(strided.view, ParamLayout::PerChannel(1), "strided");
    ExpectMatchesReference(strided.view, ParamLayout::PerGroup(1, 8), "strided");
    auto cl = TestTensor::Contiguous(dt, {50, 64}, RandomValues(rng, 50 * 64));
    ExpectMatchesReference(cl.view, ParamLayout::PerChannel(-1), "channels-last");
  }
}

// Per channel on every axis of 3-d tensors, contiguous and permuted (channels-last), for the
// shared channel counts (1, 3, 7, 16, 17, 64, 1000).
TEST_P(MinMaxTest, PerChannelEveryAxis) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (int64_t c : test::ChannelCounts()) {
    for (int axis = 0; axis < 3; ++axis) {
      std::vector<int64_t> shape = {5, 9, 11};
      shape[axis] = c;
      int64_t n = shape[0] * shape[1] * shape[2];
      auto values = RandomValues(rng, n);
      const std::string what = "C=" + std::to_string(c) + " axis=" + std::to_string(axis);
      auto t = TestTensor::Contiguous(DType::kFloat32, shape, values);
      ExpectMatchesReference(t.view, ParamLayout::PerChannel(axis), what + " contiguous");
      ExpectMatchesReference(t.view, ParamLayout::PerChannel(axis - 3), what + " negative axis");
      // The same logical tensor stored with the channel axis innermost in memory.
      std::vector<int64_t> strides(3);
      int64_t acc = 1;
      strides[axis] = acc;
      acc *= shape[axis];
      for (int d = 2; d >= 0; --d) {
        if (d == axis) continue;
        strides[d] = acc;
        acc *= shape[d];
      }
      auto cl = TestTensor::Make(DType::kFloat32, shape, strides, values);
      ExpectMatchesReference(cl.view, ParamLayout::PerChannel(axis), what + " channels-last");
    }
    // 2-d channels-last activations [rows, C], the innermost axis.
    auto values = RandomValues(rng, 33 * c);
    auto t = TestTensor::Contiguous(DType::kFloat32, {33, c}, values);
    ExpectMatchesReference(t.view, ParamLayout::PerChannel(1), "rows x C=" + std::to_string(c));
  }
}

// Per group on each axis, group sizes that divide the axis and ragged ones (last group short).
TEST_P(MinMaxTest, PerGroupRagged) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{6, 130}, std::vector<int64_t>{130, 6}, std::vector<int64_t>{3, 17, 40},
        std::vector<int64_t>{1000}}) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    auto values = RandomValues(rng, n);
    auto t = TestTensor::Contiguous(DType::kFloat32, shape, values);
    const int nd = static_cast<int>(shape.size());
    for (int axis = 0; axis < nd; ++axis) {
      for (int64_t g : {1, 2, 3, 16, 32, 33, 128, 2000}) {
        ExpectMatchesReference(t.view, ParamLayout::PerGroup(axis, g), "g=" + std::to_string(g));
      }
    }
  }
}

// Accumulators that already hold values (a running observer): random finite values, ±0, ±Inf
// and NaN; and two calls on the halves of a tensor equal one call on the whole.
TEST_P(MinMaxTest, RunningAccumulators) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const auto sv = test::SpecialValues();
  std::uniform_int_distribution<size_t> pick(0, sv.size() - 1);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::bernoulli_distribution coin(0.3);
  for (const ParamLayout& layout : {ParamLayout::PerTensor(), ParamLayout::PerChannel(0),
                                    ParamLayout::PerChannel(1), ParamLayout::PerGroup(1, 7)}) {
    auto values = RandomValues(rng, 23 * 61);
    auto t = TestTensor::Contiguous(DType::kFloat32, {23, 61}, values);
    const int64_t P = NumParams(t.view, layout, "test");
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<float> lo(P), hi(P);
      for (int64_t p = 0; p < P; ++p) {
        lo[p] = coin(rng) ? sv[pick(rng)] : normal(rng);
        hi[p] = coin(rng) ? sv[pick(rng)] : normal(rng);
      }
      ExpectMatchesReference(t.view, layout, "running", &lo, &hi);
    }
  }
  // Split fold: [0, k) then [k, n) == [0, n), per tensor, for every policy.
  for (int64_t n : {int64_t{100}, 3 * kGrain + 13}) {
    auto values = RandomValues(rng, n);
    const int64_t k = n / 3 + 1;
    for (NonFinite policy : kPolicies) {
      float lo1 = kInf, hi1 = -kInf, lo2 = kInf, hi2 = -kInf, a1 = 0.0f, a2 = 0.0f;
      int64_t s1 = 0, s2 = 0;
      MinMax(TensorView::Vector(values.data(), n), {}, policy, &lo1, &hi1, &s1, Context{2});
      AbsMax(TensorView::Vector(values.data(), n), {}, policy, &a1, &s1, Context{2});
      MinMax(TensorView::Vector(values.data(), k), {}, policy, &lo2, &hi2, &s2, Context{});
      MinMax(TensorView::Vector(values.data() + k, n - k), {}, policy, &lo2, &hi2, &s2, Context{});
      AbsMax(TensorView::Vector(values.data(), k), {}, policy, &a2, &s2, Context{});
      AbsMax(TensorView::Vector(values.data() + k, n - k), {}, policy, &a2, &s2, Context{});
      EXPECT_TRUE(BitwiseEqual(&lo1, &lo2, 1)) << PolicyName(policy);
      EXPECT_TRUE(BitwiseEqual(&hi1, &hi2, 1)) << PolicyName(policy);
      EXPECT_TRUE(BitwiseEqual(&a1, &a2, 1)) << PolicyName(policy);
      EXPECT_EQ(s1, s2) << PolicyName(policy);
    }
  }
}

// Several threading chunks: 1, 2 and 3 threads give identical bits (and match the reference);
// the skip count is exactly the number of non-finite values placed across chunk boundaries.
TEST_P(MinMaxTest, ThreadCountsAndExactSkipCount) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  const int64_t n = 3 * kGrain + 13;
  auto values = RandomValues(rng, n, /*specials=*/false);
  // Non-finite values at chunk edges, vector-group edges and the tail.
  const int64_t nan_at[] = {0, kGrain - 1, kGrain, 2 * kGrain + 5, n - 1};
  const int64_t inf_at[] = {17, kGrain + 1, 3 * kGrain - 1, n - 2};
  for (int64_t i : nan_at) values[i] = (i % 2) ? kNaN : -kNaN;
  for (int64_t i : inf_at) values[i] = (i % 2) ? kInf : -kInf;
  const int64_t nans = 5, infs = 4;
  auto x = TensorView::Vector(values.data(), n);
  const struct {
    NonFinite policy;
    int64_t skipped;
  } expect[] = {
      {NonFinite::kSkip, nans + infs}, {NonFinite::kSkipNaN, nans}, {NonFinite::kPropagate, 0}};
  for (const auto& e : expect) {
    float lo1 = kInf, hi1 = -kInf, a1 = 0.0f;
    int64_t s1 = 0, sa1 = 0;
    MinMax(x, {}, e.policy, &lo1, &hi1, &s1, Context{1});
    AbsMax(x, {}, e.policy, &a1, &sa1, Context{1});
    EXPECT_EQ(s1, e.skipped) << PolicyName(e.policy);
    EXPECT_EQ(sa1, e.skipped) << PolicyName(e.policy);
    for (int threads : {2, 3}) {
      float lo = kInf, hi = -kInf, a = 0.0f;
      int64_t s = 0, sa = 0;
      MinMax(x, {}, e.policy, &lo, &hi, &s, Context{threads});
      AbsMax(x, {}, e.policy, &a, &sa, Context{threads});
      EXPECT_EQ(Bits(lo), Bits(lo1));
      EXPECT_EQ(Bits(hi), Bits(hi1));
      EXPECT_EQ(Bits(a), Bits(a1));
      EXPECT_EQ(s, e.skipped);
      EXPECT_EQ(sa, e.skipped);
    }
  }
  ExpectMatchesReference(x, ParamLayout::PerTensor(), "chunks");
  // Per channel / per group spanning chunks, both run shapes.
  auto t = TestTensor::Contiguous(DType::kFloat32, {3, 70001}, RandomValues(rng, 3 * 70001));
  ExpectMatchesReference(t.view, ParamLayout::PerChannel(0), "3 channels over chunks");
  ExpectMatchesReference(t.view, ParamLayout::PerGroup(1, 1000), "groups over chunks");
  auto cl = TestTensor::Contiguous(DType::kFloat32, {3001, 64}, RandomValues(rng, 3001 * 64));
  ExpectMatchesReference(cl.view, ParamLayout::PerChannel(1), "channels-last over chunks");
  ExpectMatchesReference(cl.view, ParamLayout::PerGroup(0, 5), "per-element groups over chunks");
}

// Channels-last [rows, C] over several chunks with a handful of NaN / Inf (so that some slots
// end NaN under kPropagate and others not, and NaN partials carry from chunk to chunk).
TEST_P(MinMaxTest, ChannelsLastSparseSpecialsOverChunks) {
  QKIT_SEED_TRACE();
  auto rng = test::MakeRng();
  for (int64_t c : {3, 17, 64, 1000}) {
    const int64_t rows = (kGrain + 77) / c + 1;
    auto values = RandomValues(rng, rows * c, /*specials=*/false);
    std::uniform_int_distribution<int64_t> at(0, rows * c - 1);
    for (int i = 0; i < 4; ++i) values[at(rng)] = kNaN;
    for (int i = 0; i < 4; ++i) values[at(rng)] = (i % 2) ? kInf : -kInf;
    values[kGrain + 1] = kNaN;  // early in the second chunk
    auto t = TestTensor::Contiguous(DType::kFloat32, {rows, c}, values);
    ExpectMatchesReference(t.view, ParamLayout::PerChannel(1), "C=" + std::to_string(c));
    ExpectMatchesReference(t.view, ParamLayout::PerGroup(1, 8), "C=" + std::to_string(c));
  }
}

// Empty tensors and empty shapes are valid and leave accumulators and the skip count as they
// are; a 0-d tensor has one element.
TEST_P(MinMaxTest, EmptyTensorsAndScalars) {
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{0}, std::vector<int64_t>{3, 0, 4}, std::vector<int64_t>{0, 5}}) {
    auto t = TestTensor::Contiguous(DType::kFloat32, shape, {});
    for (const ParamLayout& layout : {ParamLayout::PerTensor(), ParamLayout::PerChannel(0),
                                      ParamLayout::PerChannel(-1), ParamLayout::PerGroup(0, 2)}) {
      const int64_t P = NumParams(t.view, layout, "test");
      EXPECT_EQ(P, ref::RefNumParams(t.view, layout)) << t.view.ShapeString() << layout.ToString();
      std::vector<float> lo(P, -7.0f), hi(P, 7.0f), amax(P, 3.0f);
      int64_t skipped = 42;
      for (NonFinite policy : kPolicies) {
        MinMax(t.view, layout, policy, P ? lo.data() : nullptr, P ? hi.data() : nullptr, &skipped,
               Context{2});
        AbsMax(t.view, layout, policy, P ? amax.data() : nullptr, &skipped, Context{2});
      }
      for (int64_t p = 0; p < P; ++p) {
        EXPECT_EQ(lo[p], -7.0f);
        EXPECT_EQ(hi[p], 7.0f);
        EXPECT_EQ(amax[p], 3.0f);
      }
      EXPECT_EQ(skipped, 42);
    }
  }
  // [3, 0, 4] per channel on axis 1: zero slots, null accumulators are fine.
  auto t = TestTensor::Contiguous(DType::kFloat32, {3, 0, 4}, {});
  EXPECT_EQ(NumParams(t.view, ParamLayout::PerChannel(1), "test"), 0);
  EXPECT_NO_THROW(MinMax(t.view, ParamLayout::PerChannel(1), NonFinite::kSkip, nullptr, nullptr,
                         nullptr, Context{}));
  // 0-d tensor: one element, one slot per tensor.
  float v = -2.5f;
  TensorView s;
  s.data = &v;
  s.ndim = 0;
  float lo = kInf, hi = -kInf, amax = 0.0f;
  MinMax(s, {}, NonFinite::kSkip, &lo, &hi, nullptr, Context{});
  AbsMax(s, {}, NonFinite::kSkip, &amax, nullptr, Context{});
  EXPECT_EQ(lo, -2.5f);
  EXPECT_EQ(hi, -2.5f);
  EXPECT_EQ(amax, 2.5f);
}

QKIT_INSTANTIATE_PER_TARGET(MinMaxTest);

// ---- NumParams and argument errors (no SIMD: not per target) ---------------------------------

TEST(MinMaxArgsTest, NumParamsFollowsTheLayout) {
  float buf[1];
  auto x = TensorView::Contiguous(buf, DType::kFloat32, {4, 10, 3});
  EXPECT_EQ(NumParams(x, ParamLayout::PerTensor(), "t"), 1);
  EXPECT_EQ(NumParams(x, ParamLayout::PerChannel(0), "t"), 4);
  EXPECT_EQ(NumParams(x, ParamLayout::PerChannel(-1), "t"), 3);
  EXPECT_EQ(NumParams(x, ParamLayout::PerGroup(1, 4), "t"), 4 * 3 * 3);  // ceil(10/4) = 3
  EXPECT_EQ(NumParams(x, ParamLayout::PerGroup(1, 10), "t"), 4 * 1 * 3);
  EXPECT_EQ(NumParams(x, ParamLayout::PerGroup(1, 11), "t"), 4 * 1 * 3);
  EXPECT_EQ(NumParams(x, ParamLayout::PerGroup(-1, 2), "t"), 4 * 10 * 2);
  auto e = TensorView::Contiguous(buf, DType::kFloat32, {4, 0, 3});
  EXPECT_EQ(NumParams(e, ParamLayout::PerTensor(), "t"), 1);
  EXPECT_EQ(NumParams(e, ParamLayout::PerChannel(0), "t"), 4);
  EXPECT_EQ(NumParams(e, ParamLayout::PerGroup(1, 2), "t"), 0);
}

// Expects `fn` to throw E with every one of `parts` in its message.
template <class E, class Fn>
void ExpectError(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    for (const char* p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message `" << e.what() << "` lacks `" << p << "`";
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

TEST(MinMaxArgsTest, ErrorsNameFunctionArgumentAndValue) {
  float data[24] = {};
  float lo[24], hi[24];
  int64_t skipped = 0;
  auto x = TensorView::Contiguous(data, DType::kFloat32, {2, 3, 4});
  ExpectError<OutOfRange>(
      [&] { MinMax(x, ParamLayout::PerChannel(3), NonFinite::kSkip, lo, hi, &skipped, {}); },
      {"qkit::MinMax", "`axis`=3", "[2, 3, 4]"});
  ExpectError<OutOfRange>(
      [&] { AbsMax(x, ParamLayout::PerChannel(-4), NonFinite::kSkip, hi, &skipped, {}); },
      {"qkit::AbsMax", "`axis`=-4"});
  ExpectError<InvalidArgument>(
      [&] { MinMax(x, ParamLayout::PerGroup(1, 0), NonFinite::kSkip, lo, hi, &skipped, {}); },
      {"qkit::MinMax", "`group_size`=0"});
  ExpectError<InvalidArgument>(
      [&] { AbsMax(x, ParamLayout::PerGroup(1, -3), NonFinite::kSkip, hi, &skipped, {}); },
      {"qkit::AbsMax", "`group_size`=-3"});
  int8_t q[24] = {};
  auto xi = TensorView::Contiguous(q, DType::kInt8, {24});
  ExpectError<InvalidArgument>([&] { MinMax(xi, {}, NonFinite::kSkip, lo, hi, &skipped, {}); },
                               {"qkit::MinMax", "`x`", "int8"});
  auto x32 = TensorView::Contiguous(q, DType::kInt32, {6});
  ExpectError<InvalidArgument>([&] { AbsMax(x32, {}, NonFinite::kSkip, hi, &skipped, {}); },
                               {"qkit::AbsMax", "int32"});
  ExpectError<InvalidArgument>([&] { MinMax(x, {}, NonFinite::kSkip, nullptr, hi, &skipped, {}); },
                               {"qkit::MinMax", "`min_acc`"});
  ExpectError<InvalidArgument>(
      [&] { MinMax(x, ParamLayout::PerChannel(1), NonFinite::kSkip, lo, nullptr, &skipped, {}); },
      {"qkit::MinMax", "`max_acc`", "3 floats"});
  ExpectError<InvalidArgument>([&] { AbsMax(x, {}, NonFinite::kSkip, nullptr, &skipped, {}); },
                               {"qkit::AbsMax", "`amax_acc`"});
  ExpectError<InvalidArgument>([&] { MinMax(x, {}, NonFinite::kSkip, lo, lo, &skipped, {}); },
                               {"qkit::MinMax", "same"});
  ExpectError<InvalidArgument>(
      [&] { MinMax(x, {}, static_cast<NonFinite>(7), lo, hi, &skipped, {}); },
      {"qkit::MinMax", "`policy`=7"});
  ExpectError<InvalidArgument>(
      [&] { MinMax(x, {}, NonFinite::kSkip, lo, hi, &skipped, Context{0}); },
      {"qkit::MinMax", "`ctx.num_threads`=0"});
  // Empty tensors are still validated.
  auto e = TensorView::Contiguous(data, DType::kFloat32, {0, 3});
  ExpectError<OutOfRange>(
      [&] { MinMax(e, ParamLayout::PerChannel(2), NonFinite::kSkip, lo, hi, &skipped, {}); },
      {"`axis`=2"});
  // A 0-d tensor has no axis.
  TensorView s;
  s.data = data;
  ExpectError<OutOfRange>(
      [&] { MinMax(s, ParamLayout::PerChannel(0), NonFinite::kSkip, lo, hi, &skipped, {}); },
      {"qkit::MinMax", "0-d"});
  ExpectError<OutOfRange>([&] { NumParams(x, ParamLayout::PerChannel(5), "caller_name"); },
                          {"caller_name", "`axis`=5"});
  EXPECT_EQ(skipped, 0);  // nothing ran
}

}  // namespace
}  // namespace qkit
