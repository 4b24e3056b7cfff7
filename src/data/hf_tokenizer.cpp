#include "gum/data/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "gum/core/error.h"

namespace gum {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0 when ill-formed; `subpart` receives the
// length of the maximal ill-formed prefix to replace (at least 1), per Unicode §3.9 (Table 3-7).
size_t utf8_sequence(std::string_view s, size_t i, size_t& subpart) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  subpart = 1;
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= s.size()) return 0;
    const unsigned char d = b(i + k);
    if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return 0;
    subpart = k + 1;
  }
  return need;
}

// The code point at s[i] (s is well-formed) and its byte length.
char32_t next_char(std::string_view s, size_t i, size_t& length) {
  utf8proc_int32_t cp = 0;
  length = static_cast<size_t>(utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                                static_cast<utf8proc_ssize_t>(s.size() - i), &cp));
  return static_cast<char32_t>(cp);
}

size_t char_length(std::string_view s, size_t i) {
  size_t length = 0;
  next_char(s, i, length);
  return length;
}

void append_utf8(std::string& out, char32_t cp) {
  utf8proc_uint8_t buffer[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

// Rust's char::is_whitespace: the Unicode White_Space property.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Letters and numbers by general category (Rust's is_alphanumeric, which single_word uses).
bool is_word_char(char32_t c) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO) ||
         (category >= UTF8PROC_CATEGORY_ND && category <= UTF8PROC_CATEGORY_NO);
}

}  // namespace

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t subpart = 0;
    const size_t n = utf8_sequence(bytes, i, subpart);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += subpart;
    }
  }
  return out;
}

namespace {

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t subpart = 0;
    const size_t n = utf8_sequence(s, i, subpart);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// JSON access that names the path of every value it complains about.

struct Node {
  const json& value;
  std::string path;
  const std::string& file;

  [[noreturn]] void fail(const std::string& what) const { runtime_error(file, ": ", path, ": ", what); }
  bool has(const char* key) const { return value.is_object() && value.contains(key) && !value.at(key).is_null(); }
  Node at(const char* key) const {
    if (!value.is_object()) fail("expected an object");
    if (!value.contains(key)) runtime_error(file, ": ", path.empty() ? "" : path + ".", key, ": missing");
    return Node{value.at(key), path.empty() ? std::string(key) : path + "." + key, file};
  }
  Node operator[](size_t i) const { return Node{value.at(i), path + "[" + std::to_string(i) + "]", file}; }
  size_t size() const {
    if (!value.is_array()) fail("expected an array");
    return value.size();
  }
  std::string str() const {
    if (!value.is_string()) fail("expected a string");
    return value.get<std::string>();
  }
  bool boolean() const {
    if (!value.is_boolean()) fail("expected true or false");
    return value.get<bool>();
  }
  int64_t integer() const {
    if (!value.is_number_integer()) fail("expected an integer");
    return value.get<int64_t>();
  }
  bool flag(const char* key, bool fallback) const { return has(key) ? at(key).boolean() : fallback; }
  std::string type() const { return at("type").str(); }
  [[noreturn]] void unsupported() const { runtime_error(file, ": ", path, ".type: unsupported \"", type(), "\""); }
};

// A single code point given as a JSON string ("▁", " ").
char32_t single_char(const Node& node) {
  const std::string text = node.str();
  size_t length = 0;
  if (text.empty() || !is_valid_utf8(text) || (next_char(text, 0, length), length != text.size()))
    node.fail("expected a single character");
  return next_char(text, 0, length);
}

// ---------------------------------------------------------------------------------------------
// Patterns: a literal string or a regular expression (PCRE2 with UTF and Unicode properties, JIT),
// searched as the `tokenizers` library searches its Oniguruma regexes.

struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Oniguruma's \s (the Unicode White_Space property) includes U+0085, PCRE2's does not: \s and \S
// are widened to match the same characters.
std::string pcre2_from_oniguruma(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

class Pattern {
 public:
  Pattern() = default;
  Pattern(const Node& node, bool invert) : invert_(invert) {
    if (node.has("String")) {
      literal_ = node.at("String").str();
    } else if (node.has("Regex")) {
      const Node regex = node.at("Regex");
      const std::string translated = pcre2_from_oniguruma(regex.str());
      int error = 0;
      PCRE2_SIZE offset = 0;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                       PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
      if (!code) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof(message));
        regex.fail(std::string("invalid regular expression at offset ") + std::to_string(offset) + ": " +
                   reinterpret_cast<const char*>(message));
      }
      pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
      regex_.reset(code, pcre2_code_free);
    } else {
      node.fail("expected {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  explicit Pattern(std::string literal) : literal_(std::move(literal)) {}

  // The whole of `text` as alternating non-matching and matching spans, in order.
  void find(std::string_view text, std::vector<Span>& spans) const {
    spans.clear();
    if (text.empty()) {
      spans.push_back({0, 0, false});
      return;
    }
    size_t previous = 0;
    const auto add_match = [&](size_t begin, size_t end) {
      if (previous != begin) spans.push_back({previous, begin, invert_});
      spans.push_back({begin, end, !invert_});
      previous = end;
    };
    if (!regex_) {
      if (!literal_.empty())
        for (size_t at = text.find(literal_); at != std::string_view::npos;
             at = text.find(literal_, at + literal_.size()))
          add_match(at, at + literal_.size());
    } else {
      search_all(text, add_match);
    }
    if (previous != text.size()) spans.push_back({previous, text.size(), invert_});
  }

 private:
  // Oniguruma's find_iter as the `onig` crate drives it: after a match ending at e, search again
  // from e; an empty match right where the previous match ended is skipped by one character.
  template <class F>
  void search_all(std::string_view text, const F& on_match) const {
    thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create(1, nullptr), pcre2_match_data_free);
    size_t start = 0;
    size_t last_match_end = std::string_view::npos;
    while (start <= text.size()) {
      const int rc = pcre2_match(regex_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                 PCRE2_NO_UTF_CHECK, data.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) runtime_error("tokenizer regex: match failed with PCRE2 error ", rc);
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
      const size_t begin = ovector[0];
      const size_t end = ovector[1];
      if (begin == end && end == last_match_end) {
        start += start < text.size() ? char_length(text, start) : 1;
        continue;
      }
      start = end;
      last_match_end = end;
      on_match(begin, end);
    }
  }

  std::string literal_;
  std::shared_ptr<pcre2_code> regex_;
  bool invert_ = false;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

SplitBehavior parse_behavior(const Node& node) {
  const std::string name = node.str();
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  node.fail("unsupported split behavior \"" + name + "\"");
}

// Turns the spans of `text` into the pieces the behavior keeps (NormalizedString::split).
void split_spans(std::vector<Span>& spans, SplitBehavior behavior) {
  std::vector<Span> out;
  out.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::Isolated:
      out = spans;
      break;
    case SplitBehavior::Removed:
      for (const Span& s : spans)
        if (!s.is_match) out.push_back(s);
      break;
    case SplitBehavior::Contiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back(s);
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::MergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back(s);
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty())
          out.back().begin = it->begin;
        else
          out.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  spans.swap(out);
}

// ---------------------------------------------------------------------------------------------
// The byte-level alphabet (GPT-2): printable bytes stand for themselves, the others for U+0100...

struct ByteAlphabet {
  std::string encoded[256];  // byte -> its character, as UTF-8
  int16_t decoded[0x144];    // code point -> byte, -1 outside the alphabet
  ByteAlphabet() {
    std::fill(std::begin(decoded), std::end(decoded), int16_t{-1});
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      append_utf8(encoded[b], cp);
      decoded[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// ---------------------------------------------------------------------------------------------
// Normalizers

struct NormalizerStep {
  enum Kind { Nfc, Nfd, Nfkc, Nfkd, Prepend, Replace } kind;
  std::string text;  // Prepend: what to put first; Replace: the replacement
  Pattern pattern;   // Replace
};

void parse_normalizer(const Node& node, std::vector<NormalizerStep>& steps) {
  const std::string type = node.type();
  if (type == "Sequence") {
    const Node list = node.at("normalizers");
    for (size_t i = 0; i < list.size(); ++i) parse_normalizer(list[i], steps);
  } else if (type == "NFC") {
    steps.push_back({NormalizerStep::Nfc, {}, {}});
  } else if (type == "NFD") {
    steps.push_back({NormalizerStep::Nfd, {}, {}});
  } else if (type == "NFKC") {
    steps.push_back({NormalizerStep::Nfkc, {}, {}});
  } else if (type == "NFKD") {
    steps.push_back({NormalizerStep::Nfkd, {}, {}});
  } else if (type == "Prepend") {
    steps.push_back({NormalizerStep::Prepend, node.at("prepend").str(), {}});
  } else if (type == "Replace") {
    steps.push_back({NormalizerStep::Replace, node.at("content").str(), Pattern(node.at("pattern"), false)});
  } else {
    node.unsupported();
  }
}

std::string unicode_normalize(const std::string& text, NormalizerStep::Kind kind) {
  int options = UTF8PROC_STABLE;
  if (kind == NormalizerStep::Nfc || kind == NormalizerStep::Nfkc) options |= UTF8PROC_COMPOSE;
  if (kind == NormalizerStep::Nfd || kind == NormalizerStep::Nfkd) options |= UTF8PROC_DECOMPOSE;
  if (kind == NormalizerStep::Nfkc || kind == NormalizerStep::Nfkd) options |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* result = nullptr;
  const auto n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &result, static_cast<utf8proc_option_t>(options));
  if (n < 0) runtime_error("tokenizer: Unicode normalization failed: ", utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return out;
}

bool is_ascii(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

void replace_matches(std::string& text, const Pattern& pattern, const std::string& content) {
  std::vector<Span> spans;
  pattern.find(text, spans);
  std::string out;
  out.reserve(text.size());
  for (const Span& s : spans) {
    if (s.is_match)
      out += content;
    else
      out.append(text, s.begin, s.end - s.begin);
  }
  text.swap(out);
}

void normalize(std::string& text, const std::vector<NormalizerStep>& steps) {
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Prepend:
        if (!text.empty()) text.insert(0, step.text);
        break;
      case NormalizerStep::Replace:
        replace_matches(text, step.pattern, step.text);
        break;
      default:
        if (!is_ascii(text)) text = unicode_normalize(text, step.kind);  // ASCII is in every normal form
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class PrependScheme { Always, Never, First };

struct PreTokenizerStep {
  enum Kind { Split, ByteLevel, Metaspace } kind;
  Pattern pattern;  // Split; ByteLevel with use_regex
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool use_regex = false;         // ByteLevel
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  PrependScheme prepend = PrependScheme::Always;
  bool split = true;  // Metaspace
};

// GPT-2's pre-tokenization regex, which the ByteLevel pre-tokenizer applies when use_regex is set.
const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

PrependScheme parse_prepend_scheme(const Node& node) {
  if (node.has("prepend_scheme")) {
    const Node scheme = node.at("prepend_scheme");
    const std::string name = scheme.str();
    if (name == "always") return PrependScheme::Always;
    if (name == "never") return PrependScheme::Never;
    if (name == "first") return PrependScheme::First;
    scheme.fail("unsupported prepend_scheme \"" + name + "\"");
  }
  return node.flag("add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
}

void parse_pre_tokenizer(const Node& node, std::vector<PreTokenizerStep>& steps) {
  const std::string type = node.type();
  PreTokenizerStep step{};
  if (type == "Sequence") {
    const Node list = node.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) parse_pre_tokenizer(list[i], steps);
    return;
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Split;
    step.pattern = Pattern(node.at("pattern"), node.flag("invert", false));
    step.behavior = parse_behavior(node.at("behavior"));
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::ByteLevel;
    step.add_prefix_space = node.flag("add_prefix_space", true);
    step.use_regex = node.flag("use_regex", true);
    if (step.use_regex) {
      json regex = {{"Regex", kGpt2Regex}};
      step.pattern = Pattern(Node{regex, node.path, node.file}, false);
    }
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Metaspace;
    step.replacement.clear();
    append_utf8(step.replacement, single_char(node.at("replacement")));
    step.prepend = parse_prepend_scheme(node);
    step.split = node.flag("split", true);
  } else {
    node.unsupported();
  }
  steps.push_back(std::move(step));
}

// A piece of text on its way to the model; `at_origin` when it starts at offset 0 of the input
// (Metaspace's "first" scheme prepends only there).
struct Piece {
  std::string text;
  bool at_origin;
};

void split_piece(const Piece& piece, const Pattern& pattern, SplitBehavior behavior, std::vector<Piece>& out,
                 std::vector<Span>& spans) {
  pattern.find(piece.text, spans);
  split_spans(spans, behavior);
  for (const Span& s : spans)
    if (s.end > s.begin) out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
}

void pre_tokenize(std::vector<Piece>& pieces, const std::vector<PreTokenizerStep>& steps) {
  std::vector<Piece> next;
  std::vector<Span> spans;
  for (const PreTokenizerStep& step : steps) {
    next.clear();
    for (Piece& piece : pieces) {
      switch (step.kind) {
        case PreTokenizerStep::Split:
          split_piece(piece, step.pattern, step.behavior, next, spans);
          break;
        case PreTokenizerStep::ByteLevel:
          if (step.add_prefix_space && piece.text.front() != ' ') piece.text.insert(0, " ");
          if (step.use_regex)
            split_piece(piece, step.pattern, SplitBehavior::Isolated, next, spans);
          else
            next.push_back(std::move(piece));
          break;
        case PreTokenizerStep::Metaspace: {
          std::string& text = piece.text;
          replace_matches(text, Pattern(" "), step.replacement);
          const bool starts = text.compare(0, step.replacement.size(), step.replacement) == 0;
          if (!starts &&
              (step.prepend == PrependScheme::Always || (step.prepend == PrependScheme::First && piece.at_origin)))
            text.insert(0, step.replacement);
          if (step.split)
            split_piece(piece, Pattern(step.replacement), SplitBehavior::MergedWithNext, next, spans);
          else
            next.push_back(std::move(piece));
          break;
        }
      }
    }
    pieces.swap(next);
    // ByteLevel maps every byte to its alphabet character once its pieces are split.
    if (step.kind == PreTokenizerStep::ByteLevel) {
      const ByteAlphabet& alphabet = byte_alphabet();
      for (Piece& piece : pieces) {
        std::string mapped;
        mapped.reserve(piece.text.size() * 2);
        for (unsigned char c : piece.text) mapped += alphabet.encoded[c];
        piece.text.swap(mapped);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decoders

struct DecoderStep {
  enum Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
  Pattern pattern;      // Replace
  std::string content;  // Replace: the replacement; Metaspace: the replacement character
  char32_t strip_char = 0;
  size_t strip_start = 0;
  size_t strip_stop = 0;
  PrependScheme prepend = PrependScheme::Always;
};

void parse_decoder(const Node& node, std::vector<DecoderStep>& steps) {
  const std::string type = node.type();
  DecoderStep step{};
  if (type == "Sequence") {
    const Node list = node.at("decoders");
    for (size_t i = 0; i < list.size(); ++i) parse_decoder(list[i], steps);
    return;
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::ByteLevel;
  } else if (type == "Replace") {
    step.kind = DecoderStep::Replace;
    step.pattern = Pattern(node.at("pattern"), false);
    step.content = node.at("content").str();
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::ByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Fuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Strip;
    step.strip_char = single_char(node.at("content"));
    step.strip_start = static_cast<size_t>(node.at("start").integer());
    step.strip_stop = static_cast<size_t>(node.at("stop").integer());
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Metaspace;
    append_utf8(step.content, single_char(node.at("replacement")));
    step.prepend = parse_prepend_scheme(node);
  } else {
    node.unsupported();
  }
  steps.push_back(std::move(step));
}

std::vector<char32_t> to_chars(const std::string& text) {
  std::vector<char32_t> chars;
  for (size_t i = 0, length = 0; i < text.size(); i += length) chars.push_back(next_char(text, i, length));
  return chars;
}

void decode_step(const DecoderStep& step, std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  switch (step.kind) {
    case DecoderStep::ByteLevel: {
      // A token made only of alphabet characters stands for those bytes, any other token for its
      // own UTF-8; the bytes of all tokens are then read as UTF-8, lossily.
      const ByteAlphabet& alphabet = byte_alphabet();
      std::string bytes;
      for (const std::string& token : tokens) {
        std::string mapped;
        bool all_mapped = true;
        for (size_t i = 0, length = 0; i < token.size() && all_mapped; i += length) {
          const char32_t c = next_char(token, i, length);
          if (c < 0x144 && alphabet.decoded[c] >= 0)
            mapped += static_cast<char>(alphabet.decoded[c]);
          else
            all_mapped = false;
        }
        bytes += all_mapped ? mapped : token;
      }
      out.push_back(utf8_lossy(bytes));
      break;
    }
    case DecoderStep::Replace:
      for (std::string& token : tokens) replace_matches(token, step.pattern, step.content);
      return;
    case DecoderStep::ByteFallback: {
      std::string pending;
      const auto flush = [&] {
        if (pending.empty()) return;
        if (is_valid_utf8(pending))
          out.push_back(pending);
        else
          for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
        pending.clear();
      };
      for (std::string& token : tokens) {
        unsigned value = 0;
        char tail = 0;
        if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' &&
            std::isxdigit(static_cast<unsigned char>(token[3])) &&
            std::isxdigit(static_cast<unsigned char>(token[4])) &&
            std::sscanf(token.c_str() + 3, "%2x%c", &value, &tail) == 2) {
          pending += static_cast<char>(value);
        } else {
          flush();
          out.push_back(std::move(token));
        }
      }
      flush();
      break;
    }
    case DecoderStep::Fuse: {
      std::string all;
      for (const std::string& token : tokens) all += token;
      out.push_back(std::move(all));
      break;
    }
    case DecoderStep::Strip:
      for (std::string& token : tokens) {
        const std::vector<char32_t> chars = to_chars(token);
        size_t begin = 0;
        while (begin < std::min(step.strip_start, chars.size()) && chars[begin] == step.strip_char) ++begin;
        size_t end = chars.size();
        for (size_t i = 0; i < step.strip_stop && end > 0 && chars[end - 1] == step.strip_char; ++i) --end;
        std::string stripped;
        for (size_t i = begin; i < std::max(begin, end); ++i) append_utf8(stripped, chars[i]);
        out.push_back(std::move(stripped));
      }
      break;
    case DecoderStep::Metaspace:
      for (size_t t = 0; t < tokens.size(); ++t) {
        std::string replaced;
        for (size_t i = 0, length = 0; i < tokens[t].size(); i += length) {
          const char32_t c = next_char(tokens[t], i, length);
          if (tokens[t].compare(i, length, step.content) != 0)
            append_utf8(replaced, c);
          else if (t != 0 || step.prepend == PrependScheme::Never)
            replaced += ' ';
        }
        out.push_back(std::move(replaced));
      }
      break;
  }
  tokens.swap(out);
}

// ---------------------------------------------------------------------------------------------
// Added tokens, matched leftmost-longest (as the library's Aho-Corasick automaton does).

struct AddedToken {
  std::string content;
  int32_t id;
  bool single_word, lstrip, rstrip, normalized, special;
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken* token) {
    if (token->content.empty()) return;
    by_first_byte_[static_cast<unsigned char>(token->content[0])].push_back(token);
  }
  void finish() {
    for (auto& list : by_first_byte_)
      std::stable_sort(list.begin(), list.end(),
                       [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
  }
  bool empty() const {
    return std::all_of(std::begin(by_first_byte_), std::end(by_first_byte_), [](const auto& l) { return l.empty(); });
  }
  // The longest token starting at the leftmost position >= from, or nullptr.
  const AddedToken* find(std::string_view text, size_t from, size_t& at) const {
    for (at = from; at < text.size(); ++at) {
      for (const AddedToken* token : by_first_byte_[static_cast<unsigned char>(text[at])])
        if (text.compare(at, token->content.size(), token->content) == 0) return token;
    }
    return nullptr;
  }

 private:
  std::vector<const AddedToken*> by_first_byte_[256];
};

// A piece of input: text still to tokenize, or an added token's id.
struct Segment {
  std::string text;
  int32_t token_id;  // -1 for text
  bool at_origin;
};

// AddedVocabulary::find_matches: splits `text` around the matched tokens, honouring single_word,
// lstrip and rstrip (which move the neighbouring whitespace into the token).
void split_added(const Segment& segment, const AddedTokenMatcher& matcher, std::vector<Segment>& out) {
  const std::string& text = segment.text;
  size_t offset = 0;
  size_t search = 0;
  size_t at = 0;
  while (const AddedToken* token = matcher.find(text, search, at)) {
    size_t begin = at;
    size_t end = at + token->content.size();
    search = end;
    if (token->single_word) {
      bool word_before = false;
      if (begin > 0) {
        size_t k = begin - 1;
        while (k > 0 && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
        size_t length = 0;
        word_before = is_word_char(next_char(text, k, length));
      }
      size_t length = 0;
      const bool word_after = end < text.size() && is_word_char(next_char(text, end, length));
      if (word_before || word_after) continue;
    }
    if (token->lstrip) {
      size_t k = begin;
      while (k > 0) {
        size_t p = k - 1;
        while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        size_t length = 0;
        if (!is_white_space(next_char(text, p, length))) break;
        k = p;
      }
      begin = std::max(k, offset);
    }
    if (token->rstrip) {
      size_t length = 0;
      while (end < text.size() && is_white_space(next_char(text, end, length))) end += length;
    }
    if (offset < begin) out.push_back({text.substr(offset, begin - offset), -1, segment.at_origin && offset == 0});
    out.push_back({std::string(), token->id, false});
    offset = end;
  }
  if (offset < text.size()) out.push_back({text.substr(offset), -1, segment.at_origin && offset == 0});
}

// ---------------------------------------------------------------------------------------------
// The BPE model

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool removed;
};

struct MergeCandidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const MergeCandidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::atomic<uint64_t> next_instance{1};

}  // namespace

struct HfTokenizer::State {
  std::string name;
  uint64_t instance = next_instance++;
  // model
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_piece;                              // vocabulary and added tokens
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left, right) -> (rank, merged id)
  std::string continuing_prefix;
  std::string end_suffix;
  int32_t unk = -1;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  int32_t byte_ids[256];
  // pipeline
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  AddedTokenMatcher raw_matcher;
  AddedTokenMatcher normalized_matcher;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<DecoderStep> decoder;
  bool has_decoder = false;
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
  int32_t bos = -1, eos = -1, pad = -1;

  void tokenize_word(const std::string& word, std::vector<int32_t>& ids) const;
  void merge_word(const std::string& word, std::vector<int32_t>& ids) const;
  int32_t find_token(const std::string& content) const {
    for (const AddedToken& token : added)
      if (token.content == content) return token.id;
    const auto it = vocab.find(content);
    return it == vocab.end() ? -1 : it->second;
  }
};

namespace {

// Words the BPE model has already split, per thread and tokenizer (the library keeps a similar
// cache); cleared when full so memory stays bounded on any input.
struct WordCache {
  uint64_t instance = 0;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};
constexpr size_t kCacheWords = 1 << 16;
constexpr size_t kCacheMaxWordBytes = 256;

}  // namespace

void HfTokenizer::State::merge_word(const std::string& word, std::vector<int32_t>& ids) const {
  // Initial symbols: one per character (BPE::merge_word), unknown characters as byte tokens or unk.
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  int32_t pending_unk = -1;
  const auto push = [&](int32_t id) {
    symbols.push_back({id, static_cast<int32_t>(symbols.size()) - 1, static_cast<int32_t>(symbols.size()) + 1, false});
  };
  std::string key;
  for (size_t i = 0, length = 0; i < word.size(); i += length) {
    length = char_length(word, i);
    key.clear();
    if (i > 0) key += continuing_prefix;
    key.append(word, i, length);
    if (i + length == word.size()) key += end_suffix;
    const auto it = vocab.find(key);
    if (it != vocab.end()) {
      if (pending_unk >= 0) push(pending_unk), pending_unk = -1;
      push(it->second);
      continue;
    }
    if (byte_fallback &&
        std::all_of(key.begin(), key.end(), [&](char c) { return byte_ids[static_cast<unsigned char>(c)] >= 0; })) {
      for (char c : key) push(byte_ids[static_cast<unsigned char>(c)]);
      continue;
    }
    if (unk >= 0) {
      if (pending_unk >= 0 && !fuse_unk) push(pending_unk);
      pending_unk = unk;
    }
  }
  if (pending_unk >= 0) push(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, std::greater<MergeCandidate>> queue;
  const auto consider = [&](int32_t left) {
    const int32_t right = symbols[static_cast<size_t>(left)].next;
    if (right < 0) return;
    const auto it =
        merges.find(pair_key(symbols[static_cast<size_t>(left)].id, symbols[static_cast<size_t>(right)].id));
    if (it != merges.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const MergeCandidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (left.removed || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    const auto it = merges.find(pair_key(left.id, right.id));
    if (it == merges.end() || it->second.second != top.new_id) continue;  // an outdated candidate
    left.id = top.new_id;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const Symbol& s : symbols)
    if (!s.removed) ids.push_back(s.id);
}

void HfTokenizer::State::tokenize_word(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges) {
    const auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (word.size() > kCacheMaxWordBytes) {
    merge_word(word, ids);
    return;
  }
  thread_local WordCache cache;
  if (cache.instance != instance) {
    cache.words.clear();
    cache.instance = instance;
  }
  const auto hit = cache.words.find(word);
  if (hit != cache.words.end()) {
    ids.insert(ids.end(), hit->second.begin(), hit->second.end());
    return;
  }
  const size_t first = ids.size();
  merge_word(word, ids);
  if (cache.words.size() >= kCacheWords) cache.words.clear();
  cache.words.emplace(word, std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end()));
}

namespace {

// bos_token etc. in tokenizer_config.json: a string, {"content": ...} or null.
std::string config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return {};
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return {};
}

}  // namespace

HfTokenizer::HfTokenizer(const std::string& json_text, const std::string& config_text, const std::string& name)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.name = name;
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    runtime_error(name, ": not valid JSON: ", e.what());
  }
  const Node top{root, "", s.name};
  if (!root.is_object()) top.fail("expected a JSON object at the top");
  for (const char* key : {"truncation", "padding"})
    if (top.has(key)) top.at(key).fail("unsupported (only null): gum_train truncates and pads itself");

  // Model
  const Node model = top.at("model");
  if (model.has("type") && model.type() != "BPE")
    runtime_error(name, ": model.type: unsupported \"", model.type(), "\"");
  if (model.has("dropout")) {
    const Node dropout = model.at("dropout");
    if (!dropout.value.is_number() || dropout.value.get<double>() != 0.0) dropout.fail("unsupported (only null or 0)");
  }
  const Node vocab = model.at("vocab");
  if (!vocab.value.is_object()) vocab.fail("expected an object of token: id");
  int32_t max_id = -1;
  for (const auto& [piece, id_value] : vocab.value.items()) {
    const Node id_node{id_value, vocab.path + "[\"" + piece + "\"]", s.name};
    const int64_t id = id_node.integer();
    if (id < 0 || id > INT32_MAX - 1) id_node.fail("id out of range");
    s.vocab[piece] = static_cast<int32_t>(id);
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }
  if (model.has("continuing_subword_prefix")) s.continuing_prefix = model.at("continuing_subword_prefix").str();
  if (model.has("end_of_word_suffix")) s.end_suffix = model.at("end_of_word_suffix").str();
  s.fuse_unk = model.flag("fuse_unk", false);
  s.byte_fallback = model.flag("byte_fallback", false);
  s.ignore_merges = model.flag("ignore_merges", false);
  if (model.has("unk_token")) {
    const Node unk = model.at("unk_token");
    const auto it = s.vocab.find(unk.str());
    if (it == s.vocab.end()) unk.fail("the unknown token \"" + unk.str() + "\" is not in model.vocab");
    s.unk = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char code[8];
    std::snprintf(code, sizeof(code), "<0x%02X>", b);
    const auto it = s.vocab.find(code);
    s.byte_ids[b] = it == s.vocab.end() ? -1 : it->second;
  }
  const Node merges = model.at("merges");
  const size_t merge_count = merges.size();
  s.merges.reserve(merge_count);
  const size_t prefix_length = s.continuing_prefix.size();
  for (size_t i = 0; i < merge_count; ++i) {
    const Node merge = merges[i];
    std::string left;
    std::string right;
    if (merge.value.is_string()) {
      const std::string line = merge.str();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        merge.fail("expected \"left right\" (two tokens separated by one space)");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.value.is_array() && merge.value.size() == 2) {
      left = merge[0].str();
      right = merge[1].str();
    } else {
      merge.fail("expected \"left right\" or [\"left\", \"right\"]");
    }
    const auto l = s.vocab.find(left);
    const auto r = s.vocab.find(right);
    if (l == s.vocab.end()) merge.fail("\"" + left + "\" is not in model.vocab");
    if (r == s.vocab.end()) merge.fail("\"" + right + "\" is not in model.vocab");
    const std::string merged =
        left + (right.size() >= prefix_length && right.compare(0, prefix_length, s.continuing_prefix) == 0
                    ? right.substr(prefix_length)
                    : right);
    const auto m = s.vocab.find(merged);
    if (m == s.vocab.end()) merge.fail("the merged token \"" + merged + "\" is not in model.vocab");
    s.merges[pair_key(l->second, r->second)] = {static_cast<int32_t>(i), m->second};
  }

  // Added tokens
  if (top.has("added_tokens")) {
    const Node list = top.at("added_tokens");
    s.added.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const Node t = list[i];
      const int64_t id = t.at("id").integer();
      if (id < 0 || id > INT32_MAX - 1) t.at("id").fail("id out of range");
      const bool special = t.flag("special", false);
      s.added.push_back({t.at("content").str(), static_cast<int32_t>(id), t.flag("single_word", false),
                         t.flag("lstrip", false), t.flag("rstrip", false), t.flag("normalized", !special), special});
      max_id = std::max(max_id, static_cast<int32_t>(id));
    }
  }
  s.id_to_piece.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [piece, id] : s.vocab) s.id_to_piece[static_cast<size_t>(id)] = piece;
  for (size_t i = 0; i < s.added.size(); ++i) {
    const AddedToken& token = s.added[i];
    s.id_to_piece[static_cast<size_t>(token.id)] = token.content;
    s.added_by_id[token.id] = i;
    (token.normalized ? s.normalized_matcher : s.raw_matcher).add(&token);
  }
  s.raw_matcher.finish();
  s.normalized_matcher.finish();

  // Pipeline
  if (top.has("normalizer")) parse_normalizer(top.at("normalizer"), s.normalizer);
  if (top.has("pre_tokenizer")) parse_pre_tokenizer(top.at("pre_tokenizer"), s.pre_tokenizer);
  if (top.has("decoder")) {
    parse_decoder(top.at("decoder"), s.decoder);
    s.has_decoder = true;
  }
  if (top.has("post_processor")) {
    std::vector<Node> processors{top.at("post_processor")};
    for (size_t p = 0; p < processors.size(); ++p) {
      const Node processor = processors[p];
      const std::string type = processor.type();
      if (type == "Sequence") {
        const Node list = processor.at("processors");
        for (size_t i = 0; i < list.size(); ++i) processors.push_back(list[i]);
      } else if (type == "TemplateProcessing") {
        const Node single = processor.at("single");
        const Node specials = processor.at("special_tokens");
        bool seen_sequence = false;
        for (size_t i = 0; i < single.size(); ++i) {
          const Node item = single[i];
          if (item.has("Sequence")) {
            seen_sequence = true;
            continue;
          }
          const std::string id = item.at("SpecialToken").at("id").str();
          if (!specials.has(id.c_str())) item.fail("special token \"" + id + "\" is not in special_tokens");
          const Node ids = specials.at(id.c_str()).at("ids");
          for (size_t k = 0; k < ids.size(); ++k)
            (seen_sequence ? s.suffix : s.prefix).push_back(static_cast<int32_t>(ids[k].integer()));
        }
      } else if (type != "ByteLevel") {  // ByteLevel only adjusts offsets
        processor.unsupported();
      }
    }
  }

  // Special ids: tokenizer_config.json names them; else the template's, else the usual names.
  json config;
  if (!config_text.empty()) {
    try {
      config = json::parse(config_text);
    } catch (const json::exception& e) {
      runtime_error(name, ": its tokenizer_config.json is not valid JSON: ", e.what());
    }
  }
  const auto special = [&](const char* key, std::initializer_list<const char*> fallbacks, int32_t from_template) {
    const std::string named = config_token(config, key);
    if (!named.empty()) {
      const int32_t id = s.find_token(named);
      if (id < 0) runtime_error(name, ": tokenizer_config.json ", key, " \"", named, "\" is not a token");
      return id;
    }
    if (from_template >= 0) return from_template;
    for (const char* fallback : fallbacks)
      if (const int32_t id = s.find_token(fallback); id >= 0) return id;
    return int32_t{-1};
  };
  s.bos = special("bos_token", {"<s>", "<|begin_of_text|>"}, s.prefix.size() == 1 ? s.prefix[0] : -1);
  s.eos = special("eos_token", {"</s>", "<|end_of_text|>", "<|endoftext|>"}, s.suffix.size() == 1 ? s.suffix[0] : -1);
  s.pad = special("pad_token", {"<pad>", "<|pad|>"}, -1);
  if (const std::string unk_name = config_token(config, "unk_token"); !unk_name.empty()) s.unk = s.find_token(unk_name);
}

HfTokenizer::~HfTokenizer() = default;

std::vector<int32_t> HfTokenizer::encode(std::string_view input) const {
  const State& s = *state_;
  std::vector<int32_t> ids;
  if (input.empty()) return ids;
  std::vector<Segment> segments;
  Segment whole{is_valid_utf8(input) ? std::string(input) : utf8_lossy(input), -1, true};
  // Encoding goes one raw segment at a time, so working memory beyond the ids stays proportional to
  // the longest stretch between added tokens.
  std::vector<Segment> raw;
  if (s.raw_matcher.empty())
    raw.push_back(std::move(whole));
  else
    split_added(whole, s.raw_matcher, raw);
  std::vector<Piece> pieces;
  for (Segment& segment : raw) {
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
      continue;
    }
    normalize(segment.text, s.normalizer);
    segments.clear();
    if (s.normalized_matcher.empty())
      segments.push_back(std::move(segment));
    else
      split_added(segment, s.normalized_matcher, segments);
    for (Segment& part : segments) {
      if (part.token_id >= 0) {
        ids.push_back(part.token_id);
        continue;
      }
      if (part.text.empty()) continue;
      pieces.clear();
      pieces.push_back({std::move(part.text), part.at_origin});
      pre_tokenize(pieces, s.pre_tokenizer);
      for (const Piece& piece : pieces) s.tokenize_word(piece.text, ids);
    }
  }
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  const State& s = *state_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) tokens.push_back(piece(id));
  std::string text;
  if (!s.has_decoder) {
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    return text;
  }
  for (const DecoderStep& step : s.decoder) decode_step(step, tokens);
  for (const std::string& token : tokens) text += token;
  return text;
}

std::string HfTokenizer::piece(int32_t id) const {
  const State& s = *state_;
  if (id < 0 || static_cast<size_t>(id) >= s.id_to_piece.size() ||
      (s.id_to_piece[static_cast<size_t>(id)].empty() && !s.added_by_id.count(id)))
    runtime_error("tokenizer ", s.name, ": no token with id ", id, " (vocabulary size ", vocab_size(), ")");
  return s.id_to_piece[static_cast<size_t>(id)];
}

int32_t HfTokenizer::vocab_size() const { return static_cast<int32_t>(state_->id_to_piece.size()); }
int32_t HfTokenizer::bos_id() const { return state_->bos; }
int32_t HfTokenizer::eos_id() const { return state_->eos; }
int32_t HfTokenizer::pad_id() const { return state_->pad; }
int32_t HfTokenizer::unk_id() const { return state_->unk; }
const std::vector<int32_t>& HfTokenizer::template_prefix() const { return state_->prefix; }
const std::vector<int32_t>& HfTokenizer::template_suffix() const { return state_->suffix; }

int32_t HfTokenizer::added_token_id(std::string_view content) const {
  for (const AddedToken& token : state_->added)
    if (token.content == content) return token.id;
  return -1;
}

}  // namespace gum
