#pragma once
// `gum_train prepare`: train a tokenizer when none is configured, then tokenize the train and
// valid corpora into shards (one shard per input file, documents joined with EOS).
//
// shard_dir holds tokenizer.model (when trained here), train_00000.bin, ..., valid_00000.bin, ...
// and prepare.json, a manifest of what each shard was made from: re-running prepare skips the
// files whose source, corpus options and tokenizer are unchanged, so it is cheap and idempotent.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gum/data/data_config.h"

namespace gum {

struct PrepareSummary {
  std::string tokenizer_path;
  uint64_t tokenizer_fingerprint = 0;
  uint64_t train_tokens = 0, train_documents = 0;
  uint64_t valid_tokens = 0, valid_documents = 0;
  uint64_t shards_written = 0, shards_reused = 0;
};

PrepareSummary prepare_data(const DataConfig& config);

// Encoding a text costs SentencePiece about a hundred bytes of memory per byte, so prepare
// tokenizes a document in pieces of at most this many bytes (one 200 MB line would need 20 GB),
// read as pieces (read_corpus_pieces) so that no document is held whole.
inline constexpr size_t kMaxPieceBytes = 64 << 10;

// The tokenizer a run uses: data.tokenizer when set, else the one prepare trains.
std::string tokenizer_path(const DataConfig& config);

// The shards of "train" or "valid" in their fixed order (by input-file index). None for
// "train" is a runtime error telling the user to run prepare; none for "valid" is an empty list.
std::vector<std::string> list_shards(const DataConfig& config, const std::string& split);

}  // namespace gum
