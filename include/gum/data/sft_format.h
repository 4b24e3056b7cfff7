#pragma once
// Supervised fine-tuning (SFT) examples: JSONL lines parsed, rendered with the chat template and
// tokenized, with the loss only on what the model should learn to produce.
//
// Each line of a file is one JSON object in one of three forms:
//   {"prompt": "...", "completion": "..."}                 loss on the completion (and EOS)
//   {"messages": [{"role": "user", "content": "..."}, ...]} rendered with the chat template;
//                                                           loss on the trained roles' turns
//   {"input_ids": [...], "labels": [...]}                   pre-tokenized; labels -100 = no loss
//                                                           (labels absent: loss on every token)
// Other keys on a line (ids, sources) are ignored.
//
// Chat template language: each role has a prefix and a suffix string, and a message renders
// as prefix + content + suffix. The prefix is never trained; for the trained roles
// (default: assistant) content + suffix are trained and, with add_eos, an EOS token follows
// each trained turn. Segments are tokenized one by one, so the trained/untrained boundary
// falls exactly between tokens.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "gum/data/sft.h"

namespace gum {

class Tokenizer;

// What SFT tokenization needs from a tokenizer; text_encoder(tokenizer) wraps our SentencePiece
// Tokenizer, tests may supply their own. Pre-tokenized data needs only vocab_size.
struct TextEncoder {
  std::function<std::vector<int32_t>(std::string_view)> encode;  // empty: text formats are errors
  int32_t bos_id = -1, eos_id = -1, pad_id = -1;                 // -1: none
  int32_t vocab_size = 0;
};
TextEncoder text_encoder(const Tokenizer& tokenizer);

// A tokenized example: labels[i] is tokens[i] when predicting it is trained, else -1.
struct SftExample {
  std::vector<int32_t> tokens;
  std::vector<int32_t> labels;
};

// One rendered piece of text and whether it is trained.
struct SftSegment {
  std::string text;
  bool trained = false;
};

// The segments of a {"messages": [...]} value under `chat`; `where` ("file:line") names bad input.
std::vector<SftSegment> render_chat(const nlohmann::json& messages, const ChatTemplate& chat, const std::string& where);

// One JSONL object -> example (before truncation). Errors name `where`.
SftExample sft_example_from_json(const nlohmann::json& line, const SftConfig& config, const TextEncoder& encoder,
                                 const std::string& where);

}  // namespace gum
