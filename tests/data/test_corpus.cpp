#include <catch2/catch.hpp>
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
