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

#if defined(__clang__) && __clang_major__ < 15
// clang < 15 has no _Float16 on x86-64 (the libFuzzer build, fuzz/, uses Debian's clang-14):
// the same conversions in integer arithmetic, round to nearest-even, NaN quieted.
inline float F32FromF16Bits(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    float f = static_cast<float>(mant) * 5.9604644775390625e-08f;  // mant * 2^-24, exact
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0u);
  } else {
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t F16BitsFromF32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (a < 0x38800000u) {  // below 2^-14: a subnormal (or zero) binary16
    float m;
    std::memcpy(&m, &a, 4);
    const float scaled = m * 16777216.0f;  // |f| * 2^24, exact
    // Round to nearest-even without <cmath>: scaled < 1024, so 2^23 + scaled rounds the
    // fraction away in float32 addition (default rounding mode: nearest-even).
    const float r = (scaled + 8388608.0f) - 8388608.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(r));
  }
  uint32_t b = a - (112u << 23);
  b += 0xfffu + ((b >> 13) & 1u);
  return static_cast<uint16_t>(sign | (b >> 13));
}
#else
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

#endif

}  // namespace qkit::internal

#endif  // QKIT_INTERNAL_HALF_H_
