#pragma once
// The LLaMA transformer with explicit forward and backward passes (no autograd), written
// once against the Backend op interface. Parameters and gradients live in two arenas with
// the layout of llama_param_specs(); activations in a third, sized once for
// (max_batch, seq_len): nothing is allocated inside the step.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gum/backend/arena.h"
#include "gum/backend/backend.h"
#include "gum/model/config.h"
#include "gum/model/params.h"

namespace gum {

// Host-side inputs of one micro-batch, each batch * seq_len int32 values, row-major [B, T].
struct TokenBatch {
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;    // next-token targets; < 0 = ignored (no loss, no gradient)
  const int32_t* positions = nullptr;  // RoPE positions; null = 0..T-1 in every row
  const int32_t* doc_start = nullptr;  // packed documents: first position each token may attend to; null = 0
  int batch = 0;                       // B <= max_batch
};

// Views of one block's parameters (or gradients), fused where one GEMM computes several:
// qkv_weight [(H + 2 KV) * D, C] is q|k|v, gate_up_weight [2F, C] is gate|up; biases are empty
// views when the config has none.
struct BlockTensors {
  Tensor ln1, qkv_weight, qkv_bias, o_weight, o_bias, ln2, gate_up_weight, down_weight;
};

// Training allocates the gradient arena, backward's buffers and every block's activations.
// TrainingRecompute (activation checkpointing, Chen et al. 2016, arXiv 1604.06174) keeps only each
// block's input and one set of block buffers: backward runs a block's forward again just before
// its backward, for about one more forward pass per step. Inference (evaluation, sampling)
// allocates no gradients and runs the blocks through one set of activation buffers. In the last
// two, activations grow with depth only by the stored inputs (TrainingRecompute) or not at all.
enum class ModelUse { Training, TrainingRecompute, Inference };

// Memory layout choices that leave the computed function unchanged (up to the order of float sums).
struct ModelMemory {
  // Token rows per chunk of the LM head and cross-entropy: with targets, forward and backward run
  // the head GEMM, log-sum-exp, loss and dlogits over chunks of this many rows, so the logits
  // buffer is [rows, vocab] and the [B*T, vocab] logits never exist; backward recomputes each
  // chunk's logits (one more head GEMM). 0, or at least max_batch * seq_len: one chunk, logits()
  // available.
  int64_t logits_chunk_rows = 0;
  // Training uses only (fused per-layer updates, one backward per optimizer step): a block's
  // gradients live only from its backward to its update. Block l writes gradient set
  // l % gradient_sets (zeroed before its backward); its gradients are valid in on_layer_done(l) and,
  // with two sets, until the next hook returns (the fused update keeps one layer's reduction across
  // ranks in flight while the next block's backward writes the other set). The embedding's and
  // head's gradients share their memory (untied: the head's is consumed in on_layer_done(L) or the
  // hook after, long before backward reaches the embedding), and with one set they share it with the
  // block set too. Norm weights and biases keep F32 gradients of their own. Nothing accumulates over
  // backward calls.
  bool per_layer_grads = false;
  int gradient_sets = 1;  // per_layer_grads: 1, or 2 when the gradients are summed over ranks
};
// Number formats of a training run (training.precision; docs/precision.md).
// Fp32: weights, gradients and activations in fp32.
// Bf16 (mixed): fp32 master weights and fp32 gradients (micro-batches accumulate in fp32); the
// passes read a bf16 copy of the matrices, embedding and head (refreshed from the master at each
// forward) and keep activations and their gradients in bf16, so every GEMM has bf16 operands and
// accumulates in fp32. Norm weights and biases are read in fp32; RMSNorm statistics, attention's
// softmax, log-sum-exp, losses and every reduction are fp32 (the backend computes in fp32 and
// rounds once on store).
// Bf16Pure: as Bf16, but the weights themselves are bf16 (no fp32 copy); the optimizer rounds its
// fp32 update into the bf16 weights (stochastically or with a Kahan compensation, optimizer.h).
// Gradients stay fp32 where they accumulate over micro-batches; under per_layer_grads each is
// written by one backward, and the 2-D ones (matrices, embedding, head) are stored in bf16 like
// the weights (the GEMM accumulates in fp32 and rounds once on store; the head's sums over its
// logits chunks, the embedding's over repeated tokens in the CUDA kernel, round once per addition).
enum class Precision { Fp32, Bf16, Bf16Pure };
// "fp32", "bf16", "bf16_pure".
const char* precision_name(Precision p);
// Throws a usage error naming `context` for an unknown name.
Precision precision_from_name(const std::string& name, const std::string& context);

class LlamaModel {
 public:
  LlamaModel(const LlamaConfig& config, Backend& backend, int max_batch, int seq_len, ModelUse use = ModelUse::Training,
             Precision precision = Precision::Fp32, const ModelMemory& memory = {});
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const LlamaConfig& config() const { return config_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  Backend& backend() { return *backend_; }
  Arena& params() { return params_; }
  // The F32 gradient arena: every gradient, or under per_layer_grads those of the norm weights and
  // biases (empty under ModelUse::Inference).
  Arena& grads() { return grads_; }
  // The gradient of parameter `name` (under per_layer_grads a block's is its set's view).
  Tensor grad(const std::string& name) const;
  // Bytes of every gradient buffer (per_layer_grads: the F32 arena and the shared 2-D regions).
  size_t gradient_bytes() const { return grads_.bytes() + grad_regions_.bytes(); }
  // The dtype of the 2-D parameters' gradients: BF16 under Bf16Pure with per_layer_grads.
  DType matrix_gradient_dtype() const;
  // The dtype of the logits buffer (an activation: BF16 under both bf16 precisions).
  DType logits_dtype() const;
  ModelUse use() const { return use_; }
  const ModelMemory& memory() const { return memory_; }
  int64_t logits_chunk_rows() const;  // rows of the logits buffer
  Precision precision() const { return precision_; }
  int max_batch() const { return max_batch_; }
  int seq_len() const { return seq_len_; }

  // Normal(0, initializer_range) for matrices, embeddings and head; 1 for norms; 0 for biases.
  // Parameter i draws Philox stream i with key `seed`, so every backend gets identical weights.
  void init_weights(uint64_t seed);
  void zero_grads();

  // Runs the forward pass and the per-token losses. Returns the SUM of the losses over
  // targets >= 0 (the caller divides by the global count of valid targets); synchronises. Given
  // the loss_scale of the backward that follows (training), forward also runs the loss's and the
  // head's backward, chunk by chunk: one kernel reads a chunk's logits for its losses and
  // overwrites them with their gradient, so no chunk's logits are computed or read twice, and
  // logits() is unavailable.
  double forward(const TokenBatch& batch, float loss_scale = 0.0f);
  // The same, adding the sum of the losses into loss_sum (F64 [1] on the model's backend;
  // accumulate false overwrites it) on the device, so nothing waits for it: the training step.
  // Needs targets.
  void forward(const TokenBatch& batch, Tensor loss_sum, bool accumulate, float loss_scale = 0.0f);
  // That forward in two parts, for a training step recorded once and replayed (Backend::record):
  // stage() checks the batch on the host and copies it into the model's device buffers (never
  // recorded: the data of each step), forward_staged() runs the pass on what was staged last,
  // device work only.
  void stage(const TokenBatch& batch);
  void forward_staged(Tensor loss_sum, bool accumulate, float loss_scale);
  // Backward of the last forward. Gradients ACCUMULATE into grads() scaled by loss_scale
  // (= 1 / valid targets of the global batch, so micro-batches and ranks add up to the mean;
  // forward's, when forward was given one).
  // on_layer_done(layer) fires as soon as that layer's gradients are complete, in the order
  // L (final norm, head), L-1, ..., 0, -1 (embeddings): the hook for fused updates and
  // bucketed all-reduce.
  void backward(float loss_scale, const std::function<void(int layer)>& on_layer_done = {});

  // Logits [B * T, V] of the last forward (before backward overwrites them with gradients); an
  // error when the head runs in chunks.
  Tensor logits() const;

  // Views of the parameters and of the RoPE table for code that runs the same weights another
  // way (LlamaDecoder's incremental decoding).
  const BlockTensors& block_weights(int layer) const;
  const Tensor& embedding_weight() const;
  const Tensor& final_norm_weight() const;
  const Tensor& head_weight() const;   // the embedding when tied
  const Tensor& rope_cos_sin() const;  // F32 [max_position_embeddings, D/2, 2]
  size_t activation_bytes() const { return acts_.bytes() + acts_f32_.bytes(); }
  // The bf16 copy of the matrices, embedding and head that the passes read (Precision::Bf16; 0 otherwise).
  size_t compute_weight_bytes() const { return compute_weights_.bytes(); }
  // The backend's op scratch this model reserved at construction for its largest training step
  // (Backend::training_workspace_bytes; 0 for inference and on the cpu).
  size_t op_workspace_bytes() const { return op_workspace_bytes_; }

 private:
  // The forward of both forward()s; returns the per-token losses of the batch's rows (unset
  // without targets).
  Tensor forward_pass(float loss_scale);  // on the staged batch
  void run_block(int layer, const AttentionShape& shape, const Tensor& position_ids, const Tensor* doc_start,
                 const Tensor& output);

  // (defined in llama.cpp)
  struct Private;
  LlamaConfig config_;
  Backend* backend_;
  int max_batch_, seq_len_;
  ModelUse use_;
  Precision precision_;
  size_t op_workspace_bytes_ = 0;
  ModelMemory memory_;
  std::vector<ParamSpec> specs_;
  Arena params_, grads_, acts_;
  Arena grad_regions_;              // per_layer_grads: the memory the 2-D gradients share
  Arena compute_weights_;           // Precision::Bf16: bf16 copies of the 2-D parameters
  Arena acts_f32_;                  // bf16 activations: what stays fp32 (norm statistics, attention aux, losses)
  std::unique_ptr<Private> state_;  // per-layer views, token buffers, RoPE table, last batch
};

}  // namespace gum
