#pragma once
// The parameter table: every tensor of the model with its Hugging Face name, shape,
// group and layer, in the order the parameter arena lays them out. q/k/v (and their
// biases) are adjacent, and so are gate/up, so one GEMM computes each fused projection.
#include <string>
#include <vector>

#include "gum/core/tensor.h"
#include "gum/model/config.h"

namespace gum {

enum class ParamKind {
  Matrix,     // 2-D weights inside blocks (q, k, v, o, gate, up, down): Muon/GaLore/GUM targets
  Embedding,  // model.embed_tokens.weight
  Head,       // lm_head.weight (absent when tied)
  Norm,       // RMSNorm weights
  Bias,       // projection biases
};
const char* param_kind_name(ParamKind k);

struct ParamSpec {
  std::string name;
  Shape shape;
  ParamKind kind;
  // -1: embeddings; 0..L-1: transformer blocks; L: final norm and LM head. Backward completes
  // layers from L down to -1, which is the order the fused per-layer update follows.
  int layer;
  bool weight_decay;  // false for norms and biases
  // Stored right after the previous spec, without an alignment gap (arena.h): k and v after q,
  // up after gate, so one GEMM computes each fused projection.
  bool joins_previous = false;
};

std::vector<ParamSpec> llama_param_specs(const LlamaConfig& c);

// Names of one block's tensors, e.g. block_param_name(3, "self_attn.q_proj.weight").
std::string block_param_name(int layer, const std::string& suffix);

}  // namespace gum
