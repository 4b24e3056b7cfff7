#pragma once
// Helpers for reading user JSON with errors that name the key path ("optimizer.rank")
// and, for an unknown key, the closest valid one.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gum/core/error.h"

namespace gum {

// The candidate closest to `name` by edit distance ("" when none is reasonably close).
std::string closest_match(const std::string& name, const std::vector<std::string>& candidates);

// Usage error for any key of `obj` not in `known`: "config.json: unknown key 'optimizer.rnak'
// (did you mean 'optimizer.rank'?)". `path` is the dotted prefix ("optimizer").
void reject_unknown_keys(const nlohmann::json& obj, const std::vector<std::string>& known,
                         const std::string& context, const std::string& path);

// Reads obj[key] into `out` when present; a value of the wrong type is a usage error naming
// context and path.key and the expected type. Integers are accepted for floating fields.
template <typename T>
void read_key(const nlohmann::json& obj, const std::string& key, T& out, const std::string& context,
              const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return;
  const std::string where = path.empty() ? key : path + "." + key;
  bool ok;
  if constexpr (std::is_same_v<T, bool>) ok = it->is_boolean();
  else if constexpr (std::is_integral_v<T>) ok = it->is_number_integer();
  else if constexpr (std::is_floating_point_v<T>) ok = it->is_number();
  else if constexpr (std::is_same_v<T, std::string>) ok = it->is_string();
  else ok = true;
  if (!ok) {
    const char* expected = std::is_same_v<T, bool>             ? "a boolean"
                           : std::is_integral_v<T>              ? "an integer"
                           : std::is_floating_point_v<T>        ? "a number"
                           : std::is_same_v<T, std::string>     ? "a string"
                                                                : "a value";
    usage_error(context, ": key '", where, "' must be ", expected, ", got ", it->dump());
  }
  out = it->get<T>();
}

// Parses a JSON file; a syntax error names the file, line and column.
nlohmann::json read_json_file(const std::string& path);

}  // namespace gum
