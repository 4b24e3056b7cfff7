#pragma once
// Text generation from a LlamaModel through a LlamaDecoder (KV cache): greedy or temperature +
// nucleus (top-p) sampling with a Philox stream, stopping at EOS. The prompt is prefilled once,
// then each new token costs one decode step (one token's work against the cache).
//
// The window is the decoder's capacity W, at RoPE positions 0..W-1. When the cache is full and
// another token is needed, the context slides: the most recent max(1, W/2) tokens are prefilled
// again at positions 0.., and decoding goes on from there (one prefill per W/2 new tokens, instead
// of one per token for a window that drops its oldest token every step). A prompt longer than W
// keeps its last W tokens.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gum {

class LlamaDecoder;
class Tokenizer;

struct SampleOptions {
  std::string prompt;
  int max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // nucleus sampling: the smallest set of tokens holding this probability
  uint64_t seed = 1234;      // Philox key: the same seed gives the same text
  bool add_bos = true;       // start the prompt with BOS when the tokenizer has one
  bool stop_at_eos = true;
  // > 0: only ids below it are generated (sample_text sets the tokenizer's size: a model's
  // vocabulary may have rows the tokenizer never produces, which it could not decode).
  int32_t vocab_limit = 0;
};

// Usage error naming the option for values out of range (max_new_tokens < 0, temperature < 0,
// top_p outside (0, 1]).
void validate_sample_options(const SampleOptions& options);

// The next token from one row of logits: argmax when temperature is 0 (the lowest id among ties),
// else softmax(logits / temperature) restricted to the top-p nucleus (Holtzman et al., "The Curious
// Case of Neural Text Degeneration", ICLR 2020, eq. 3), sampled by inverse CDF at `uniform` in (0, 1).
int32_t choose_next_token(const float* logits, int vocab_size, double temperature, double top_p, double uniform);

// Generates up to max_new_tokens after `context` (token ids, not empty); returns only the new
// tokens, ending with eos_id when it was produced and stop_at_eos (eos_id < 0: never stops early).
// on_token, when given, sees each new token as soon as it is chosen (streaming output). The
// decoder's cache is overwritten; its capacity is the window (see the header comment).
std::vector<int32_t> sample_tokens(LlamaDecoder& decoder, const std::vector<int32_t>& context,
                                   const SampleOptions& options, int32_t eos_id,
                                   const std::function<void(int32_t)>& on_token = {});

// Encodes the prompt (with BOS when add_bos and the tokenizer has one), generates and returns the
// continuation's text (the prompt excluded, EOS not rendered). on_token as for sample_tokens.
std::string sample_text(LlamaDecoder& decoder, const Tokenizer& tokenizer, const SampleOptions& options,
                        const std::function<void(int32_t)>& on_token = {});

}  // namespace gum
