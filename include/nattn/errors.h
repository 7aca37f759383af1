// Exceptions thrown by the library. Every message names the argument, its value and what is
// allowed. The Python layer maps them onto ValueError / NotImplementedError / RuntimeError; the
// CLI maps ValueError to exit code 2 and the others to exit code 1.
#pragma once

#include <stdexcept>
#include <string>

namespace nattn {

// Base of every nattn exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An argument is invalid (shape, rank, dtype, window rule, unknown tile config, ...).
class ValueError : public Error {
 public:
  using Error::Error;
};

// The request is valid but not supported (unknown backend, no backend can run it, a backend that
// cannot run this case).
class NotImplementedError : public Error {
 public:
  using Error::Error;
};

// Anything else that went wrong at run time (a device error, a backend not compiled in).
class RuntimeError : public Error {
 public:
  using Error::Error;
};

}  // namespace nattn
