// MSE calibration (see include/qkit/calib/mse.h). The per-center terms are computed with SIMD
// (element-wise IEEE float32 operations: identical on every target); their float64 sum uses a
// fixed interleaving of 8 accumulators written as plain lane-wise code, so it is identical on
// every target too.
#include "qkit/calib/mse.h"

#include <cmath>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "calib/mse.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace qkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum over the n non-zero centers c[k] with counts w[k] of f32(f32(f32(q - c)^2) * w), q the
// narrow-range CUDA fake quant of c with amax, as 8 interleaved float64 partial sums combined
// ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). n is a multiple of 64 (zero-padded).
double MseSum(const float* HWY_RESTRICT c, const float* HWY_RESTRICT w, size_t n, float amax,
              float bound) {
  const hn::ScalableTag<float> df;
  const size_t N = hn::Lanes(df);
  constexpr size_t kBlock = 256;
  alignas(64) float term[kBlock];
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const bool zero = amax < 0x1p-24f;
  const float scale = bound / amax;
  const auto vs = hn::Set(df, scale);
  const auto vhi = hn::Set(df, bound);
  const auto vlo = hn::Set(df, -bound);
  for (size_t i = 0; i < n; i += kBlock) {
    const size_t m = std::min(kBlock, n - i);
    for (size_t j = 0; j < m; j += N) {
      const auto vc = hn::LoadU(df, c + i + j);
      hn::Vec<decltype(df)> q;
      if (zero) {
        q = hn::Zero(df);
      } else {
        const auto r = hn::Round(hn::Mul(vc, vs));  // rint: ties to even
        q = hn::Div(hn::Min(hn::Max(r, vlo), vhi), vs);
      }
      const auto d = hn::Sub(q, vc);
      const auto t = hn::Mul(hn::Mul(d, d), hn::LoadU(df, w + i + j));
      hn::StoreU(t, df, term + j);
    }
    for (size_t j = 0; j < m; j += 8) {
      for (size_t l = 0; l < 8; ++l) acc[l] += static_cast<double>(term[j + l]);
    }
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace HWY_NAMESPACE
}  // namespace qkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "internal/check.h"

namespace qkit {

HWY_EXPORT(MseSum);

MseSearchResult MseSearch(const int64_t* counts, int64_t num_counts, const float* edges,
                          int64_t num_edges, const MseSearchOptions& o) {
  constexpr const char* kCaller = "qkit::MseSearch";
  QKIT_REQUIRE(counts != nullptr || num_counts == 0, InvalidArgument,
               kCaller << ": `counts` is null");
  QKIT_REQUIRE(edges != nullptr && num_edges >= 2, InvalidArgument,
               kCaller << ": need at least 2 edges; got `num_edges`=" << num_edges);
  QKIT_REQUIRE(o.num_bits >= 2 && o.num_bits <= 16, InvalidArgument,
               kCaller << ": `num_bits`=" << o.num_bits << " outside [2, 16]");
  QKIT_REQUIRE(o.stride >= 1, InvalidArgument,
               kCaller << ": `stride`=" << o.stride << " must be >= 1");
  const int64_t nc = num_edges - 1;
  QKIT_REQUIRE(o.start_bin >= 0 && o.start_bin < nc, InvalidArgument,
               kCaller << ": `start_bin`=" << o.start_bin << " outside [0, " << nc
                       << ") (no candidate to evaluate)");
  for (int64_t k = 0; k < num_edges; ++k) {
    QKIT_REQUIRE(std::isfinite(edges[k]), InvalidArgument,
                 kCaller << ": `edges[" << k << "]`=" << edges[k] << " is not finite");
  }
  for (int64_t k = 0; k < num_counts; ++k) {
    QKIT_REQUIRE(counts[k] >= 0, InvalidArgument,
                 kCaller << ": `counts[" << k << "]`=" << counts[k] << " is negative");
  }
  std::vector<float> centers(static_cast<size_t>(nc));
  for (int64_t k = 0; k < nc; ++k) centers[k] = (edges[k + 1] + edges[k]) / 2;
  // Non-zero centers only (a zero count gives a zero term), padded with zero-count entries to
  // a multiple of 64 (whole vectors on every target, whole groups of 8 accumulators).
  std::vector<float> cz, wz;
  for (int64_t k = 0; k < nc && k < num_counts; ++k) {
    if (counts[k] == 0) continue;
    cz.push_back(centers[k]);
    wz.push_back(static_cast<float>(counts[k]));  // torch .float() of the int64 counts
  }
  while (cz.size() % 64 != 0 || cz.empty()) {
    cz.push_back(0.0f);
    wz.push_back(0.0f);
  }
  const float bound =
      static_cast<float>((int64_t{1} << (o.num_bits - 1 + (o.is_unsigned ? 1 : 0))) - 1);
  MseSearchResult res;
  int64_t best = -1;
  for (int64_t i = o.start_bin; i < nc; i += o.stride) {
    const float amax = centers[static_cast<size_t>(i)];
    const double sum = HWY_DYNAMIC_DISPATCH(MseSum)(cz.data(), wz.data(), cz.size(), amax, bound);
    const float mse = static_cast<float>(sum / static_cast<double>(nc));
    res.mses.push_back(mse);
    if (best < 0 || mse < res.mses[static_cast<size_t>(best)]) {
      best = static_cast<int64_t>(res.mses.size()) - 1;  // first argmin: strict <
    }
  }
  res.center_index = o.start_bin + best * o.stride;
  res.amax = centers[static_cast<size_t>(res.center_index)];
  return res;
}

}  // namespace qkit
#endif  // HWY_ONCE
