#pragma once
// Checks one JSON line given in parts, without holding it, by the grammar nlohmann::json::parse
// accepts (RFC 8259; strings must be well-formed UTF-8 without control characters and with paired
// surrogate escapes), and notes what a corpus reader needs of a top-level object: for each of a
// few keys, how often it occurs and the type of its last value (the one a parse keeps). Given an
// occurrence of one key to emit, a scan sends the unescaped bytes of that string value to a
// callback in parts of at most 64 KiB. Memory is a few bytes per nesting level (at most
// kMaxJsonLineDepth), whatever the length of the line.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gum {

inline constexpr size_t kMaxJsonLineDepth = 10000;

enum class JsonType { None, Object, Array, String, Number, Boolean, Null };

class JsonLineScanner {
 public:
  struct KeyStats {
    uint64_t count = 0;
    JsonType last_type = JsonType::None;
  };
  using TextCallback = std::function<void(std::string_view bytes)>;

  // Notes `keys` of the top-level object; with on_text, the `emit_occurrence`-th (from 1) value
  // of keys[emit_key], when a string, goes to on_text.
  explicit JsonLineScanner(std::vector<std::string> keys, size_t emit_key = 0, uint64_t emit_occurrence = 0,
                           TextCallback on_text = nullptr);

  void feed(std::string_view part);
  // After the last part: empty when the line is one JSON value, else what is wrong and where.
  std::string finish();

  JsonType top_type() const { return top_type_; }
  const KeyStats& key(size_t index) const { return stats_[index]; }

 private:
  enum class State { Value, ValueOrEnd, KeyOrEnd, Key, Colon, CommaOrEnd, String, Number, Literal, Done };
  enum class Num { Minus, Zero, Int, Dot, Frac, E, ESign, Exp };

  bool step(unsigned char c);  // false: the byte ends a number and is seen again
  void begin_value(unsigned char c);
  void string_byte(unsigned char c);
  void code_point(uint32_t cp);
  void out(unsigned char c);
  void end_string();
  bool number_byte(unsigned char c);
  void end_value();
  void flush_text();
  void fail(const char* why);

  std::vector<std::string> keys_;
  std::vector<KeyStats> stats_;
  size_t emit_key_;
  uint64_t emit_occurrence_;
  TextCallback on_text_;

  State state_ = State::Value;
  std::vector<char> stack_;  // '{' or '[' per open container
  JsonType top_type_ = JsonType::None;
  uint64_t position_ = 0;  // bytes consumed
  std::string error_;

  // The string being read.
  bool string_is_key_ = false;
  bool emitting_ = false;
  int escape_ = 0;  // 0 none, 1 after '\', 2..5 hex digits of \u read so far + 2
  uint32_t hex_ = 0;
  uint32_t high_surrogate_ = 0;  // a \uD800-\uDBFF waiting for its low half
  int utf8_left_ = 0;
  unsigned char utf8_lo_ = 0x80, utf8_hi_ = 0xBF;  // the range of the next continuation byte
  std::string key_;  // the key being read, up to one byte longer than the longest of keys_
  size_t key_limit_ = 0;
  int member_key_ = -1;  // index in keys_ of the top-level member whose value comes next
  std::string text_;     // unescaped bytes not yet sent to on_text_

  Num num_ = Num::Int;
  const char* literal_ = nullptr;
  size_t literal_at_ = 0;
};

}  // namespace gum
