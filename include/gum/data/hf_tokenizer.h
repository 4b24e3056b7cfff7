#pragma once
// A Hugging Face tokenizer.json read and applied as the Rust `tokenizers` library does: added and
// special tokens matched first, then normalizer, pre-tokenizer, BPE model (byte-level or with byte
// fallback) and, for decoding, the decoder chain. A component the file uses that is not supported
// is refused with an error naming its JSON path, never ignored.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gum/data/tokenizer.h"

namespace gum {

class HfTokenizer : public TokenizerModel {
 public:
  // `json_text` is tokenizer.json's content, `config_text` tokenizer_config.json's (empty when there
  // is none; it names bos/eos/pad/unk). `name` prefixes every error.
  HfTokenizer(const std::string& json_text, const std::string& config_text, const std::string& name);
  ~HfTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string piece(int32_t id) const override;
  int32_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t pad_id() const override;
  int32_t unk_id() const override;
  // The ids the post-processor puts before and after a single sequence (Llama 3: BOS before).
  const std::vector<int32_t>& template_prefix() const;
  const std::vector<int32_t>& template_suffix() const;
  // An added token's id by its content, -1 when there is none.
  int32_t added_token_id(std::string_view content) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Replaces every ill-formed UTF-8 sequence with U+FFFD, one per maximal ill-formed subpart (as
// Python's bytes.decode(errors="replace") and Rust's String::from_utf8_lossy do).
std::string utf8_lossy(std::string_view bytes);

}  // namespace gum
