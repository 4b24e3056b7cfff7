// Fuzz target: an SFT JSONL file (prompt/completion, chat messages or pre-tokenized lines) read
// by SftDataset as training does: parse, render the chat template, tokenize, mask, truncate.
// The first byte picks the configured format and truncation; the rest is the file. The
// tokenizer is a byte-level stand-in, so only the reader's own logic is under test.
#include "fuzz_util.h"
#include "gum/data/sft_loader.h"

namespace {

gum::TextEncoder byte_encoder() {
  gum::TextEncoder encoder;
  encoder.encode = [](std::string_view text) {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(3 + c);
    return ids;
  };
  encoder.pad_id = 0;
  encoder.bos_id = 1;
  encoder.eos_id = 2;
  encoder.vocab_size = 3 + 256;
  return encoder;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const gum::TextEncoder encoder = byte_encoder();
  gum::SftConfig config;
  const gum::SftFormat formats[] = {gum::SftFormat::Auto, gum::SftFormat::PromptCompletion, gum::SftFormat::Messages,
                                    gum::SftFormat::Tokenized};
  config.format = formats[data[0] % 4];
  config.truncation = (data[0] & 4) ? gum::SftTruncation::Drop : gum::SftTruncation::Truncate;
  config.layout = (data[0] & 8) ? gum::SftLayout::Pad : gum::SftLayout::Pack;
  config.files = {gum_fuzz::input_file("input.jsonl", data + 1, size - 1)};
  gum_fuzz::expect_accept_or_gum_error([&] { gum::SftDataset dataset(config, encoder, 16); });
  return 0;
}
