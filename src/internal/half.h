// float16 / bfloat16 <-> float32 conversions (round to nearest-even, NaN kept quiet),
// matching torch's CPU conversions.
#ifndef QKIT_INTERNAL_HALF_H_
#define QKIT_INTERNAL_HALF_H_

#include <cstdint>
#include <cstring>

namespace qkit::internal {

inline float F32FromBF16Bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t BF16BitsFromF32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

// IEEE binary16 via the compiler's _Float16 (GCC >= 12 on x86-64; correctly rounded).
inline float F32FromF16Bits(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

inline uint16_t F16BitsFromF32(float f) {
  const _Float16 v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

}  // namespace qkit::internal

#endif  // QKIT_INTERNAL_HALF_H_
