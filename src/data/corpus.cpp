#include "gum/data/corpus.h"

#include <glob.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gum/core/error.h"
#include "gum/core/logging.h"

namespace gum {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\v'; });
}

bool file_starts_with_gzip_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) runtime_error(path, ": cannot open file: ", std::strerror(errno));
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

// Streams the lines of a gzip or plain file (zlib reads plain files transparently) in fixed-size
// chunks: memory use is one chunk plus the longest line, whatever the file size.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path) {
    bool gzip = file_starts_with_gzip_magic(path);
    if (!gzip && ends_with(path, ".gz")) runtime_error(path, ": not gzip data (the name ends in .gz)");
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) runtime_error(path, ": cannot open file: ", std::strerror(errno));
    gzbuffer(file_, 1 << 18);
    chunk_.resize(1 << 20);
  }
  ~LineReader() {
    if (file_) gzclose(file_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Calls on_line(line, line_number) without the line end ("\n" or "\r\n"); stops when it
  // returns false. The last line needs no final newline.
  template <typename OnLine>
  void for_each_line(OnLine&& on_line) {
    uint64_t line_number = 0;
    std::string pending;  // the start of a line that continues into the next chunk
    while (true) {
      int n = gzread(file_, chunk_.data(), static_cast<unsigned>(chunk_.size()));
      check_stream(n, line_number);
      if (n == 0) break;
      std::string_view data(chunk_.data(), static_cast<size_t>(n));
      size_t start = 0;
      while (true) {
        size_t newline = data.find('\n', start);
        if (newline == std::string_view::npos) {
          pending.append(data.substr(start));
          break;
        }
        std::string_view line = data.substr(start, newline - start);
        if (!pending.empty()) {
          pending.append(line);
          line = pending;
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        bool keep_going = on_line(line, ++line_number);
        pending.clear();
        if (!keep_going) return;
        start = newline + 1;
      }
    }
    if (!pending.empty()) {
      std::string_view line = pending;
      if (line.back() == '\r') line.remove_suffix(1);
      on_line(line, ++line_number);
    }
  }

 private:
  void check_stream(int n, uint64_t lines_so_far) {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    // zlib reports a truncated member as Z_BUF_ERROR ("unexpected end of file") and keeps
    // returning 0, so a clean end of file and a truncated one differ only in the error code.
    if (n < 0 || (code != Z_OK && code != Z_STREAM_END))
      runtime_error(path_, ": bad gzip data after line ", lines_so_far, ": ", message ? message : "read error",
                    code == Z_BUF_ERROR ? " (truncated file?)" : "");
  }

  std::string path_;
  gzFile file_ = nullptr;
  std::vector<char> chunk_;
};

// A UTF-8 byte order mark at the start of a file is not text.
std::string_view strip_bom(std::string_view line, uint64_t line_number) {
  if (line_number == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
  return line;
}

class DocumentSink {
 public:
  DocumentSink(const DocumentCallback& callback, CorpusFileStats& stats) : callback_(callback), stats_(stats) {}
  bool deliver(std::string_view text) {
    if (text.empty()) {
      ++stats_.empty_documents;
      return true;
    }
    ++stats_.documents;
    stats_.text_bytes += text.size();
    return callback_(text);
  }

 private:
  const DocumentCallback& callback_;
  CorpusFileStats& stats_;
};

// Trailing newlines carry no text (a file or block normally ends with one).
std::string_view trim_trailing_newlines(std::string_view text) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  return text;
}

void read_text_file(const std::string& path, const CorpusOptions& options, LineReader& reader, DocumentSink& sink,
                    CorpusFileStats& stats) {
  std::string document;
  bool stopped = false;
  reader.for_each_line([&](std::string_view line, uint64_t line_number) {
    ++stats.lines;
    line = strip_bom(line, line_number);
    if (options.text_split == TextSplit::BlankLine && is_blank(line)) {
      bool keep_going = sink.deliver(trim_trailing_newlines(document));
      document.clear();
      stopped = !keep_going;
      return keep_going;
    }
    document.append(line);
    document.push_back('\n');
    return true;
  });
  if (!stopped) sink.deliver(trim_trailing_newlines(document));
}

void read_jsonl_file(const std::string& path, CorpusFormat format, const CorpusOptions& options, LineReader& reader,
                     DocumentSink& sink, CorpusFileStats& stats) {
  constexpr uint64_t kWarningsPerFile = 3;
  auto bad_line = [&](uint64_t line_number, const std::string& why) {
    if (!options.skip_bad_lines)
      runtime_error(path, ":", line_number, ": ", why, " (set data.skip_bad_lines to skip such lines)");
    if (stats.bad_lines < kWarningsPerFile) spdlog::warn("{}:{}: {}; line skipped", path, line_number, why);
    ++stats.bad_lines;
  };
  reader.for_each_line([&](std::string_view line, uint64_t line_number) {
    ++stats.lines;
    line = strip_bom(line, line_number);
    if (is_blank(line)) return true;
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      bad_line(line_number, std::string("invalid JSON: ") + e.what());
      return true;
    }
    if (!object.is_object()) {
      bad_line(line_number, "expected a JSON object");
      return true;
    }
    auto text = object.find(options.text_field);
    if (text == object.end()) {
      bad_line(line_number, "missing field '" + options.text_field + "'");
      return true;
    }
    if (!text->is_string()) {
      bad_line(line_number, "field '" + options.text_field + "' is not a string");
      return true;
    }
    if (format == CorpusFormat::C4) {
      for (const char* field : {"timestamp", "url"}) {
        auto it = object.find(field);
        if (it != object.end() && !it->is_string()) {
          bad_line(line_number, std::string("C4 field '") + field + "' is not a string");
          return true;
        }
      }
    }
    return sink.deliver(text->get_ref<const std::string&>());
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

CorpusFileStats read_corpus_file(const std::string& path, const CorpusOptions& options,
                                 const DocumentCallback& on_document) {
  CorpusFileStats stats;
  DocumentSink sink(on_document, stats);
  LineReader reader(path);
  CorpusFormat format = resolve_corpus_format(options.format, path);
  if (format == CorpusFormat::Text)
    read_text_file(path, options, reader, sink, stats);
  else
    read_jsonl_file(path, format, options, reader, sink, stats);
  return stats;
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
