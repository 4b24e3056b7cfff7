#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data_test_util.h"
#include "gum/core/error.h"
#include "gum/data/corpus.h"

using namespace gum;
using gum_test::fresh_dir;
using gum_test::write_gzip;
using gum_test::write_text;

namespace {

std::vector<std::string> read_all(const std::string& path, const CorpusOptions& options,
                                  CorpusFileStats* stats_out = nullptr) {
  std::vector<std::string> docs;
  CorpusFileStats stats = read_corpus_file(path, options, [&](std::string_view text) {
    docs.emplace_back(text);
    return true;
  });
  if (stats_out) *stats_out = stats;
  return docs;
}

std::string error_of(const std::string& path, const CorpusOptions& options) {
  try {
    read_all(path, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("format detection from file names") {
  CHECK(resolve_corpus_format(CorpusFormat::Auto, "c4-train.00000-of-01024.json.gz") == CorpusFormat::C4);
  CHECK(resolve_corpus_format(CorpusFormat::Auto, "x.jsonl") == CorpusFormat::Jsonl);
  CHECK(resolve_corpus_format(CorpusFormat::Auto, "x.jsonl.gz") == CorpusFormat::Jsonl);
  CHECK(resolve_corpus_format(CorpusFormat::Auto, "x.json") == CorpusFormat::Jsonl);
  CHECK(resolve_corpus_format(CorpusFormat::Auto, "book.txt") == CorpusFormat::Text);
  CHECK(resolve_corpus_format(CorpusFormat::Jsonl, "book.txt") == CorpusFormat::Jsonl);
  CHECK_THROWS_WITH(corpus_format_from_name("parquet", "cfg"), Catch::Contains("parquet"));
  CHECK_THROWS_WITH(text_split_from_name("paragraph", "cfg"), Catch::Contains("paragraph"));
}

TEST_CASE("plain text: whole file or blank-line blocks, CRLF, BOM, unicode") {
  auto dir = fresh_dir("corpus_text");
  const std::string path = (dir / "book.txt").string();
  write_text(path, "\xEF\xBB\xBFTitle line\r\nsecond line \xC3\xA9\xE6\x97\xA5\r\n\r\n\r\n  \t\nThird block\nends\n\n");

  CorpusOptions whole;
  auto docs = read_all(path, whole);
  REQUIRE(docs.size() == 1);
  CHECK(docs[0] == "Title line\nsecond line \xC3\xA9\xE6\x97\xA5\n\n\n  \t\nThird block\nends");

  CorpusOptions blocks;
  blocks.text_split = TextSplit::BlankLine;
  CorpusFileStats stats;
  docs = read_all(path, blocks, &stats);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0] == "Title line\nsecond line \xC3\xA9\xE6\x97\xA5");
  CHECK(docs[1] == "Third block\nends");
  CHECK(stats.documents == 2);
  CHECK(stats.empty_documents >= 2);  // the runs of blank lines produce empty blocks, skipped

  // An empty file is no document; a last line without newline still counts.
  write_text(dir / "empty.txt", "");
  CHECK(read_all((dir / "empty.txt").string(), whole).empty());
  write_text(dir / "nonl.txt", "a\n\nb");
  CHECK(read_all((dir / "nonl.txt").string(), blocks) == std::vector<std::string>{"a", "b"});
}

TEST_CASE("JSONL: text field, empty documents, blank lines, stop early") {
  auto dir = fresh_dir("corpus_jsonl");
  const std::string path = (dir / "docs.jsonl").string();
  write_text(path,
             "{\"body\": \"first \\u00e9\\ud83d\\ude00\", \"id\": 1}\r\n"
             "\n"
             "{\"body\": \"\"}\n"
             "{\"body\": \"line\\nbreak\"}\n"
             "{\"body\": \"last\"}");
  CorpusOptions options;
  options.text_field = "body";
  CorpusFileStats stats;
  auto docs = read_all(path, options, &stats);
  REQUIRE(docs.size() == 3);
  CHECK(docs[0] == "first \xC3\xA9\xF0\x9F\x98\x80");
  CHECK(docs[1] == "line\nbreak");
  CHECK(docs[2] == "last");
  CHECK(stats.empty_documents == 1);
  CHECK(stats.lines == 5);

  int seen = 0;
  read_corpus_file(path, options, [&](std::string_view) { return ++seen < 2; });
  CHECK(seen == 2);
}

TEST_CASE("C4 json.gz: streamed, huge lines, multi-member gzip") {
  auto dir = fresh_dir("corpus_c4");
  std::string jsonl;
  std::string huge(3 << 20, 'x');  // one 3 MB document: longer than the reader's chunk
  for (int i = 0; i < 1000; ++i) {
    nlohmann::json doc = {{"text", i == 500 ? huge : "document " + std::to_string(i)},
                          {"timestamp", "2019-04-25T12:57:54Z"},
                          {"url", "https://example.org/" + std::to_string(i)}};
    jsonl += doc.dump() + "\n";
  }
  const std::string path = (dir / "c4-train.00000-of-00001.json.gz").string();
  // Two gzip members back to back (what `cat a.gz b.gz` makes) read as one stream.
  size_t half = jsonl.find('\n', jsonl.size() / 2) + 1;
  write_text(path, gum_test::gzip_bytes(jsonl.substr(0, half)) + gum_test::gzip_bytes(jsonl.substr(half)));
  CorpusFileStats stats;
  auto docs = read_all(path, CorpusOptions{}, &stats);
  REQUIRE(docs.size() == 1000);
  CHECK(docs[0] == "document 0");
  CHECK(docs[500] == huge);
  CHECK(docs[999] == "document 999");
  CHECK(stats.text_bytes > huge.size());
}

TEST_CASE("malformed input names file and line") {
  auto dir = fresh_dir("corpus_bad");
  const std::string bad_json = (dir / "bad.jsonl").string();
  write_text(bad_json, "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": broken}\n{\"text\": \"ok\"}\n");
  CHECK_THAT(error_of(bad_json, CorpusOptions{}), Catch::Contains("bad.jsonl:3") && Catch::Contains("invalid JSON"));

  const std::string missing = (dir / "missing.jsonl").string();
  write_text(missing, "{\"text\": \"ok\"}\n{\"content\": \"no text\"}\n");
  CHECK_THAT(error_of(missing, CorpusOptions{}), Catch::Contains("missing.jsonl:2") && Catch::Contains("'text'"));

  const std::string not_string = (dir / "number.jsonl").string();
  write_text(not_string, "[1, 2]\n{\"text\": 5}\n");
  CHECK_THAT(error_of(not_string, CorpusOptions{}), Catch::Contains("number.jsonl:1") && Catch::Contains("object"));

  const std::string bad_c4 = (dir / "c4-bad.json.gz").string();
  write_gzip(bad_c4, "{\"text\": \"ok\", \"url\": 3}\n");
  CHECK_THAT(error_of(bad_c4, CorpusOptions{}), Catch::Contains("c4-bad.json.gz:1") && Catch::Contains("url"));

  const std::string bad_utf8 = (dir / "utf8.jsonl").string();
  write_text(bad_utf8, "{\"text\": \"\xff\xfe\"}\n");
  CHECK_THAT(error_of(bad_utf8, CorpusOptions{}), Catch::Contains("utf8.jsonl:1"));

  SECTION("skip_bad_lines counts and continues") {
    CorpusOptions skip;
    skip.skip_bad_lines = true;
    CorpusFileStats stats;
    auto docs = read_all(bad_json, skip, &stats);
    CHECK(docs.size() == 3);
    CHECK(stats.bad_lines == 1);
    docs = read_all(missing, skip, &stats);
    CHECK(docs.size() == 1);
    CHECK(stats.bad_lines == 1);
  }
}

TEST_CASE("broken gzip is always an error") {
  auto dir = fresh_dir("corpus_gzip");
  std::string jsonl;
  for (int i = 0; i < 20000; ++i) jsonl += "{\"text\": \"document number " + std::to_string(i) + "\"}\n";
  const std::string gz = gum_test::gzip_bytes(jsonl);

  const std::string truncated = (dir / "truncated.json.gz").string();
  write_text(truncated, gz.substr(0, gz.size() / 2));
  CorpusOptions skip;
  skip.skip_bad_lines = true;
  CHECK_THAT(error_of(truncated, skip), Catch::Contains("truncated.json.gz") && Catch::Contains("gzip"));

  const std::string corrupt = (dir / "corrupt.json.gz").string();
  std::string damaged = gz;
  for (size_t i = damaged.size() / 3; i < damaged.size() / 3 + 64; ++i)
    damaged[i] = static_cast<char>(damaged[i] ^ 0x5a);
  write_text(corrupt, damaged);
  CHECK_THAT(error_of(corrupt, CorpusOptions{}), Catch::Contains("corrupt.json.gz"));

  const std::string not_gzip = (dir / "plain.json.gz").string();
  write_text(not_gzip, "{\"text\": \"not compressed\"}\n");
  CHECK_THAT(error_of(not_gzip, CorpusOptions{}), Catch::Contains("not gzip data"));

  CHECK_THAT(error_of((dir / "absent.jsonl").string(), CorpusOptions{}), Catch::Contains("absent.jsonl"));
}

TEST_CASE("globs expand sorted and refuse patterns without matches") {
  auto dir = fresh_dir("corpus_glob");
  for (const char* name : {"b.jsonl", "a.jsonl", "c.txt"}) write_text(dir / name, "x\n");
  std::filesystem::create_directories(dir / "sub.jsonl");  // a directory is not a corpus file
  auto files = expand_globs({(dir / "*.jsonl").string(), (dir / "a.*").string()}, "data.train_files");
  REQUIRE(files.size() == 2);
  CHECK(files[0] == (dir / "a.jsonl").string());
  CHECK(files[1] == (dir / "b.jsonl").string());
  CHECK_THROWS_WITH(expand_globs({(dir / "*.parquet").string()}, "data.train_files"),
                    Catch::Contains("data.train_files") && Catch::Contains("*.parquet"));
}

namespace {

std::vector<std::pair<std::string, bool>> read_pieces(const std::string& path, const CorpusOptions& options,
                                                      size_t max_piece_bytes) {
  std::vector<std::pair<std::string, bool>> pieces;
  read_corpus_pieces(path, options, max_piece_bytes, [&](std::string_view piece, bool ends_document) {
    pieces.emplace_back(piece, ends_document);
    return true;
  });
  return pieces;
}

// The pieces split_document cuts from each whole document, with the last marked.
std::vector<std::pair<std::string, bool>> split_all(const std::vector<std::string>& docs, size_t max_piece_bytes) {
  std::vector<std::pair<std::string, bool>> pieces;
  for (const auto& doc : docs) {
    const auto cut = split_document(doc, max_piece_bytes);
    for (size_t i = 0; i < cut.size(); ++i) pieces.emplace_back(cut[i], i + 1 == cut.size());
  }
  return pieces;
}

// Peak resident memory since the last reset_peak_rss, in bytes (Linux's VmHWM).
uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";  // 5: reset the peak resident set size (Linux 4.0)
  clear.flush();
  return static_cast<bool>(clear);
}

}  // namespace

TEST_CASE("pieces streamed from a file are split_document's pieces of each whole document") {
  auto dir = fresh_dir("corpus_pieces");
  gum::PhiloxStream rng(7, 0);
  std::string text = "\xEF\xBB\xBF";
  for (int i = 0; i < 400; ++i) {
    text += gum_test::generated_sentence(rng);
    text += i % 37 == 0 ? "\r\n  \n\n" : i % 11 == 0 ? "\r\n" : " ";
  }
  text += std::string(5000, 'z') + "\n\n\n";  // a run without whitespace, then newlines to trim
  const std::string path = (dir / "book.txt").string();
  write_text(path, text);
  // JSONL over kInMemoryJsonLineBytes, its text full of escapes that straddle the reader's chunks.
  std::string long_text;
  while (long_text.size() < 3 * kInMemoryJsonLineBytes) long_text += "caf\xC3\xA9 \"q\"\n\t\xF0\x9F\x98\x80 \\ / ";
  const std::string jsonl = (dir / "long.jsonl.gz").string();
  const nlohmann::json long_doc = {{"text", long_text}, {"id", 1}};
  write_gzip(jsonl, "{\"text\": \"short\"}\n" + long_doc.dump(-1, ' ', true) + "\n" + long_doc.dump() + "\n");

  for (size_t max_piece : {size_t{97}, size_t{4096}, kInMemoryJsonLineBytes / 3}) {
    CAPTURE(max_piece);
    for (TextSplit split : {TextSplit::File, TextSplit::BlankLine}) {
      CorpusOptions options;
      options.text_split = split;
      const auto pieces = read_pieces(path, options, max_piece);
      CHECK(pieces == split_all(read_all(path, options), max_piece));
      for (const auto& [piece, last] : pieces) CHECK(piece.size() <= max_piece);
    }
    const auto docs = read_all(jsonl, CorpusOptions{});
    REQUIRE(docs.size() == 3);
    CHECK(docs[1] == long_text);  // \u escapes (dump with ensure_ascii) decode to the same text
    CHECK(docs[2] == long_text);
    CHECK(read_pieces(jsonl, CorpusOptions{}, max_piece) == split_all(docs, max_piece));
  }
}

TEST_CASE("a JSONL line longer than kInMemoryJsonLineBytes is accepted and read exactly as nlohmann parses it") {
  auto dir = fresh_dir("corpus_long_lines");
  const std::string pad(kInMemoryJsonLineBytes + 10, 'p');
  // The members after a padding field that makes the line long; the last "text" is the one kept.
  const std::vector<std::string> members = {
      R"("text": "a\u00e9\ud83d\ude00\n\"b\/")",
      R"("text": "first", "n": [-0.5e+3, 0, 1E2, {"x": [true, false, null, {}]}, []], "text": "last")",
      R"("text": "x", "timestamp": "t", "url": "u")",
      "\"text\": \"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"",
      R"("text": "\ud800")",
      R"("text": "\udc00x")",
      R"("text": "\ud800\u0041")",
      R"("text": "\u00g0")",
      R"("text": "x", "n": 01)",
      R"("text": "x", "n": 1.)",
      R"("text": "x", "n": -)",
      R"("text": "x", "n": 2e)",
      R"("text": "x", "n": tru)",
      R"("text": "x", "n": nul})",
      "\"text\": \"tab\there\"",
      "\"text\": \"\xC0\x80\"",
      "\"text\": \"\xED\xA0\x80\"",
      "\"text\": \"\xF4\x90\x80\x80\"",
      "\"text\": \"\xE2\x82\"",
      R"("text": "x",)",
      R"("text": "x"} {)",
      R"("text": "x")",  // the closing brace is left off below
      R"("text": 5)",
      R"("other": "x")",
      R"("text": "x", "te\u0078t": "escaped key")",
      R"("text": "x", "a": {"text": 3})",
  };
  for (size_t i = 0; i < members.size(); ++i) {
    CAPTURE(i, members[i]);
    std::string line = "{\"pad\": \"" + pad + "\", " + members[i] + (i == 21 ? "" : "}");
    const std::string path = (dir / ("line" + std::to_string(i) + ".jsonl")).string();
    write_text(path, line + "\n");
    nlohmann::json expected;
    bool valid = true;
    try {
      expected = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error&) {
      valid = false;
    }
    const std::string error = error_of(path, CorpusOptions{});
    if (!valid) {
      CHECK_THAT(error, Catch::Contains(":1: invalid JSON"));
    } else if (!expected.contains("text")) {
      CHECK_THAT(error, Catch::Contains("missing field 'text'"));
    } else if (!expected["text"].is_string()) {
      CHECK_THAT(error, Catch::Contains("is not a string"));
    } else {
      REQUIRE(error.empty());
      const auto docs = read_all(path, CorpusOptions{});
      REQUIRE(docs.size() == 1);
      CHECK(docs[0] == expected["text"].get<std::string>());
    }
  }
  SECTION("a bad long line is skipped whole with skip_bad_lines") {
    const std::string path = (dir / "mixed.jsonl").string();
    write_text(path, "{\"text\": \"one\"}\n{\"text\": \"" + pad + "\", \"n\": 01}\n{\"text\": \"two\"}\n");
    CorpusOptions skip;
    skip.skip_bad_lines = true;
    CorpusFileStats stats;
    CHECK(read_all(path, skip, &stats) == std::vector<std::string>{"one", "two"});
    CHECK(stats.bad_lines == 1);
  }
}

TEST_CASE("memory while reading one huge single-line document does not grow with its length") {
  auto dir = fresh_dir("corpus_memory");
  constexpr size_t kDocumentBytes = 48 << 20;
  std::string text;
  text.reserve(kDocumentBytes + 64);
  gum::PhiloxStream rng(3, 0);
  while (text.size() < kDocumentBytes) text += gum_test::generated_sentence(rng) + ' ';
  const std::string plain = (dir / "one_line.txt").string();
  write_text(plain, text);
  const std::string jsonl = (dir / "one_line.jsonl.gz").string();
  write_gzip(jsonl, nlohmann::json{{"text", text}}.dump() + "\n");
  const size_t document_bytes = text.size();
  std::string().swap(text);  // freed before the peak is measured

  for (const std::string& path : {plain, jsonl}) {
    CAPTURE(path);
    if (!reset_peak_rss()) {
      WARN("cannot reset the peak RSS (/proc/self/clear_refs): not measured");
      return;
    }
    const uint64_t before = peak_rss_bytes();
    uint64_t bytes = 0, pieces = 0;
    read_corpus_pieces(path, CorpusOptions{}, 64 << 10, [&](std::string_view piece, bool) {
      bytes += piece.size();
      ++pieces;
      return true;
    });
    const uint64_t growth = peak_rss_bytes() - before;
    CHECK(bytes == document_bytes);
    CHECK(pieces > document_bytes / (64 << 10));
    // Held: 1 MiB read chunks (two for the JSONL line's second pass), zlib's buffers, the 1 MiB
    // prefix of the JSONL line before it streams, one piece; measured 3.4 MiB (text) and 1.3 MiB
    // (jsonl.gz) of growth. A
    // reader holding the line would grow by at least its 48 MiB.
    CHECK(growth < (16u << 20));
  }
}
