// The built-in presets against a literal table: GaLore's C4 LLaMA configs (arXiv 2403.03507,
// its configs/llama_*.json) and our llama_tiny. A wrong default in make_preset (say rms_norm_eps
// 1e-5) would otherwise be agreed to by every test that builds its reference from our config.
#include <catch2/catch.hpp>

#include "gum/model/config.h"

using namespace gum;

TEST_CASE("every preset has GaLore's literal shape, eps 1e-6, theta 1e4, untied, no biases") {
  struct Row {
    const char* name;
    int hidden, intermediate, heads, kv_heads, layers, vocab, max_positions;
  };
  const Row rows[] = {
      {"llama_tiny", 128, 352, 4, 2, 4, 4096, 512},        {"llama_20m", 256, 688, 4, 4, 4, 32000, 1024},
      {"llama_60m", 512, 1376, 8, 8, 8, 32000, 1024},      {"llama_130m", 768, 2048, 12, 12, 12, 32000, 1024},
      {"llama_350m", 1024, 2736, 16, 16, 24, 32000, 1024}, {"llama_1b", 2048, 5461, 32, 32, 24, 32000, 1024},
      {"llama_7b", 4096, 11008, 32, 32, 32, 32000, 2048}};
  CHECK(llama_preset_names().size() == std::size(rows));
  for (const Row& row : rows) {
    INFO(row.name);
    const LlamaConfig c = llama_preset(row.name);
    CHECK(c.hidden_size == row.hidden);
    CHECK(c.intermediate_size == row.intermediate);
    CHECK(c.num_attention_heads == row.heads);
    CHECK(c.kv_heads() == row.kv_heads);
    CHECK(c.num_hidden_layers == row.layers);
    CHECK(c.vocab_size == row.vocab);
    CHECK(c.max_position_embeddings == row.max_positions);
    CHECK(c.attention_head_dim() == row.hidden / row.heads);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.rope_theta == 10000.0);
    CHECK_FALSE(c.tie_word_embeddings);
    CHECK_FALSE(c.attention_bias);
    CHECK(c.initializer_range == 0.02);
  }
}
