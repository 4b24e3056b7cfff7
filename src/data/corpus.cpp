#include "gum/data/corpus.h"

#include <glob.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "json_line_scanner.h"
#include "line_reader.h"

namespace gum {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\v'; });
}

// A UTF-8 byte order mark at the start of a file is not text.
std::string_view strip_bom(std::string_view line, uint64_t line_number) {
  if (line_number == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
  return line;
}

// Where split_document cuts a text longer than max_piece_bytes.
size_t piece_cut(std::string_view text, size_t max_piece_bytes) {
  // The last whitespace of the piece starts the next one: words stay whole.
  size_t cut = text.find_last_of(" \t\r\n", max_piece_bytes);
  if (cut == std::string_view::npos || cut == 0) {
    // No whitespace at all: cut before a UTF-8 lead byte, never inside a character.
    cut = max_piece_bytes;
    while (cut > 1 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  }
  return cut;
}

// Builds documents from appended bytes and hands them on in pieces as soon as the text beyond a
// piece is known (split_document's cuts depend only on the first max_piece_bytes + 1 bytes), so
// it holds at most one piece plus the last append.
class PieceSink {
 public:
  PieceSink(size_t max_piece_bytes, const PieceCallback& callback, CorpusFileStats& stats)
      : max_piece_bytes_(max_piece_bytes), callback_(callback), stats_(stats) {}

  bool append(std::string_view bytes) {
    if (stopped_) return false;
    buffer_.append(bytes);
    document_bytes_ += bytes.size();
    size_t start = 0;
    while (buffer_.size() - start > max_piece_bytes_ && !stopped_) {
      const std::string_view rest = std::string_view(buffer_).substr(start);
      const size_t cut = piece_cut(rest, max_piece_bytes_);
      stopped_ = !callback_(rest.substr(0, cut), false);
      start += cut;
    }
    buffer_.erase(0, start);
    return !stopped_;
  }

  // Ends the document: its last piece goes out; an empty document is only counted.
  bool end_document() {
    if (stopped_) return false;
    if (document_bytes_ == 0) {
      ++stats_.empty_documents;
      return true;
    }
    ++stats_.documents;
    stats_.text_bytes += document_bytes_;
    stopped_ = !callback_(buffer_, true);
    buffer_.clear();
    document_bytes_ = 0;
    return !stopped_;
  }

  bool stopped() const { return stopped_; }

 private:
  size_t max_piece_bytes_;
  const PieceCallback& callback_;
  CorpusFileStats& stats_;
  std::string buffer_;
  uint64_t document_bytes_ = 0;
  bool stopped_ = false;
};

// Documents are the file, or blocks between blank lines; the newlines that end a document carry
// no text and are dropped, so they are held back (as a count) until more text follows.
void read_text_file(const CorpusOptions& options, LineReader& reader, PieceSink& sink, CorpusFileStats& stats) {
  const bool split_at_blank = options.text_split == TextSplit::BlankLine;
  uint64_t held_newlines = 0;
  bool line_blank = true;   // the line read so far holds only blanks: it may be a separator
  std::string blank_start;  // its bytes
  bool line_begins = true;
  auto write = [&](std::string_view bytes) {
    if (bytes.empty()) return true;
    for (; held_newlines > 0; --held_newlines)
      if (!sink.append("\n")) return false;
    return sink.append(bytes);
  };
  reader.for_each_line_part([&](std::string_view part, uint64_t line_number, bool line_ends) {
    if (line_begins) part = strip_bom(part, line_number);
    line_begins = line_ends;
    if (split_at_blank && line_blank) {
      if (is_blank(part)) {
        if (!line_ends) {
          blank_start.append(part);
          return true;
        }
        ++stats.lines;
        blank_start.clear();
        held_newlines = 0;
        return sink.end_document();
      }
      line_blank = false;
      if (!write(blank_start)) return false;
      blank_start.clear();
    }
    if (!write(part)) return false;
    if (line_ends) {
      ++stats.lines;
      ++held_newlines;
      line_blank = true;
    }
    return true;
  });
  if (!sink.stopped()) sink.end_document();
}
JsonType json_type(const nlohmann::json* value) {
  if (!value) return JsonType::None;
  switch (value->type()) {
    case nlohmann::json::value_t::object:
      return JsonType::Object;
    case nlohmann::json::value_t::array:
      return JsonType::Array;
    case nlohmann::json::value_t::string:
      return JsonType::String;
    case nlohmann::json::value_t::boolean:
      return JsonType::Boolean;
    case nlohmann::json::value_t::null:
      return JsonType::Null;
    default:
      return JsonType::Number;
  }
}

// The type of object[key]; None when absent (or `object` is not an object).
JsonType member_type(const nlohmann::json& object, const std::string& key) {
  if (!object.is_object()) return JsonType::None;
  auto it = object.find(key);
  return json_type(it == object.end() ? nullptr : &*it);
}

// One JSON object per line; the document is its text_field. A line longer than
// kInMemoryJsonLineBytes is checked by a JsonLineScanner as it streams and, when good, read
// again to unescape its text into the sink, so it is never held whole.
void read_jsonl_file(const std::string& path, CorpusFormat format, const CorpusOptions& options, LineReader& reader,
                     PieceSink& sink, CorpusFileStats& stats) {
  constexpr uint64_t kWarningsPerFile = 3;
  auto bad_line = [&](uint64_t line_number, const std::string& why) {
    if (!options.skip_bad_lines)
      runtime_error(path, ":", line_number, ": ", why, " (set data.skip_bad_lines to skip such lines)");
    if (stats.bad_lines < kWarningsPerFile) spdlog::warn("{}:{}: {}; line skipped", path, line_number, why);
    ++stats.bad_lines;
  };
  const bool c4 = format == CorpusFormat::C4;
  const std::vector<std::string> keys = {options.text_field, "timestamp", "url"};  // C4 checks the last two

  // What is wrong with a line that is JSON, or "": the types of its top-level value and of the
  // keys' last values (None when absent).
  auto problem = [&](JsonType top, JsonType text, JsonType timestamp, JsonType url) -> std::string {
    if (top != JsonType::Object) return "expected a JSON object";
    if (text == JsonType::None) return "missing field '" + options.text_field + "'";
    if (text != JsonType::String) return "field '" + options.text_field + "' is not a string";
    if (c4 && timestamp != JsonType::None && timestamp != JsonType::String)
      return "C4 field 'timestamp' is not a string";
    if (c4 && url != JsonType::None && url != JsonType::String) return "C4 field 'url' is not a string";
    return "";
  };

  auto in_memory_line = [&](std::string_view line, uint64_t line_number) {
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      bad_line(line_number, std::string("invalid JSON: ") + e.what());
      return true;
    }
    const std::string why = problem(json_type(&object), member_type(object, keys[0]), member_type(object, keys[1]),
                                    member_type(object, keys[2]));
    if (!why.empty()) {
      bad_line(line_number, why);
      return true;
    }
    return sink.append(object[keys[0]].get_ref<const std::string&>()) && sink.end_document();
  };

  auto streamed_line = [&](JsonLineScanner& checked, uint64_t line_number) {
    const std::string error = checked.finish();
    if (!error.empty()) {
      bad_line(line_number, "invalid JSON: " + error);
      return true;
    }
    const std::string why =
        problem(checked.top_type(), checked.key(0).last_type, checked.key(1).last_type, checked.key(2).last_type);
    if (!why.empty()) {
      bad_line(line_number, why);
      return true;
    }
    const JsonLineScanner::KeyStats& text = checked.key(0);
    JsonLineScanner emit(keys, 0, text.count, [&](std::string_view bytes) { sink.append(bytes); });
    bool first_part = true;
    reader.reread_line([&](std::string_view part) {
      if (first_part) part = strip_bom(part, line_number);
      first_part = false;
      emit.feed(part);
    });
    emit.finish();
    return !sink.stopped() && sink.end_document();
  };

  std::string line;                        // a line up to kInMemoryJsonLineBytes
  std::optional<JsonLineScanner> scanner;  // a longer one
  bool blank = true;
  bool line_begins = true;
  reader.for_each_line_part([&](std::string_view part, uint64_t line_number, bool line_ends) {
    if (line_begins) part = strip_bom(part, line_number);
    line_begins = line_ends;
    if (scanner) {
      scanner->feed(part);
      blank = blank && is_blank(part);
    } else {
      line.append(part);
      if (line.size() > kInMemoryJsonLineBytes) {
        scanner.emplace(keys);
        scanner->feed(line);
        blank = is_blank(line);
        std::string().swap(line);
      }
    }
    if (!line_ends) return true;
    ++stats.lines;
    bool keep_going = true;
    if (scanner) {
      if (!blank) keep_going = streamed_line(*scanner, line_number);
      scanner.reset();
      blank = true;
    } else {
      if (!is_blank(line)) keep_going = in_memory_line(line, line_number);
      line.clear();
    }
    return keep_going;
  });
  if (stats.bad_lines > 0) spdlog::warn("{}: skipped {} malformed lines", path, stats.bad_lines);
}

}  // namespace

CorpusFormat resolve_corpus_format(CorpusFormat format, const std::string& path) {
  if (format != CorpusFormat::Auto) return format;
  if (ends_with(path, ".json.gz")) return CorpusFormat::C4;
  if (ends_with(path, ".jsonl") || ends_with(path, ".json") || ends_with(path, ".jsonl.gz")) return CorpusFormat::Jsonl;
  return CorpusFormat::Text;
}

CorpusFormat corpus_format_from_name(const std::string& name, const std::string& context) {
  if (name == "auto") return CorpusFormat::Auto;
  if (name == "c4") return CorpusFormat::C4;
  if (name == "jsonl") return CorpusFormat::Jsonl;
  if (name == "text") return CorpusFormat::Text;
  usage_error(context, ": unknown corpus format '", name, "' (expected auto, c4, jsonl or text)");
}

const char* corpus_format_name(CorpusFormat format) {
  switch (format) {
    case CorpusFormat::Auto:
      return "auto";
    case CorpusFormat::C4:
      return "c4";
    case CorpusFormat::Jsonl:
      return "jsonl";
    case CorpusFormat::Text:
      return "text";
  }
  return "?";
}

TextSplit text_split_from_name(const std::string& name, const std::string& context) {
  if (name == "file") return TextSplit::File;
  if (name == "blank_line") return TextSplit::BlankLine;
  usage_error(context, ": unknown text split '", name, "' (expected file or blank_line)");
}

const char* text_split_name(TextSplit split) { return split == TextSplit::File ? "file" : "blank_line"; }

CorpusFileStats read_corpus_pieces(const std::string& path, const CorpusOptions& options, size_t max_piece_bytes,
                                   const PieceCallback& on_piece) {
  CorpusFileStats stats;
  PieceSink sink(max_piece_bytes, on_piece, stats);
  LineReader reader(path);
  const CorpusFormat format = resolve_corpus_format(options.format, path);
  if (format == CorpusFormat::Text)
    read_text_file(options, reader, sink, stats);
  else
    read_jsonl_file(path, format, options, reader, sink, stats);
  return stats;
}

CorpusFileStats read_corpus_file(const std::string& path, const CorpusOptions& options,
                                 const DocumentCallback& on_document) {
  // Never cut: each document is one piece.
  return read_corpus_pieces(path, options, std::numeric_limits<size_t>::max(),
                            [&](std::string_view text, bool) { return on_document(text); });
}

std::vector<std::string_view> split_document(std::string_view text, size_t max_piece_bytes) {
  std::vector<std::string_view> pieces;
  while (text.size() > max_piece_bytes) {
    const size_t cut = piece_cut(text, max_piece_bytes);
    pieces.push_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  pieces.push_back(text);
  return pieces;
}

namespace {

// The folder glob could not read and why (glob's error callback takes no context).
thread_local std::string glob_failed_path;
thread_local int glob_failed_errno = 0;

int note_glob_error(const char* path, int error) {
  glob_failed_path = path;
  glob_failed_errno = error;
  return 1;  // stop: the match would be incomplete
}

}  // namespace

std::vector<std::string> expand_globs(const std::vector<std::string>& patterns, const std::string& context) {
  std::vector<std::string> files;
  for (const auto& pattern : patterns) {
    glob_t matches{};
    glob_failed_errno = 0;
    int rc = ::glob(pattern.c_str(), GLOB_ERR, note_glob_error, &matches);
    // A folder of the pattern that does not exist is no match, not a read error.
    if (rc == GLOB_ABORTED && (glob_failed_errno == ENOENT || glob_failed_errno == ENOTDIR)) rc = GLOB_NOMATCH;
    size_t before = files.size();
    if (rc == 0)
      for (size_t i = 0; i < matches.gl_pathc; ++i)
        if (std::filesystem::is_regular_file(matches.gl_pathv[i])) files.emplace_back(matches.gl_pathv[i]);
    globfree(&matches);
    if (rc != 0 && rc != GLOB_NOMATCH)
      runtime_error(context, ": cannot expand '", pattern, "': ",
                    glob_failed_errno ? glob_failed_path + ": " + std::strerror(glob_failed_errno) : "out of memory");
    if (files.size() == before) usage_error(context, ": '", pattern, "' matches no file");
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

}  // namespace gum
