#pragma once
// Corpus readers: plain text, JSONL and C4's json.gz, read as a stream of documents.
// Files are streamed through zlib (gzip or plain, detected from the bytes). read_corpus_pieces
// holds neither a file nor a document nor a line whole: memory stays bounded by the piece size,
// a 1 MiB read chunk and kInMemoryJsonLineBytes, however long a document is.
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

// A JSONL line up to this size is parsed in memory; a longer one is scanned twice as it streams
// (checked, then its text field unescaped in bounded parts), never held whole.
inline constexpr size_t kInMemoryJsonLineBytes = 1 << 20;

// Receives each non-empty document of a file in order; returning false stops reading early.
using DocumentCallback = std::function<bool(std::string_view text)>;
// Receives the pieces of each non-empty document in order; `ends_document` marks the last.
using PieceCallback = std::function<bool(std::string_view piece, bool ends_document)>;

// Reads one corpus file, each document cut into pieces of at most max_piece_bytes by
// split_document's rule (the same pieces as split_document of the whole text). CRLF line ends
// become LF. Errors (unreadable file, broken gzip, bad JSON line, missing field) are runtime
// errors naming the file and line.
CorpusFileStats read_corpus_pieces(const std::string& path, const CorpusOptions& options, size_t max_piece_bytes,
                                   const PieceCallback& on_piece);
// The same with each document whole (held in memory).
CorpusFileStats read_corpus_file(const std::string& path, const CorpusOptions& options,
                                 const DocumentCallback& on_document);

// `text` cut into consecutive pieces of at most max_piece_bytes, each cut at whitespace (which
// begins the next piece), else, in a run without any, before a UTF-8 character. The pieces'
// tokens are the document's: with whitespace splitting and whitespace normalisation (SentencePiece's
// defaults, used by the tokenizers prepare trains) a word never spans a cut, and the space
// opening a piece encodes as the word-start mark it would be inside the whole text. With a
// tokenizer that keeps extra whitespace, a seam may encode its space differently (at most one
// token per piece). Only the last piece is followed by EOS.
std::vector<std::string_view> split_document(std::string_view text, size_t max_piece_bytes);

// Expands glob patterns into a sorted, de-duplicated list of files. A pattern that matches
// nothing is a usage error naming `context` and the pattern.
std::vector<std::string> expand_globs(const std::vector<std::string>& patterns, const std::string& context);

}  // namespace gum
