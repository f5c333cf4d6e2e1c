// MSE calibration over a histogram of |x|: NVIDIA pytorch-quantization's _compute_amax_mse
// (upstream runs it on CUDA only), evaluated on the CPU with the CUDA kernel's arithmetic.
// SPEC.md §4.6.
#ifndef QKIT_CALIB_MSE_H_
#define QKIT_CALIB_MSE_H_

#include <cstdint>
#include <vector>

namespace qkit {

struct MseSearchOptions {
  int num_bits = 8;  // [2, 16]
  bool is_unsigned = false;
  int64_t stride = 1;       // >= 1
  int64_t start_bin = 128;  // >= 0
};

struct MseSearchResult {
  int64_t center_index = 0;  // chosen candidate: start_bin + first_argmin * stride
  float amax = 0.0f;         // centers[center_index]
  std::vector<float> mses;   // mean squared error of every candidate
};

// centers[k] = f32(f32(edges[k + 1] + edges[k]) / 2) for k < num_centers = num_edges - 1;
// count[k] = f32(counts[k]) (0 beyond num_counts; counts beyond num_centers are ignored, where
// upstream's broadcast would fail). For each candidate i = start_bin,
// start_bin + stride, ... < num_centers: amax = centers[i]; every center is fake-quantized as
// the CUDA kernel does with narrow range (bound = 2^(num_bits - 1 + is_unsigned) - 1):
// amax < 2^-24 gives 0, else s = f32(bound / amax), q = f32(clamp(rint(f32(c * s)), -bound,
// bound) / s); mse_i = f32(sum_k f32(f32(f32(q - c)^2) * count[k]) / num_centers), the sum taken
// in float64 over the non-zero terms in a fixed order (8 interleaved accumulators, combined
// pairwise; CUDA's float32 tree reduction is not reproduced: values agree to ~1e-7 relative).
// Choice: the FIRST index attaining the minimum. Deterministic for every SIMD target.
// REQUIRES: num_edges >= 2, start_bin < num_edges - 1 (InvalidArgument; upstream's argmin of
// an empty list raises), edges finite.
// Cost: O(candidates * nonzero bins), SIMD; ~1-3 ms at 2048 bins.
MseSearchResult MseSearch(const int64_t* counts, int64_t num_counts, const float* edges,
                          int64_t num_edges, const MseSearchOptions& options);

}  // namespace qkit

#endif  // QKIT_CALIB_MSE_H_
