#pragma once
// Text generation from a LlamaModel: greedy or temperature + nucleus (top-p) sampling with a
// Philox stream, stopping at EOS. Each new token recomputes the whole context window with one
// forward pass (no KV cache): simple and exact on CPU for demo sizes. A context longer than the
// model's seq_len slides: only its last seq_len tokens are seen, at RoPE positions 0..seq_len-1.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gum {

class LlamaModel;
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
// on_token, when given, sees each new token as soon as it is chosen (streaming output).
std::vector<int32_t> sample_tokens(LlamaModel& model, const std::vector<int32_t>& context, const SampleOptions& options,
                                   int32_t eos_id, const std::function<void(int32_t)>& on_token = {});

// Encodes the prompt (with BOS when add_bos and the tokenizer has one), generates and returns the
// continuation's text (the prompt excluded, EOS not rendered).
std::string sample_text(LlamaModel& model, const Tokenizer& tokenizer, const SampleOptions& options);

// Where `gum_train sample` takes the model from: exactly one of a checkpoint (a step folder or a
// checkpoint folder; its config and tokenizer come from trainer.json) or a Hugging Face folder
// (config.json, safetensors weights, tokenizer.model).
struct SampleSource {
  std::string checkpoint;
  std::string hf_dir;
  std::string tokenizer;         // overrides the source's tokenizer.model
  std::string backend = "auto";  // cpu | cuda | auto
};

// gum_train sample (--checkpoint DIR | --hf DIR) --prompt TEXT [...]: prints the prompt and its
// continuation. The model's window is the prompt plus max_new_tokens, at most max_position_embeddings.
int command_sample(const SampleSource& source, const SampleOptions& options);

}  // namespace gum
