#pragma once
// Corpus readers: plain text, JSONL and C4's json.gz, read as a stream of documents.
// Files are streamed through zlib (gzip or plain, detected from the bytes), so a file is never
// held in memory whole; only the current line (or text document) is.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gum {

enum class CorpusFormat {
  Auto,   // from the name: *.json.gz -> C4, *.jsonl / *.json (optionally .gz) -> JSONL, else text
  C4,     // gzip JSONL whose objects hold "text" (and "timestamp", "url" as strings when present)
  Jsonl,  // one JSON object per line; the text is in `text_field`
  Text,   // plain UTF-8 text split into documents by `text_split`
};

enum class TextSplit {
  File,       // the whole file is one document
  BlankLine,  // documents are separated by one or more blank lines
};

struct CorpusOptions {
  CorpusFormat format = CorpusFormat::Auto;
  std::string text_field = "text";
  TextSplit text_split = TextSplit::File;
  // A malformed JSON line (bad JSON, missing/non-string field) is skipped with a counted
  // warning instead of being an error. Broken gzip data is always an error.
  bool skip_bad_lines = false;
};

struct CorpusFileStats {
  uint64_t documents = 0;        // documents delivered (empty ones are not delivered)
  uint64_t empty_documents = 0;  // skipped because their text was empty
  uint64_t bad_lines = 0;        // skipped malformed lines (skip_bad_lines)
  uint64_t text_bytes = 0;       // bytes of delivered text
  uint64_t lines = 0;            // lines read
};

// The format `Auto` resolves to for `path`.
CorpusFormat resolve_corpus_format(CorpusFormat format, const std::string& path);
// "auto", "c4", "jsonl", "text" <-> CorpusFormat; a bad name is a usage error naming `context`.
CorpusFormat corpus_format_from_name(const std::string& name, const std::string& context);
const char* corpus_format_name(CorpusFormat format);
TextSplit text_split_from_name(const std::string& name, const std::string& context);
const char* text_split_name(TextSplit split);

// Receives each non-empty document of a file in order; returning false stops reading early.
using DocumentCallback = std::function<bool(std::string_view text)>;

// Reads one corpus file. CRLF line ends become LF. Errors (unreadable file, broken gzip, bad
// JSON line, missing field) are runtime errors naming the file and line.
CorpusFileStats read_corpus_file(const std::string& path, const CorpusOptions& options,
                                 const DocumentCallback& on_document);

// Expands glob patterns into a sorted, de-duplicated list of files. A pattern that matches
// nothing is a usage error naming `context` and the pattern.
std::vector<std::string> expand_globs(const std::vector<std::string>& patterns, const std::string& context);

}  // namespace gum
