// Helpers shared by the libFuzzer targets: a byte reader that never fails (missing bytes read
// as 0) and a crash-on-violation check that prints what went wrong.
#ifndef QKIT_FUZZ_FUZZ_UTIL_H_
#define QKIT_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace qkit::fuzz {

class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  uint8_t U8() { return p_ < end_ ? *p_++ : 0; }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(U8()) << (8 * i);
    return v;
  }
  float F32() {  // any bit pattern: NaN payloads, denormals, ±Inf, ±0
    const uint32_t u = U32();
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  template <typename E>
  E Enum(int count) {
    return static_cast<E>(U8() % count);
  }
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t* pos() const { return p_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// Aborts (a libFuzzer crash) with a message when `cond` is false.
#define QKIT_FUZZ_CHECK(cond, ...)                              \
  do {                                                          \
    if (!(cond)) {                                              \
      std::fprintf(stderr, "QKIT_FUZZ_CHECK failed: %s\n  ", #cond); \
      std::fprintf(stderr, __VA_ARGS__);                        \
      std::fprintf(stderr, "\n");                               \
      std::abort();                                             \
    }                                                           \
  } while (0)

}  // namespace qkit::fuzz

#endif  // QKIT_FUZZ_FUZZ_UTIL_H_
