#pragma once
// Config sections described by field tables. One line per key names the JSON key, the member
// of the section's struct that holds it and the values it accepts; the same table then checks
// for unknown keys (with the closest key as a hint), reads each value with its type and range,
// validates a struct built in code, and writes the section back for the resolved config:
//
//   const FieldTable<EvalConfig> kEvalFields = {
//       {"every_steps", &EvalConfig::every_steps, at_least(0)},
//       {"at_end", &EvalConfig::at_end},
//   };
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "gum/core/json_util.h"

namespace gum {

// The values a key accepts. Numbers must also be finite; `accepts` null means any finite number.
struct FieldRule {
  std::function<bool(double)> accepts;
  std::string text;                  // what `accepts` requires, completing "KEY = VALUE ...": "must be >= 0"
  std::vector<std::string> choices;  // strings: the accepted values; empty means any string
};

FieldRule at_least(double min);  // min <= x
FieldRule positive();            // 0 < x
// lo < x or lo <= x, and x < hi or x <= hi: "must be in [0, 1)".
FieldRule in_range(double lo, bool lo_open, double hi, bool hi_open);
FieldRule one_of(std::vector<std::string> choices);

// Usage errors naming `context`, `where` ("optimizer.beta2") and the value (`value_text` as
// the user wrote it) when it breaks the rule; a string outside the choices gets the closest
// choice as a hint.
void check_number(const FieldRule& rule, double value, const std::string& value_text, const std::string& context,
                  const std::string& where);
void check_string(const FieldRule& rule, const std::string& value, const std::string& context,
                  const std::string& where);

template <typename S>
struct Field {
  using Member =
      std::variant<bool S::*, int S::*, int64_t S::*, uint64_t S::*, float S::*, double S::*, std::string S::*>;
  Field(std::string key_, Member member_, FieldRule rule_ = FieldRule())  // any value of the type by default
      : key(std::move(key_)), member(member_), rule(std::move(rule_)) {}
  std::string key;
  Member member;
  FieldRule rule;
};

template <typename S>
using FieldTable = std::vector<Field<S>>;

template <typename S>
std::vector<std::string> field_keys(const FieldTable<S>& table) {
  std::vector<std::string> keys;
  for (const auto& f : table) keys.push_back(f.key);
  return keys;
}

// The fields of several tables, in order, as one table of S: a section made of shared groups
// of keys, each group a struct S derives from (`struct S : GroupA, GroupB { ... }`) with its
// own table, or S itself.
template <typename S, typename... Parts>
FieldTable<S> join_fields(const FieldTable<Parts>&... parts) {
  static_assert((std::is_base_of_v<Parts, S> && ...), "each part is a table of S or of a base of S");
  FieldTable<S> all;
  const auto append = [&all](const auto& part) {
    for (const auto& f : part)
      all.emplace_back(f.key, std::visit([](auto member) -> typename Field<S>::Member { return member; }, f.member),
                       f.rule);
  };
  (append(parts), ...);
  return all;
}

// Checks the value of one field of `value`; `path` is the section ("optimizer").
template <typename S>
void check_field(const Field<S>& f, const S& value, const std::string& context, const std::string& path) {
  const std::string where = path.empty() ? f.key : path + "." + f.key;
  std::visit(
      [&](auto member) {
        using T = std::decay_t<decltype(value.*member)>;
        if constexpr (std::is_same_v<T, std::string>)
          check_string(f.rule, value.*member, context, where);
        else if constexpr (!std::is_same_v<T, bool>) {
          std::ostringstream text;
          text << value.*member;
          check_number(f.rule, static_cast<double>(value.*member), text.str(), context, where);
        }
      },
      f.member);
}

template <typename S>
void check_fields(const FieldTable<S>& table, const S& value, const std::string& context, const std::string& path) {
  for (const auto& f : table) check_field(f, value, context, path);
}

// Reads the keys of `table` present in `obj` into `out` (read_key: type and integer range
// before narrowing), checking each against its rule. Keys of `obj` not in the table are left
// to the caller (reject_unknown_keys).
template <typename S>
void read_fields(const nlohmann::json& obj, const FieldTable<S>& table, S& out, const std::string& context,
                 const std::string& path) {
  for (const auto& f : table) {
    auto it = obj.find(f.key);
    if (it == obj.end() || it->is_null()) continue;
    std::visit([&](auto member) { read_key(obj, f.key, out.*member, context, path); }, f.member);
    check_field(f, out, context, path);
  }
}

// A whole section: `section` (null counts as empty) over the defaults of S, unknown keys rejected.
template <typename S>
S section_from_json(const nlohmann::json& section, const FieldTable<S>& table, const std::string& context,
                    const std::string& path) {
  const nlohmann::json& obj = section.is_null() ? nlohmann::json::object() : section;
  reject_unknown_keys(obj, field_keys(table), context, path);
  S out;
  read_fields(obj, table, out, context, path);
  return out;
}

// The JSON value of one field (for to_json and for comparing with a default).
template <typename S>
nlohmann::json field_value(const Field<S>& f, const S& value) {
  return std::visit([&](auto member) { return nlohmann::json(value.*member); }, f.member);
}

// Every field of `table` into `out[key]`.
template <typename S>
void write_fields(const FieldTable<S>& table, const S& value, nlohmann::json& out) {
  for (const auto& f : table) out[f.key] = field_value(f, value);
}

}  // namespace gum
