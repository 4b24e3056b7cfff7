#include "gum/data/prepare.h"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/core/logging.h"
#include "gum/data/shard.h"
#include "gum/data/tokenizer.h"

namespace gum {
namespace fs = std::filesystem;

namespace {

constexpr int kManifestVersion = 1;
constexpr size_t kBatchTextBytes = 8 << 20;  // pieces tokenized together in parallel
constexpr double kProgressIntervalS = 5.0;

std::string manifest_path(const DataConfig& config) { return (fs::path(config.shard_dir) / "prepare.json").string(); }

std::string shard_name(const std::string& split, size_t index) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s_%05zu.bin", split.c_str(), index);
  return name;
}

std::string hex64(uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(v));
  return text;
}

nlohmann::json corpus_options_json(const CorpusOptions& options) {
  return {{"format", corpus_format_name(options.format)},
          {"text_field", options.text_field},
          {"text_split", text_split_name(options.text_split)},
          {"skip_bad_lines", options.skip_bad_lines}};
}

// What identifies a source file's content without reading it.
nlohmann::json source_identity(const std::string& path) {
  std::error_code ec;
  const auto bytes = fs::file_size(path, ec);
  if (ec) runtime_error(path, ": cannot stat: ", ec.message());
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch();
  return {{"source", path},
          {"source_bytes", bytes},
          {"source_mtime_ns", std::chrono::duration_cast<std::chrono::nanoseconds>(mtime).count()}};
}

nlohmann::json load_manifest(const DataConfig& config) {
  const std::string path = manifest_path(config);
  if (!fs::exists(path)) return nlohmann::json::object();
  try {
    nlohmann::json manifest = read_json_file(path);
    if (manifest.is_object() && manifest.value("version", 0) == kManifestVersion) return manifest;
  } catch (const Error& e) {
    spdlog::warn("{}: unreadable manifest ({}); all shards are rebuilt", path, e.what());
  }
  return nlohmann::json::object();
}

void save_manifest(const DataConfig& config, const nlohmann::json& manifest) {
  const std::string path = manifest_path(config);
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << manifest.dump(2) << "\n";
    out.flush();
    if (!out) runtime_error(temporary, ": write failed");
  }
  std::error_code ec;
  fs::rename(temporary, path, ec);
  if (ec) runtime_error(path, ": rename failed: ", ec.message());
}

// The settings a trained tokenizer depends on: a change means retraining.
nlohmann::json tokenizer_recipe(const DataConfig& config, const std::vector<std::string>& train_files) {
  return {{"train_files", train_files},
          {"corpus", corpus_options_json(config.corpus)},
          {"vocab_size", config.tokenizer_vocab_size},
          {"model_type", config.tokenizer_model_type},
          {"character_coverage", config.character_coverage},
          {"train_sentences", config.tokenizer_train_sentences}};
}

// The first tokenizer_train_sentences non-blank lines of the training corpus, in file order.
// A line is kept only in its first kMaxPieceBytes + 1 bytes, so a huge document is not held:
// SentencePiece's trainer skips sentences longer than its max_sentence_length (4192 bytes)
// anyway, and the line still counts towards the limit as before.
std::vector<std::string> sample_sentences(const DataConfig& config, const std::vector<std::string>& train_files) {
  std::vector<std::string> sentences;
  const size_t limit = static_cast<size_t>(config.tokenizer_train_sentences);
  std::string line;
  bool line_has_text = false;
  for (const auto& file : train_files) {
    if (sentences.size() >= limit) break;
    read_corpus_pieces(file, config.corpus, kMaxPieceBytes, [&](std::string_view piece, bool ends_document) {
      size_t start = 0;
      while (sentences.size() < limit) {
        size_t end = piece.find('\n', start);
        const bool line_ends = end != std::string_view::npos || ends_document;
        if (end == std::string_view::npos) end = piece.size();
        const std::string_view part = piece.substr(start, end - start);
        line.append(part.substr(0, kMaxPieceBytes + 1 - std::min(line.size(), kMaxPieceBytes + 1)));
        line_has_text = line_has_text || part.find_first_not_of(" \t\r") != std::string_view::npos;
        if (!line_ends) break;
        if (line_has_text) sentences.push_back(line);
        line.clear();
        line_has_text = false;
        if (end == piece.size()) break;
        start = end + 1;
      }
      return sentences.size() < limit;
    });
  }
  return sentences;
}

std::string ensure_tokenizer(const DataConfig& config, const std::vector<std::string>& train_files,
                             nlohmann::json& manifest) {
  if (!config.tokenizer.empty()) {
    if (!fs::exists(config.tokenizer))  // a .model, a tokenizer.json or a Hugging Face folder
      usage_error("data.tokenizer: ", config.tokenizer, " does not exist (leave it empty to train one)");
    return config.tokenizer;
  }
  const std::string path = tokenizer_path(config);
  const nlohmann::json recipe = tokenizer_recipe(config, train_files);
  if (fs::exists(path) && manifest.contains("tokenizer_recipe") && manifest["tokenizer_recipe"] == recipe) {
    spdlog::info("prepare: reusing tokenizer {} (trained with the same settings)", path);
    return path;
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> sentences = sample_sentences(config, train_files);
  spdlog::info("prepare: training a {} tokenizer with {} pieces on {} lines", config.tokenizer_model_type,
               config.tokenizer_vocab_size, sentences.size());
  TokenizerTrainOptions options;
  options.vocab_size = config.tokenizer_vocab_size;
  options.model_type = config.tokenizer_model_type;
  options.character_coverage = config.character_coverage;
  options.num_threads = omp_get_max_threads();
  train_tokenizer(sentences, options, path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("prepare: tokenizer written to {} in {:.1f} s", path, seconds);
  manifest["tokenizer_recipe"] = recipe;
  manifest.erase("splits");  // every shard depends on the tokenizer
  return path;
}

struct FileResult {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint64_t text_bytes = 0;
};

// Progress across the files of one split, logged at most every kProgressIntervalS.
class Progress {
 public:
  explicit Progress(std::string split) : split_(std::move(split)), start_(std::chrono::steady_clock::now()) {}
  void add(uint64_t documents, uint64_t tokens, uint64_t bytes) {
    documents_ += documents;
    tokens_ += tokens;
    bytes_ += bytes;
    if (seconds() - last_report_s_ >= kProgressIntervalS) report("");
  }
  bool has_work() const { return documents_ > 0; }
  void report(const char* prefix) {
    last_report_s_ = seconds();
    spdlog::info("prepare {}: {}{} documents, {} tokens, {:.1f} MB of text, {:.2f} MB/s", split_, prefix, documents_,
                 tokens_, bytes_ / 1e6, bytes_ / 1e6 / std::max(1e-9, last_report_s_));
  }

 private:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  std::string split_;
  std::chrono::steady_clock::time_point start_;
  double last_report_s_ = 0;
  uint64_t documents_ = 0, tokens_ = 0, bytes_ = 0;
};

// A piece of a document; the last piece of each document is followed by EOS.
struct TextPiece {
  std::string text;
  bool ends_document = true;
};

// Tokenizes a batch of pieces in parallel (SentencePiece encoding is read-only, thread-safe)
// and appends them in order.
void flush_batch(const Tokenizer& tokenizer, std::vector<TextPiece>& batch, ShardWriter& writer, FileResult& result,
                 Progress& progress) {
  std::vector<std::vector<int32_t>> encoded(batch.size());
  std::string first_error;
#pragma omp parallel for schedule(dynamic, 16)
  for (size_t i = 0; i < batch.size(); ++i) {
    try {
      encoded[i] = tokenizer.encode(batch[i].text);
    } catch (const std::exception& e) {
#pragma omp critical
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!first_error.empty()) runtime_error(first_error);
  const int32_t eos = tokenizer.eos_id();
  uint64_t documents = 0, tokens = 0, bytes = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].ends_document) {
      encoded[i].push_back(eos);
      ++documents;
    }
    writer.append_document(encoded[i].data(), encoded[i].size());
    tokens += encoded[i].size();
    bytes += batch[i].text.size();
  }
  result.documents += documents;
  result.tokens += tokens;
  result.text_bytes += bytes;
  progress.add(documents, tokens, bytes);
  batch.clear();
}

FileResult tokenize_file(const DataConfig& config, const Tokenizer& tokenizer, const std::string& source,
                         const std::string& shard_path, Progress& progress) {
  ShardWriter writer(shard_path, static_cast<uint64_t>(tokenizer.vocab_size()), tokenizer.fingerprint());
  FileResult result;
  std::vector<TextPiece> batch;
  size_t batch_bytes = 0;
  read_corpus_pieces(source, config.corpus, kMaxPieceBytes, [&](std::string_view piece, bool ends_document) {
    batch.push_back({std::string(piece), ends_document});
    batch_bytes += piece.size();
    if (batch_bytes >= kBatchTextBytes) {
      flush_batch(tokenizer, batch, writer, result, progress);
      batch_bytes = 0;
    }
    return true;
  });
  if (!batch.empty()) flush_batch(tokenizer, batch, writer, result, progress);
  writer.finish();
  if (result.documents == 0) spdlog::warn("prepare: {} holds no documents: its shard {} is empty", source, shard_path);
  return result;
}

// A manifest entry still describes `shard_path` for this source, tokenizer and corpus options.
bool shard_is_current(const nlohmann::json& entry, const nlohmann::json& identity, const nlohmann::json& corpus,
                      const Tokenizer& tokenizer, const std::string& shard_path) {
  if (!entry.is_object() || !fs::exists(shard_path)) return false;
  for (const auto& [key, value] : identity.items())
    if (!entry.contains(key) || entry[key] != value) return false;
  if (!entry.contains("corpus") || entry["corpus"] != corpus) return false;
  try {
    ShardInfo info = read_shard_info(shard_path);
    return info.tokenizer_fingerprint == tokenizer.fingerprint() &&
           entry.value("tokens", uint64_t{0}) == info.token_count;
  } catch (const Error&) {
    return false;
  }
}

void prepare_split(const DataConfig& config, const std::string& split, const std::vector<std::string>& sources,
                   const Tokenizer& tokenizer, nlohmann::json& manifest, PrepareSummary& summary) {
  nlohmann::json previous = manifest.contains("splits") && manifest["splits"].contains(split)
                                ? manifest["splits"][split]
                                : nlohmann::json::array();
  nlohmann::json entries = nlohmann::json::array();
  const nlohmann::json corpus = corpus_options_json(config.corpus);
  Progress progress(split);
  uint64_t documents = 0, tokens = 0;
  std::vector<std::string> written;
  for (size_t i = 0; i < sources.size(); ++i) {
    const std::string name = shard_name(split, i);
    const std::string shard_path = (fs::path(config.shard_dir) / name).string();
    nlohmann::json identity = source_identity(sources[i]);
    nlohmann::json entry = identity;
    entry["shard"] = name;
    entry["corpus"] = corpus;
    const nlohmann::json old = i < previous.size() ? previous[i] : nlohmann::json();
    if (shard_is_current(old, identity, corpus, tokenizer, shard_path)) {
      entry["tokens"] = old["tokens"];
      entry["documents"] = old["documents"];
      ++summary.shards_reused;
    } else {
      FileResult result = tokenize_file(config, tokenizer, sources[i], shard_path, progress);
      entry["tokens"] = result.tokens;
      entry["documents"] = result.documents;
      ++summary.shards_written;
    }
    documents += entry["documents"].get<uint64_t>();
    tokens += entry["tokens"].get<uint64_t>();
    entries.push_back(entry);
    written.push_back(name);
  }
  // Shards of an earlier, longer file list would otherwise join this split's stream.
  const std::regex pattern(split + "_[0-9]{5}\\.bin");
  for (const auto& item : fs::directory_iterator(config.shard_dir)) {
    const std::string name = item.path().filename().string();
    if (std::regex_match(name, pattern) && std::find(written.begin(), written.end(), name) == written.end()) {
      spdlog::info("prepare: removing stale shard {}", item.path().string());
      fs::remove(item.path());
    }
  }
  if (split == "train" && tokens == 0)
    runtime_error("data.train_files: the ", sources.size(), " file(s) hold no documents: nothing to train on");
  manifest["splits"][split] = entries;
  if (progress.has_work()) progress.report("tokenized ");
  spdlog::info("prepare {}: {} shards in {}, {} documents, {} tokens", split, sources.size(), config.shard_dir,
               documents, tokens);
  if (split == "train") {
    summary.train_documents = documents;
    summary.train_tokens = tokens;
  } else {
    summary.valid_documents = documents;
    summary.valid_tokens = tokens;
  }
}

}  // namespace

std::string tokenizer_path(const DataConfig& config) {
  if (!config.tokenizer.empty()) return config.tokenizer;
  return (fs::path(config.shard_dir) / "tokenizer.model").string();
}

PrepareSummary prepare_data(const DataConfig& config) {
  const std::vector<std::string> train_files = expand_globs(config.train_files, "data.train_files");
  const std::vector<std::string> valid_files =
      config.valid_files.empty() ? std::vector<std::string>{} : expand_globs(config.valid_files, "data.valid_files");
  std::error_code ec;
  fs::create_directories(config.shard_dir, ec);
  if (ec) runtime_error("data.shard_dir: cannot create ", config.shard_dir, ": ", ec.message());

  nlohmann::json manifest = load_manifest(config);
  PrepareSummary summary;
  summary.tokenizer_path = ensure_tokenizer(config, train_files, manifest);
  Tokenizer tokenizer(summary.tokenizer_path);
  summary.tokenizer_fingerprint = tokenizer.fingerprint();
  if (tokenizer.eos_id() < 0)
    usage_error("tokenizer ", summary.tokenizer_path, " has no EOS piece, which separates documents in shards");
  if (manifest.value("tokenizer_fingerprint", std::string()) != hex64(tokenizer.fingerprint()))
    manifest.erase("splits");
  manifest["version"] = kManifestVersion;
  manifest["tokenizer"] = summary.tokenizer_path;
  manifest["tokenizer_fingerprint"] = hex64(tokenizer.fingerprint());
  manifest["vocab_size"] = tokenizer.vocab_size();
  spdlog::info("prepare: tokenizer {} ({} pieces, eos {}, fingerprint {}), {} train and {} valid files",
               summary.tokenizer_path, tokenizer.vocab_size(), tokenizer.eos_id(), hex64(tokenizer.fingerprint()),
               train_files.size(), valid_files.size());

  prepare_split(config, "train", train_files, tokenizer, manifest, summary);
  save_manifest(config, manifest);
  prepare_split(config, "valid", valid_files, tokenizer, manifest, summary);
  save_manifest(config, manifest);
  spdlog::info("prepare: {} shards written, {} up to date; train {} tokens, valid {} tokens", summary.shards_written,
               summary.shards_reused, summary.train_tokens, summary.valid_tokens);
  return summary;
}

std::vector<std::string> list_shards(const DataConfig& config, const std::string& split) {
  if (split != "train" && split != "valid") usage_error("list_shards: unknown split '", split, "' (train or valid)");
  std::vector<std::string> shards;
  const std::regex pattern(split + "_[0-9]{5}\\.bin");
  if (fs::is_directory(config.shard_dir))
    for (const auto& item : fs::directory_iterator(config.shard_dir))
      if (std::regex_match(item.path().filename().string(), pattern)) shards.push_back(item.path().string());
  // Zero-padded indices: name order is input-file order.
  std::sort(shards.begin(), shards.end());
  if (shards.empty() && split == "train")
    runtime_error("no training shards in ", config.shard_dir, ": run `gum_train prepare CONFIG.json` first");
  return shards;
}

}  // namespace gum
