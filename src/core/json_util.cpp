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

void reject_unknown_keys(const nlohmann::json& obj, const std::vector<std::string>& known, const std::string& context,
                         const std::string& path) {
  const std::string prefix = path.empty() ? "" : path + ".";
  if (!obj.is_object()) usage_error(context, ": '", path, "' must be a JSON object, got ", obj.dump());
  for (const auto& item : obj.items()) {
    if (std::find(known.begin(), known.end(), item.key()) != known.end()) continue;
    std::string hint = closest_match(item.key(), known);
    usage_error(context, ": unknown key '", prefix, item.key(), "'",
                hint.empty() ? std::string() : " (did you mean '" + prefix + hint + "'?)");
  }
}

namespace {

// Deeper than this, read_json_file refuses a file: no config is nested more than a few levels.
constexpr size_t kMaxJsonDepth = 100;

// "PATH:LINE:COLUMN" of a byte offset into the text of PATH.
std::string text_position(const std::string& path, const std::string& text, size_t offset) {
  offset = std::min(offset, text.size());
  const size_t line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(offset), '\n');
  const size_t line_start = text.rfind('\n', offset == 0 ? 0 : offset - 1);
  const size_t column = line_start == std::string::npos ? offset : offset - line_start - 1;
  return path + ":" + std::to_string(line) + ":" + std::to_string(column);
}

// Copying and destroying a parsed value recurse once per level, so a document nested 200,000
// deep overflows the stack: refuse it before parsing. Strings are skipped (brackets in them count
// for nothing).
void check_json_nesting(const std::string& path, const std::string& text) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        usage_error(text_position(path, text, i), ": JSON nested deeper than ", kMaxJsonDepth, " levels");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) runtime_error(path, ": cannot open file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  check_json_nesting(path, text);
  // The keys leading to the value being parsed, to name the key of a number out of range (1e999),
  // which the parser reports without a position.
  std::vector<std::string> keys;
  auto track_keys = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::key) keys.back() = parsed.get<std::string>();
    if (event == Event::object_end) keys.pop_back();
    return true;
  };
  try {
    return nlohmann::json::parse(text, track_keys);
  } catch (const nlohmann::json::parse_error& e) {
    usage_error(text_position(path, text, static_cast<size_t>(e.byte)), ": invalid JSON (", e.what(), ")");
  } catch (const nlohmann::json::exception& e) {
    std::string key;
    for (const auto& k : keys) key += (key.empty() ? "" : ".") + k;
    usage_error(path, ": key '", key, "': ", e.what());
  }
}

}  // namespace gum
