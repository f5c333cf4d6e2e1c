// The single translation point from qkit's error hierarchy to torch's exception types, so that
// Python sees ValueError (InvalidArgument, DataLoss), IndexError (OutOfRange) and RuntimeError
// (FailedPrecondition). Every op body in torch/ runs inside Translate().
#ifndef QKIT_TORCH_ERRORS_H_
#define QKIT_TORCH_ERRORS_H_

#include <utility>

#include "qkit/error.h"

namespace qkit::torch_ext {

// Rethrows the qkit::Error being handled as the matching c10 error (message unchanged, already
// naming the function, the argument and the value). Call only inside a catch block.
[[noreturn]] void RethrowAsTorchError();

// Runs f() and translates any qkit::Error it throws.
template <class F>
decltype(auto) Translate(F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const qkit::Error&) {
    RethrowAsTorchError();
  }
}

}  // namespace qkit::torch_ext

#endif  // QKIT_TORCH_ERRORS_H_
