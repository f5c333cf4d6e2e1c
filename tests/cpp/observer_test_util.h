// Batch generators and comparisons shared by the observer tests (minmax_observer_test.cc,
// moving_average_observer_test.cc): random multi-batch sequences whose range grows, shrinks
// and stays, with empty, all-zero, constant and all-non-finite batches and injected special
// values; tensors presented as contiguous, strided (negative / padded strides) or half views.
#ifndef QKIT_TESTS_CPP_OBSERVER_TEST_UTIL_H_
#define QKIT_TESTS_CPP_OBSERVER_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qkit/quant_spec.h"
#include "qkit/tensor.h"
#include "reference/observer_ref.h"
#include "util/compare.h"
#include "util/special_values.h"

namespace qkit::test {

// One batch: logical values in row-major order (what the reference reads).
struct Batch {
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::string kind;
};

enum class Present { kContiguous, kStrided, kFloat16, kBFloat16 };

inline const char* PresentName(Present p) {
  switch (p) {
    case Present::kContiguous: return "contiguous";
    case Present::kStrided: return "strided";
    case Present::kFloat16: return "float16";
    case Present::kBFloat16: return "bfloat16";
  }
  return "?";
}

// binary16 / bfloat16 decoding, written out (sign, exponent, mantissa).
inline float DecodeF16(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v;
  if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -24);
  } else if (e == 31) {
    v = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(m | 0x400), e - 25);
  }
  return sign ? -v : v;
}
inline float DecodeBF16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// Owns the memory behind a view of a batch.
struct Holder {
  std::vector<float> f32;
  std::vector<uint16_t> u16;
  TensorView view;
};

// Presents `b` as a view. kStrided: the first dim is reversed (negative stride) and the last
// dim has stride 2 (padding in between). kFloat16 / kBFloat16: the values are first rounded
// to the half type (bfloat16 by truncation, float16 to nearest), and b.values are replaced with
// the decoded values so that the reference sees exactly what the observer sees.
inline Holder MakeView(Batch& b, Present how) {
  Holder h;
  const int nd = static_cast<int>(b.shape.size());
  int64_t numel = 1;
  for (int64_t s : b.shape) numel *= s;
  if (how == Present::kFloat16 || how == Present::kBFloat16) {
    h.u16.resize(static_cast<size_t>(numel));
    for (int64_t i = 0; i < numel; ++i) {
      uint32_t u;
      std::memcpy(&u, &b.values[i], 4);
      uint16_t bits;
      if (how == Present::kBFloat16) {
        bits = static_cast<uint16_t>(u >> 16);
        if (std::isnan(b.values[i])) bits |= 0x40;  // keep it a NaN
      } else {
        // GCC's _Float16 conversion rounds to nearest-even (NaN stays NaN, overflow -> inf).
        const _Float16 hv = static_cast<_Float16>(b.values[i]);
        std::memcpy(&bits, &hv, 2);
      }
      h.u16[i] = bits;
      b.values[i] = how == Present::kFloat16 ? DecodeF16(bits) : DecodeBF16(bits);
    }
    h.view = TensorView::Contiguous(h.u16.data(),
                                    how == Present::kFloat16 ? DType::kFloat16 : DType::kBFloat16,
                                    nd, b.shape.data());
    return h;
  }
  if (how == Present::kContiguous || nd == 0 || numel == 0) {
    h.f32 = b.values;
    h.view = TensorView::Contiguous(h.f32.data(), DType::kFloat32, nd, b.shape.data());
    return h;
  }
  // Strided: physical strides = contiguous strides with the last dim doubled; dim 0 reversed.
  std::vector<int64_t> pstride(nd);
  int64_t s = 2;
  for (int d = nd - 1; d >= 0; --d) {
    pstride[d] = s;
    s *= b.shape[d];
  }
  h.f32.assign(static_cast<size_t>(s) + 1, std::numeric_limits<float>::quiet_NaN());  // guard
  const int64_t base = (b.shape[0] - 1) * pstride[0];
  std::vector<int64_t> coord(nd, 0);
  for (int64_t i = 0; i < numel; ++i) {
    int64_t rem = i;
    for (int d = nd - 1; d >= 0; --d) {
      coord[d] = rem % b.shape[d];
      rem /= b.shape[d];
    }
    int64_t off = base - coord[0] * pstride[0];
    for (int d = 1; d < nd; ++d) off += coord[d] * pstride[d];
    h.f32[static_cast<size_t>(off)] = b.values[i];
  }
  TensorView v;
  v.data = h.f32.data() + base;
  v.dtype = DType::kFloat32;
  v.ndim = nd;
  for (int d = 0; d < nd; ++d) {
    v.shape[d] = b.shape[d];
    v.strides[d] = d == 0 ? -pstride[0] : pstride[d];
  }
  h.view = v;
  return h;
}

// A random sequence of batches of shape [n, channels, inner] (n varies, 0 for empty batches).
// Kinds: grow / shrink / stay (range scaled by a factor), relu (min exactly 0), all_zero,
// constant, empty, all_nonfinite; `specials` injects NaN / ±Inf / denormals / FLT_MAX ...
// fixed_rows > 0 keeps n = fixed_rows for non-empty batches (per-group slots depend on n).
inline std::vector<Batch> RandomSequence(std::mt19937_64& rng, int64_t channels, int64_t inner,
                                         int num_batches, bool specials, int64_t fixed_rows = 0) {
  std::vector<Batch> seq;
  std::uniform_int_distribution<int> kind_dist(0, 99);
  std::uniform_int_distribution<int64_t> n_dist(1, 4);
  std::uniform_real_distribution<float> factor(1.5f, 4.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  float scale = 1.0f, offset = 0.0f;
  for (int b = 0; b < num_batches; ++b) {
    Batch batch;
    const int k = kind_dist(rng);
    int64_t n = fixed_rows > 0 ? fixed_rows : n_dist(rng);
    if (k < 20) {
      batch.kind = "grow";
      scale *= factor(rng);
    } else if (k < 40) {
      batch.kind = "shrink";
      scale /= factor(rng);
    } else if (k < 58) {
      batch.kind = "stay";
    } else if (k < 68) {
      batch.kind = "relu";
    } else if (k < 76) {
      batch.kind = "all_zero";
    } else if (k < 84) {
      batch.kind = "constant";
    } else if (k < 92) {
      batch.kind = "empty";
      n = 0;
    } else {
      batch.kind = "all_nonfinite";
    }
    if (k < 58) offset = normal(rng) * scale * 0.5f;
    batch.shape = {n, channels, inner};
    const int64_t numel = n * channels * inner;
    batch.values.resize(static_cast<size_t>(numel));
    const float c = normal(rng) * 3.0f;
    const auto sv = SpecialValues();
    std::uniform_int_distribution<size_t> pick(0, 5);  // 0, -0, nan, -nan, inf, -inf
    for (auto& v : batch.values) {
      if (batch.kind == "all_zero") {
        v = 0.0f;
      } else if (batch.kind == "constant") {
        v = c;
      } else if (batch.kind == "all_nonfinite") {
        v = sv[2 + pick(rng) % 4];
      } else if (batch.kind == "relu") {
        v = std::max(0.0f, normal(rng) * scale);
      } else {
        v = normal(rng) * scale + offset;
      }
    }
    if (specials && !batch.values.empty() && batch.kind != "all_nonfinite" &&
        kind_dist(rng) < 40) {
      InjectSpecials(batch.values, rng, 0.01);
      batch.kind += "+specials";
    }
    seq.push_back(std::move(batch));
  }
  return seq;
}

// Concatenation / split along dim 0 (the batch dim) of [n, ...] batches.
inline std::vector<Batch> SplitRows(const Batch& b, const std::vector<int64_t>& rows) {
  std::vector<Batch> out;
  int64_t row_elems = 1;
  for (size_t d = 1; d < b.shape.size(); ++d) row_elems *= b.shape[d];
  int64_t start = 0;
  for (int64_t r : rows) {
    Batch s;
    s.shape = b.shape;
    s.shape[0] = r;
    s.values.assign(b.values.begin() + start * row_elems,
                    b.values.begin() + (start + r) * row_elems);
    s.kind = b.kind;
    start += r;
    out.push_back(std::move(s));
  }
  return out;
}

inline bool SameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// Bitwise (NaN-aware) comparison of two float vectors.
inline ::testing::AssertionResult SameFloats(const std::vector<float>& want,
                                             const std::vector<float>& got, const char* what) {
  if (want.size() != got.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << ", expected " << want.size();
  }
  auto r = BitwiseEqual(want.data(), got.data(), static_cast<int64_t>(want.size()));
  if (!r) return ::testing::AssertionFailure() << what << ": " << r.message();
  return ::testing::AssertionSuccess();
}

// Exact equality including NaN payloads (for serialization round trips).
inline ::testing::AssertionResult IdenticalFloats(const std::vector<float>& a,
                                                  const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  if (!a.empty() && std::memcmp(a.data(), b.data(), a.size() * 4) != 0) {
    return ::testing::AssertionFailure() << "bits differ";
  }
  return ::testing::AssertionSuccess();
}

inline std::vector<ParamLayout> TestLayouts() {
  return {ParamLayout::PerTensor(), ParamLayout::PerChannel(1), ParamLayout::PerChannel(-2),
          ParamLayout::PerGroup(2, 4)};
}

}  // namespace qkit::test

#endif  // QKIT_TESTS_CPP_OBSERVER_TEST_UTIL_H_
