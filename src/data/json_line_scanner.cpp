#include "json_line_scanner.h"

#include <algorithm>

namespace gum {
namespace {

constexpr size_t kTextFlushBytes = 64 << 10;

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

int hex_value(unsigned char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

JsonLineScanner::JsonLineScanner(std::vector<std::string> keys, size_t emit_key, uint64_t emit_occurrence,
                                 TextCallback on_text)
    : keys_(std::move(keys)),
      stats_(keys_.size()),
      emit_key_(emit_key),
      emit_occurrence_(on_text ? emit_occurrence : 0),
      on_text_(std::move(on_text)) {
  for (const auto& k : keys_) key_limit_ = std::max(key_limit_, k.size() + 1);
}

void JsonLineScanner::fail(const char* why) {
  if (error_.empty()) error_ = std::string(why) + " at byte " + std::to_string(position_ + 1);
}

void JsonLineScanner::feed(std::string_view part) {
  size_t i = 0;
  while (i < part.size() && error_.empty()) {
    if (step(static_cast<unsigned char>(part[i]))) {
      ++i;
      ++position_;
    }
  }
  flush_text();
}

std::string JsonLineScanner::finish() {
  if (error_.empty() && state_ == State::Number) number_byte(' ');
  if (error_.empty() && state_ != State::Done) fail("unexpected end of the line");
  flush_text();
  return error_;
}

bool JsonLineScanner::step(unsigned char c) {
  switch (state_) {
    case State::String:
      string_byte(c);
      return true;
    case State::Number:
      return number_byte(c);
    case State::Literal:
      if (c != static_cast<unsigned char>(literal_[literal_at_])) {
        fail("invalid literal");
      } else if (literal_[++literal_at_] == '\0') {
        end_value();
      }
      return true;
    default:
      break;
  }
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return true;
  switch (state_) {
    case State::ValueOrEnd:
      if (c == ']') {
        stack_.pop_back();
        end_value();
        return true;
      }
      begin_value(c);
      return true;
    case State::Value:
      begin_value(c);
      return true;
    case State::KeyOrEnd:
      if (c == '}') {
        stack_.pop_back();
        end_value();
        return true;
      }
      [[fallthrough]];
    case State::Key:
      if (c != '"') {
        fail("expected a string key");
        return true;
      }
      string_is_key_ = true;
      key_.clear();
      state_ = State::String;
      return true;
    case State::Colon:
      if (c != ':') fail("expected ':'");
      state_ = State::Value;
      return true;
    case State::CommaOrEnd: {
      const bool object = stack_.back() == '{';
      if (c == ',') {
        state_ = object ? State::Key : State::Value;
      } else if (c == (object ? '}' : ']')) {
        stack_.pop_back();
        end_value();
      } else {
        fail(object ? "expected ',' or '}'" : "expected ',' or ']'");
      }
      return true;
    }
    case State::Done:
      fail("expected the end of the line after the value");
      return true;
    default:
      return true;
  }
}

void JsonLineScanner::begin_value(unsigned char c) {
  JsonType type = JsonType::None;
  if (c == '{')
    type = JsonType::Object;
  else if (c == '[')
    type = JsonType::Array;
  else if (c == '"')
    type = JsonType::String;
  else if (c == '-' || is_digit(c))
    type = JsonType::Number;
  else if (c == 't' || c == 'f')
    type = JsonType::Boolean;
  else if (c == 'n')
    type = JsonType::Null;
  if (type == JsonType::None) return fail("unexpected character");
  if (stack_.empty()) top_type_ = type;
  if (stack_.size() == 1 && stack_[0] == '{' && member_key_ >= 0) {
    KeyStats& s = stats_[static_cast<size_t>(member_key_)];
    ++s.count;
    s.last_type = type;
    emitting_ =
        type == JsonType::String && static_cast<size_t>(member_key_) == emit_key_ && s.count == emit_occurrence_;
  }
  member_key_ = -1;
  switch (type) {
    case JsonType::Object:
    case JsonType::Array:
      if (stack_.size() >= kMaxJsonLineDepth) return fail("nested deeper than 10000 levels");
      stack_.push_back(static_cast<char>(c));
      state_ = type == JsonType::Object ? State::KeyOrEnd : State::ValueOrEnd;
      return;
    case JsonType::String:
      string_is_key_ = false;
      state_ = State::String;
      return;
    case JsonType::Number:
      num_ = c == '-' ? Num::Minus : c == '0' ? Num::Zero : Num::Int;
      state_ = State::Number;
      return;
    default:
      literal_ = c == 't' ? "true" : c == 'f' ? "false" : "null";
      literal_at_ = 1;
      state_ = State::Literal;
      return;
  }
}

void JsonLineScanner::string_byte(unsigned char c) {
  if (utf8_left_ > 0) {
    if (c < utf8_lo_ || c > utf8_hi_) return fail("ill-formed UTF-8 in a string");
    utf8_lo_ = 0x80;
    utf8_hi_ = 0xBF;
    --utf8_left_;
    return out(c);
  }
  if (escape_ >= 2) {
    const int digit = hex_value(c);
    if (digit < 0) return fail("invalid \\u escape");
    hex_ = hex_ * 16 + static_cast<uint32_t>(digit);
    if (++escape_ == 6) {
      escape_ = 0;
      code_point(hex_);
    }
    return;
  }
  if (escape_ == 1) {
    escape_ = 0;
    if (high_surrogate_ && c != 'u') return fail("a high surrogate escape without its low half");
    switch (c) {
      case '"':
        return out('"');
      case '\\':
        return out('\\');
      case '/':
        return out('/');
      case 'b':
        return out('\b');
      case 'f':
        return out('\f');
      case 'n':
        return out('\n');
      case 'r':
        return out('\r');
      case 't':
        return out('\t');
      case 'u':
        escape_ = 2;
        hex_ = 0;
        return;
      default:
        return fail("invalid escape");
    }
  }
  if (high_surrogate_ && c != '\\') return fail("a high surrogate escape without its low half");
  if (c == '\\') {
    escape_ = 1;
    return;
  }
  if (c == '"') return end_string();
  if (c < 0x20) return fail("control character in a string");
  if (c >= 0x80) {
    if (c >= 0xC2 && c <= 0xDF)
      utf8_left_ = 1;
    else if (c == 0xE0)
      utf8_left_ = 2, utf8_lo_ = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
      utf8_left_ = 2;
    else if (c == 0xED)
      utf8_left_ = 2, utf8_hi_ = 0x9F;
    else if (c == 0xF0)
      utf8_left_ = 3, utf8_lo_ = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
      utf8_left_ = 3;
    else if (c == 0xF4)
      utf8_left_ = 3, utf8_hi_ = 0x8F;
    else
      return fail("ill-formed UTF-8 in a string");
  }
  out(c);
}

void JsonLineScanner::code_point(uint32_t cp) {
  if (high_surrogate_) {
    if (cp < 0xDC00 || cp > 0xDFFF) return fail("a high surrogate escape without its low half");
    cp = 0x10000 + ((high_surrogate_ - 0xD800) << 10) + (cp - 0xDC00);
    high_surrogate_ = 0;
  } else if (cp >= 0xD800 && cp <= 0xDBFF) {
    high_surrogate_ = cp;
    return;
  } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
    return fail("a low surrogate escape without its high half");
  }
  if (cp < 0x80) {
    out(static_cast<unsigned char>(cp));
  } else if (cp < 0x800) {
    out(static_cast<unsigned char>(0xC0 | (cp >> 6)));
    out(static_cast<unsigned char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out(static_cast<unsigned char>(0xE0 | (cp >> 12)));
    out(static_cast<unsigned char>(0x80 | ((cp >> 6) & 0x3F)));
    out(static_cast<unsigned char>(0x80 | (cp & 0x3F)));
  } else {
    out(static_cast<unsigned char>(0xF0 | (cp >> 18)));
    out(static_cast<unsigned char>(0x80 | ((cp >> 12) & 0x3F)));
    out(static_cast<unsigned char>(0x80 | ((cp >> 6) & 0x3F)));
    out(static_cast<unsigned char>(0x80 | (cp & 0x3F)));
  }
}

void JsonLineScanner::out(unsigned char c) {
  if (string_is_key_) {
    if (key_.size() < key_limit_) key_.push_back(static_cast<char>(c));
  } else if (emitting_) {
    text_.push_back(static_cast<char>(c));
    if (text_.size() >= kTextFlushBytes) flush_text();
  }
}

void JsonLineScanner::end_string() {
  if (string_is_key_) {
    string_is_key_ = false;
    member_key_ = -1;
    if (stack_.size() == 1)
      for (size_t i = 0; i < keys_.size() && member_key_ < 0; ++i)
        if (key_ == keys_[i]) member_key_ = static_cast<int>(i);
    state_ = State::Colon;
    return;
  }
  flush_text();
  emitting_ = false;
  end_value();
}

bool JsonLineScanner::number_byte(unsigned char c) {
  const bool digit = is_digit(c);
  switch (num_) {
    case Num::Minus:
      if (!digit) break;
      num_ = c == '0' ? Num::Zero : Num::Int;
      return true;
    case Num::Zero:
    case Num::Int:
      if (digit && num_ == Num::Int) return true;
      if (c == '.') return num_ = Num::Dot, true;
      if (c == 'e' || c == 'E') return num_ = Num::E, true;
      if (digit) break;  // a leading zero
      end_value();
      return false;
    case Num::Dot:
      if (!digit) break;
      num_ = Num::Frac;
      return true;
    case Num::Frac:
      if (digit) return true;
      if (c == 'e' || c == 'E') return num_ = Num::E, true;
      end_value();
      return false;
    case Num::E:
      if (c == '+' || c == '-') return num_ = Num::ESign, true;
      if (!digit) break;
      num_ = Num::Exp;
      return true;
    case Num::ESign:
      if (!digit) break;
      num_ = Num::Exp;
      return true;
    case Num::Exp:
      if (digit) return true;
      end_value();
      return false;
  }
  fail("invalid number");
  return true;
}

void JsonLineScanner::end_value() { state_ = stack_.empty() ? State::Done : State::CommaOrEnd; }

void JsonLineScanner::flush_text() {
  if (text_.empty()) return;
  on_text_(text_);
  text_.clear();
}

}  // namespace gum
