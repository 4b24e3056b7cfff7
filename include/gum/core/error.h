#pragma once
// One exception type for everything that can go wrong: it carries the context a
// user needs (file, key, line, step, tensor) and main() turns it into one line.
#include <stdexcept>
#include <string>

namespace gum {

enum class ErrorKind {
  Usage,    // bad command line or config: exit code 2
  Runtime,  // bad data file, I/O failure, NaN loss, device error: exit code 1
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return kind_ == ErrorKind::Usage ? 2 : 1; }

 private:
  ErrorKind kind_;
};

// Runtime failure with a message: throw runtime_error("shard ", path, ": bad magic").
template <typename... Parts>
[[noreturn]] void runtime_error(const Parts&... parts);
template <typename... Parts>
[[noreturn]] void usage_error(const Parts&... parts);

// Internal invariant (a bug in gum_train, not bad input).
#define GUM_CHECK(cond, ...)                                                                    \
  do {                                                                                          \
    if (!(cond)) ::gum::runtime_error(__FILE__, ":", __LINE__, ": check failed: " #cond " ", ##__VA_ARGS__); \
  } while (0)

}  // namespace gum

#include <sstream>
namespace gum {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
template <typename... Parts>
[[noreturn]] void runtime_error(const Parts&... parts) {
  throw Error(ErrorKind::Runtime, concat(parts...));
}
template <typename... Parts>
[[noreturn]] void usage_error(const Parts&... parts) {
  throw Error(ErrorKind::Usage, concat(parts...));
}
}  // namespace gum
