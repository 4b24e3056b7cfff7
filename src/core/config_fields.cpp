#include "gum/core/config_fields.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "gum/core/error.h"

namespace gum {

namespace {

std::string number_text(double x) {
  std::ostringstream out;
  out << x;
  return out.str();
}

}  // namespace

FieldRule at_least(double min) {
  return {[min](double x) { return x >= min; }, "must be >= " + number_text(min), {}};
}

FieldRule positive() {
  return {[](double x) { return x > 0; }, "must be positive", {}};
}

FieldRule in_range(double lo, bool lo_open, double hi, bool hi_open) {
  const std::string text = "must be in " + std::string(lo_open ? "(" : "[") + number_text(lo) + ", " + number_text(hi) +
                           (hi_open ? ")" : "]");
  return {[=](double x) { return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi); }, text, {}};
}

FieldRule one_of(std::vector<std::string> choices) { return {nullptr, "", std::move(choices)}; }

void check_number(const FieldRule& rule, double value, const std::string& value_text, const std::string& context,
                  const std::string& where) {
  if (!std::isfinite(value)) usage_error(context, ": ", where, " = ", value_text, " must be a finite number");
  if (rule.accepts && !rule.accepts(value)) usage_error(context, ": ", where, " = ", value_text, " ", rule.text);
}

void check_string(const FieldRule& rule, const std::string& value, const std::string& context,
                  const std::string& where) {
  const auto& valid = rule.choices;
  if (valid.empty() || std::find(valid.begin(), valid.end(), value) != valid.end()) return;
  std::string list;
  for (const auto& v : valid) list += (list.empty() ? "\"" : ", \"") + v + "\"";
  const std::string hint = closest_match(value, valid);
  usage_error(context, ": ", where, " = \"", value, "\" is not one of ", list,
              hint.empty() ? "" : " (did you mean \"" + hint + "\"?)");
}

}  // namespace gum
