// Argument checks for public entry points (always on) and debug checks for kernels.
#ifndef QKIT_INTERNAL_CHECK_H_
#define QKIT_INTERNAL_CHECK_H_

#include <cassert>
#include <sstream>

#include "qkit/error.h"

// QKIT_REQUIRE(cond, InvalidArgument, "qkit::FakeQuantize: `bits`=" << bits << " outside [2, 16]")
// throws qkit::<kind> with the streamed message when cond is false.
#define QKIT_REQUIRE(cond, kind, msg)             \
  do {                                            \
    if (!(cond)) {                                \
      std::ostringstream qkit_require_os_;        \
      qkit_require_os_ << msg;                    \
      throw ::qkit::kind(qkit_require_os_.str()); \
    }                                             \
  } while (0)

#define QKIT_FAIL(kind, msg) QKIT_REQUIRE(false, kind, msg)

// Kernel-side invariant, checked in debug builds only.
#define QKIT_DCHECK(cond) assert(cond)

#endif  // QKIT_INTERNAL_CHECK_H_
