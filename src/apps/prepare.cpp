#include "gum/data/prepare.h"

#include "commands.h"
#include "gum/core/error.h"
#include "gum/core/format.h"
#include "gum/core/logging.h"
#include "gum/data/tokenizer.h"
#include "gum/train/config.h"
#include "gum/train/metrics.h"

namespace gum {

int command_prepare(const std::string& config_path, const std::vector<std::string>& overrides) {
  TrainConfig config = load_train_config(config_path, overrides);
  setup_logging(0, 1, config.logging.verbose);
  PrepareSummary s = prepare_data(config.data);
  Tokenizer tokenizer(s.tokenizer_path);
  spdlog::info(
      "prepared {}: tokenizer {} ({} pieces), train {} tokens in {} documents, valid {} tokens in {} "
      "documents ({} shards written, {} reused)",
      config.data.shard_dir, s.tokenizer_path, tokenizer.vocab_size(), format_count(double(s.train_tokens)),
      s.train_documents, format_count(double(s.valid_tokens)), s.valid_documents, s.shards_written, s.shards_reused);
  spdlog::info("prepare: peak memory {} ({} bytes)", format_bytes(double(peak_rss_bytes())), peak_rss_bytes());
  if (tokenizer.vocab_size() > config.model.vocab_size)
    usage_error(config_path, ": model.vocab_size (", config.model.vocab_size, ") is smaller than the tokenizer's ",
                tokenizer.vocab_size(), " pieces: set model.vocab_size to ", tokenizer.vocab_size());
  if (tokenizer.vocab_size() < config.model.vocab_size)
    spdlog::info("model.vocab_size {} > tokenizer's {} pieces: the extra embedding rows are never used",
                 config.model.vocab_size, tokenizer.vocab_size());
  return 0;
}

}  // namespace gum
