#include "sample.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "commands.h"
#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/core/philox.h"
#include "gum/data/prepare.h"
#include "gum/data/tokenizer.h"
#include "gum/io/checkpoint.h"
#include "gum/io/safetensors.h"
#include "gum/io/weights.h"
#include "gum/model/decoder.h"
#include "gum/model/hf_import.h"
#include "gum/model/llama.h"
#include "gum/train/config.h"

namespace gum {

void validate_sample_options(const SampleOptions& o) {
  if (o.max_new_tokens < 0) usage_error("sample: --max-new-tokens must be >= 0, got ", o.max_new_tokens);
  if (!(o.temperature >= 0)) usage_error("sample: --temperature must be >= 0 (0 = greedy), got ", o.temperature);
  if (!(o.top_p > 0 && o.top_p <= 1)) usage_error("sample: --top-p must lie in (0, 1], got ", o.top_p);
}

int32_t choose_next_token(const float* logits, int vocab_size, double temperature, double top_p, double uniform) {
  GUM_CHECK(vocab_size > 0);
  for (int i = 0; i < vocab_size; ++i)
    if (!std::isfinite(logits[i])) runtime_error("sample: logit of token ", i, " is ", logits[i], " (model diverged?)");
  // std::max_element returns the first maximum: ties go to the lowest id.
  const int32_t argmax = static_cast<int32_t>(std::max_element(logits, logits + vocab_size) - logits);
  if (temperature == 0) return argmax;

  const double max_logit = logits[argmax];
  std::vector<double> weight(static_cast<size_t>(vocab_size));
  for (int i = 0; i < vocab_size; ++i) weight[i] = std::exp((logits[i] - max_logit) / temperature);
  const double total = std::accumulate(weight.begin(), weight.end(), 0.0);

  // The nucleus: most probable first (lowest id among equals), until it holds top_p of the mass.
  std::vector<int32_t> order(static_cast<size_t>(vocab_size));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return weight[a] > weight[b]; });
  double nucleus_mass = 0;
  size_t nucleus_size = 0;
  while (nucleus_size < order.size()) {
    nucleus_mass += weight[order[nucleus_size++]];
    if (nucleus_mass >= top_p * total) break;
  }
  // Inverse CDF of the renormalised nucleus.
  const double target = uniform * nucleus_mass;
  double cumulative = 0;
  for (size_t k = 0; k < nucleus_size; ++k) {
    cumulative += weight[order[k]];
    if (target < cumulative) return order[k];
  }
  return order[nucleus_size - 1];  // uniform rounding to the very top of the mass
}

std::vector<int32_t> sample_tokens(LlamaDecoder& decoder, const std::vector<int32_t>& context,
                                   const SampleOptions& options, int32_t eos_id,
                                   const std::function<void(int32_t)>& on_token) {
  validate_sample_options(options);
  if (context.empty()) usage_error("sample: the prompt encodes to no tokens (and there is no BOS to start from)");
  const size_t window = static_cast<size_t>(decoder.capacity());
  const size_t slide_keep = std::max<size_t>(1, window / 2);
  const int V = decoder.model().config().vocab_size;
  const int candidates = options.vocab_limit > 0 ? std::min(V, options.vocab_limit) : V;
  std::vector<int32_t> all = context, generated;
  std::vector<float> row(static_cast<size_t>(V));
  PhiloxStream rng(options.seed, 0);
  // The most recent `count` tokens, prefilled into the emptied cache at positions 0..count-1.
  auto prefill_recent = [&](size_t count) {
    return decoder.prefill(std::vector<int32_t>(all.end() - static_cast<std::ptrdiff_t>(count), all.end()));
  };
  Tensor logits;
  for (int step = 0; step < options.max_new_tokens; ++step) {
    if (step == 0)
      logits = prefill_recent(std::min(all.size(), window));
    else if (static_cast<size_t>(decoder.length()) < window)
      logits = decoder.decode(all.back());
    else
      logits = prefill_recent(slide_keep);  // the cache is full: slide (see sample.h)
    decoder.model().backend().copy_to_host(row.data(), logits);
    // One uniform per step whether or not it is used, so a seed's stream never depends on temperature.
    const double uniform = rng.next_uniform();
    const int32_t next = choose_next_token(row.data(), candidates, options.temperature, options.top_p, uniform);
    generated.push_back(next);
    all.push_back(next);
    if (on_token) on_token(next);
    if (options.stop_at_eos && eos_id >= 0 && next == eos_id) break;
  }
  return generated;
}

std::string sample_text(LlamaDecoder& decoder, const Tokenizer& tokenizer, const SampleOptions& options,
                        const std::function<void(int32_t)>& on_token) {
  const int vocab_size = decoder.model().config().vocab_size;
  if (tokenizer.vocab_size() > vocab_size)
    usage_error("sample: tokenizer ", tokenizer.path(), " has ", tokenizer.vocab_size(),
                " pieces, more than the model's vocab_size ", vocab_size);
  std::vector<int32_t> prompt;
  if (options.add_bos && tokenizer.bos_id() >= 0) prompt.push_back(tokenizer.bos_id());
  const size_t text_begin = prompt.size();
  for (int32_t id : tokenizer.encode(options.prompt)) prompt.push_back(id);

  SampleOptions limited = options;
  limited.vocab_limit = tokenizer.vocab_size();
  std::vector<int32_t> generated = sample_tokens(decoder, prompt, limited, tokenizer.eos_id(), on_token);
  if (!generated.empty() && generated.back() == tokenizer.eos_id() && options.stop_at_eos) generated.pop_back();
  // SentencePiece renders a word's leading space from its first piece: decode prompt and continuation
  // together and cut the prompt off, so the continuation keeps the space that separates it.
  std::vector<int32_t> prompt_text(prompt.begin() + static_cast<std::ptrdiff_t>(text_begin), prompt.end());
  std::vector<int32_t> joined = prompt_text;
  joined.insert(joined.end(), generated.begin(), generated.end());
  const std::string prompt_decoded = tokenizer.decode(prompt_text);
  const std::string all_decoded = tokenizer.decode(joined);
  if (all_decoded.compare(0, prompt_decoded.size(), prompt_decoded) == 0)
    return all_decoded.substr(prompt_decoded.size());
  return tokenizer.decode(generated);
}

int command_sample(const SampleSource& source, const SampleOptions& options) {
  setup_logging();
  validate_sample_options(options);
  if (source.checkpoint.empty() == source.hf_dir.empty())
    usage_error("sample needs exactly one of --checkpoint DIR or --hf DIR");
  LlamaConfig config;
  TensorMap weights;
  std::string tokenizer_file = source.tokenizer, origin;
  if (!source.checkpoint.empty()) {
    const std::string step_dir = resolve_checkpoint_path(source.checkpoint);
    verify_checkpoint(step_dir);
    const nlohmann::json state = read_checkpoint_trainer_state(step_dir);
    if (!state.contains("config")) runtime_error(step_dir, "/trainer.json: no 'config' (not a gum_train checkpoint?)");
    const TrainConfig train = train_config_from_json(state["config"], step_dir + "/trainer.json");
    config = train.model;
    weights = read_safetensors(step_dir + "/model.safetensors");
    if (tokenizer_file.empty()) tokenizer_file = tokenizer_path(train.data);
    origin = step_dir + "/model.safetensors";
  } else {
    HfModel hf = load_hf_model(source.hf_dir);
    config = hf.config;
    weights = std::move(hf.weights);
    if (tokenizer_file.empty()) tokenizer_file = hf.tokenizer_path;
    if (tokenizer_file.empty())
      usage_error(source.hf_dir,
                  ": no tokenizer.model or tokenizer.json: pass --tokenizer FILE");
    origin = source.hf_dir;
  }
  Tokenizer tokenizer(tokenizer_file);

  // The cache holds the whole generation when max_position_embeddings allows (else sample_tokens
  // slides); a long prompt is prefilled in chunks of at most kPrefillRows rows, which bounds the
  // activation buffers.
  constexpr int kPrefillRows = 512;
  const int64_t prompt_tokens = int64_t(tokenizer.encode(options.prompt).size()) + 1;  // + BOS
  const int window =
      static_cast<int>(std::clamp<int64_t>(prompt_tokens + options.max_new_tokens, 1, config.max_position_embeddings));
  if (prompt_tokens > config.max_position_embeddings)
    spdlog::warn(
        "sample: the prompt is {} tokens (with BOS), more than the KV cache holds (max_position_embeddings "
        "{}): only its last {} tokens are seen",
        prompt_tokens, config.max_position_embeddings, config.max_position_embeddings);
  auto backend = make_backend(source.backend);
  // The decoder runs the forward: the model only holds the weights (and one row of activations).
  LlamaModel model(config, *backend, 1, 1, ModelUse::Inference);
  load_weights(*backend, model.params(), weights, origin);
  weights.clear();
  LlamaDecoder decoder(model, window, std::min(window, kPrefillRows));
  spdlog::info(
      "sampling from {} on {} ({} parameters, KV cache {} tokens = {:.1f} MiB, temperature {}, top_p {}, seed {})",
      origin, backend->name(), config.num_parameters(), window, double(decoder.cache_bytes()) / (1 << 20),
      options.temperature, options.top_p, options.seed);
  const auto started = std::chrono::steady_clock::now();
  int64_t generated = 0;
  const std::string continuation = sample_text(decoder, tokenizer, options, [&](int32_t) { ++generated; });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("generated {} tokens in {:.3f} s ({:.1f} tokens/s, prompt prefill included)", generated, seconds,
               seconds > 0 ? double(generated) / seconds : 0.0);
  std::printf("%s%s\n", options.prompt.c_str(), continuation.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace gum
