// qkit's error hierarchy: every public entry point validates its arguments and throws one of
// these, with a message naming the function, the argument and its value.
#ifndef QKIT_ERROR_H_
#define QKIT_ERROR_H_

#include <stdexcept>
#include <string>

namespace qkit {

// Base of every error qkit throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A malformed value: `bits`=17 outside [2, 16], a non-finite scale, a NaN where the policy
// forbids it, a dtype that is not supported.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// An index, axis or channel count outside what the tensor has.
class OutOfRange : public Error {
 public:
  using Error::Error;
};

// The object is not in a state where the call makes sense (e.g. qparams of an empty observer
// whose policy is to refuse).
class FailedPrecondition : public Error {
 public:
  using Error::Error;
};

// Serialized data that is truncated, corrupted or of an unknown version.
class DataLoss : public Error {
 public:
  using Error::Error;
};

}  // namespace qkit

#endif  // QKIT_ERROR_H_
