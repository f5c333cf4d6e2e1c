// Size, layout and channel sweeps shared by the kernel tests.
#ifndef QKIT_TESTS_UTIL_SWEEPS_H_
#define QKIT_TESTS_UTIL_SWEEPS_H_

#include <cstdint>
#include <random>
#include <vector>

namespace qkit::test {

// 0 .. 3*16+1 (covers every lane count up to AVX-512 floats), pot ± 1 up to 4097, a few random
// counts up to 256, and sizes spanning several threading chunks (64K grain).
inline std::vector<int64_t> Counts(std::mt19937_64& rng, bool include_large = true) {
  std::vector<int64_t> c;
  for (int64_t i = 0; i <= 49; ++i) c.push_back(i);
  for (int64_t p = 64; p <= 4096; p *= 2) {
    c.push_back(p - 1);
    c.push_back(p);
    c.push_back(p + 1);
  }
  std::uniform_int_distribution<int64_t> r(50, 256);
  for (int i = 0; i < 4; ++i) c.push_back(r(rng));
  if (include_large) {
    c.push_back((int64_t{1} << 16) + 7);   // just past one chunk
    c.push_back(3 * (int64_t{1} << 16) + 13);  // several chunks, ragged tail
  }
  return c;
}

inline const std::vector<int64_t>& ChannelCounts() {
  static const std::vector<int64_t> c = {1, 3, 7, 16, 17, 64, 1000};
  return c;
}

}  // namespace qkit::test

#endif  // QKIT_TESTS_UTIL_SWEEPS_H_
