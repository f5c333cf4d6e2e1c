// Edge values every numeric test injects at the head, body and tail of its inputs.
#ifndef QKIT_TESTS_UTIL_SPECIAL_VALUES_H_
#define QKIT_TESTS_UTIL_SPECIAL_VALUES_H_

#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace qkit::test {

inline float NextUp(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
inline float NextDown(float x) { return std::nextafter(x, -std::numeric_limits<float>::infinity()); }

// ±0, NaN, ±Inf, denormals, ±FLT_MAX, FLT_MIN, values one ulp around 0.5.
inline std::vector<float> SpecialValues() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  return {0.0f,    -0.0f,   nan,     -nan,    inf,           -inf,
          FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN,
          1e-40f,  -1e-40f, 0.5f,    -0.5f,   NextDown(0.5f), NextUp(0.5f),
          1.0f,    -1.0f,   1e30f,   -1e30f};
}

// x values whose quotient x/scale (or x*inv) lands exactly on a tie k + 0.5, for a few
// magnitudes and both signs, given a scale that is a power of two (so the quotient is exact).
inline std::vector<float> TiesForScale(float pow2_scale) {
  std::vector<float> v;
  for (float k : {0.0f, 1.0f, 2.0f, 3.0f, 62.0f, 63.0f, 126.0f, 127.0f, 128.0f, 254.0f, 255.0f,
                  32766.0f, 32767.0f}) {
    v.push_back((k + 0.5f) * pow2_scale);
    v.push_back(-(k + 0.5f) * pow2_scale);
  }
  return v;
}

// Mixes special values into `data` at the head, the middle and the tail, with probability p
// elsewhere.
inline void InjectSpecials(std::vector<float>& data, std::mt19937_64& rng, double p = 0.02) {
  const auto sv = SpecialValues();
  if (data.empty()) return;
  std::uniform_int_distribution<size_t> pick(0, sv.size() - 1);
  std::bernoulli_distribution coin(p);
  data.front() = sv[pick(rng)];
  data.back() = sv[pick(rng)];
  data[data.size() / 2] = sv[pick(rng)];
  for (auto& x : data) {
    if (coin(rng)) x = sv[pick(rng)];
  }
}

}  // namespace qkit::test

#endif  // QKIT_TESTS_UTIL_SPECIAL_VALUES_H_
