#include "gum/core/json_util.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace gum {

static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(name, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  // Farther than half the name is a different word, not a typo.
  return best_distance <= std::max<size_t>(2, name.size() / 2) ? best : "";
}

void reject_unknown_keys(const nlohmann::json& obj, const std::vector<std::string>& known,
                         const std::string& context, const std::string& path) {
  const std::string prefix = path.empty() ? "" : path + ".";
  if (!obj.is_object()) usage_error(context, ": '", path, "' must be a JSON object, got ", obj.dump());
  for (const auto& item : obj.items()) {
    if (std::find(known.begin(), known.end(), item.key()) != known.end()) continue;
    std::string hint = closest_match(item.key(), known);
    usage_error(context, ": unknown key '", prefix, item.key(), "'",
                hint.empty() ? std::string() : " (did you mean '" + prefix + hint + "'?)");
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) runtime_error(path, ": cannot open file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (const nlohmann::json::parse_error& e) {
    // Translate the byte offset into line:column for the user.
    const std::string text = buffer.str();
    size_t offset = std::min(static_cast<size_t>(e.byte), text.size());
    size_t line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(offset), '\n');
    size_t line_start = text.rfind('\n', offset == 0 ? 0 : offset - 1);
    size_t column = line_start == std::string::npos ? offset : offset - line_start - 1;
    usage_error(path, ":", line, ":", column, ": invalid JSON (", e.what(), ")");
  }
}

}  // namespace gum
