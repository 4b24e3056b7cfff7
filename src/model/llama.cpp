// The LLaMA forward and backward passes (Touvron et al. 2023, "LLaMA"), llm.c style: every
// activation backward needs is kept in one arena sized for (max_batch, seq_len), and each
// layer's backward runs the ops of its forward in reverse.
//
// One block, with N = B*T token rows:
//   x_l -> rmsnorm -> ln1 -> [q|k|v] = ln1 Wqkv^T (+b) -> rope(q, k) -> causal GQA attention -> att
//   mid = x_l + att Wo^T (+bo)
//   mid -> rmsnorm -> ln2 -> [gate|up] = ln2 Wgu^T -> swiglu -> act;  x_{l+1} = mid + act Wdown^T
// then lnf = rmsnorm(x_L), logits = lnf Whead^T (Whead = embedding when tied), cross-entropy.
#include "gum/model/llama.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <unordered_map>

#include "block_forward.h"
#include "gum/core/error.h"

namespace gum {

namespace {

// Hugging Face's rotary frequencies: inv_freq[j] = theta^(-2j/D), rescaled per rope_scaling
// ("linear": positions divided by factor, Chen et al. 2023; "llama3": the per-frequency
// smoothing of transformers' _compute_llama3_parameters, Llama 3.1 report).
std::vector<double> rope_inverse_frequencies(const LlamaConfig& c) {
  const int D = c.attention_head_dim();
  std::vector<double> inv_freq(static_cast<size_t>(D / 2));
  for (int j = 0; j < D / 2; ++j) inv_freq[j] = 1.0 / std::pow(c.rope_theta, 2.0 * j / D);
  const RopeScaling& r = c.rope_scaling;
  if (r.type == "linear") {
    for (double& f : inv_freq) f /= r.factor;
  } else if (r.type == "llama3") {
    const double old_context = r.original_max_position_embeddings;
    const double low_freq_wavelen = old_context / r.low_freq_factor;
    const double high_freq_wavelen = old_context / r.high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_freq_wavelen) {
        f /= r.factor;  // long wavelengths: fully interpolated
      } else if (wavelen >= high_freq_wavelen) {
        // between the two: blend interpolated and original frequencies
        const double smooth = (old_context / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        f = (1.0 - smooth) * f / r.factor + smooth * f;
      }  // short wavelengths unchanged
    }
  } else if (!r.type.empty()) {
    usage_error("rope_scaling type '", r.type, "' is not supported (supported: linear, llama3)");
  }
  return inv_freq;
}

// [max_positions, D/2, 2] of (cos, sin)(position * inv_freq[j]), computed in double.
std::vector<float> rope_cos_sin_table(const LlamaConfig& c) {
  const std::vector<double> inv_freq = rope_inverse_frequencies(c);
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  std::vector<float> table(static_cast<size_t>(c.max_position_embeddings * half * 2));
  for (int64_t p = 0; p < c.max_position_embeddings; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double angle = double(p) * inv_freq[j];
      table[(p * half + j) * 2] = static_cast<float>(std::cos(angle));
      table[(p * half + j) * 2 + 1] = static_cast<float>(std::sin(angle));
    }
  return table;
}

// Named tensors by name: an arena's views, or the per-layer gradients laid over shared memory.
using TensorLookup = std::function<Tensor(const std::string& name)>;
TensorLookup in_arena(const Arena& arena) {
  return [&arena](const std::string& name) { return arena.view(name); };
}

// A view of `count` consecutive tensors starting at `first` as one [rows, cols] matrix; checks
// they really are adjacent (the fused qkv and gate_up projections rely on it).
Tensor fused_view(const TensorLookup& tensors, const std::vector<std::string>& names, int64_t cols) {
  const Tensor first = tensors(names.front());
  int64_t rows = 0;
  const auto* expected = static_cast<const uint8_t*>(first.data);
  for (const auto& name : names) {
    const Tensor t = tensors(name);
    GUM_CHECK(t.data == expected, "tensor ", name, " is not adjacent to the previous one");
    rows += t.numel() / cols;
    expected += t.nbytes();
  }
  return Tensor(first.data, first.dtype, first.device, cols == 1 ? Shape{rows} : Shape{rows, cols});
}

}  // namespace

struct LlamaModel::Private {
  std::vector<BlockTensors> block_params, block_grads;
  Tensor embedding, final_norm, head;  // head = embedding when tied
  Tensor d_embedding, d_final_norm, d_head;
  std::vector<BlockBuffers> blocks;                    // max_batch * seq_len rows; run_block sets the output
  Tensor residual_out, lnf, lnf_rstd, logits, losses;  // residual_out = x_L
  Tensor recompute_out;  // TrainingRecompute: where backward's re-run of a block writes x_{l+1}
  Tensor d_residual, d_ln, d_qkv, d_att, d_gate_up, d_act;
  std::vector<std::pair<Tensor, Tensor>> compute_copies;  // Precision::Bf16: (bf16 copy, fp32 master)
  std::unordered_map<std::string, Tensor> shared_grads;   // per_layer_grads: the 2-D gradients' views
  Arena tables;                                           // F32: RoPE cos/sin
  Arena indices;                                          // I32: tokens, targets, positions, doc_start
  Tensor cos_sin, tokens, targets, positions, doc_start;
  // What stage() copied into tokens, targets, positions and doc_start: rows, and whether targets
  // and doc_start were given.
  int staged_batch = 0;
  bool staged_targets = false, staged_doc_start = false;
  int last_batch = 0;
  bool last_has_doc_start = false;
  bool last_has_targets = false;
  bool backward_ready = false;    // a forward ran and its logits are not yet overwritten
  float head_backward_scale = 0;  // > 0: the last forward ran the head's backward with this loss scale
};

namespace {

std::vector<NamedShape> activation_layout(const LlamaConfig& c, int64_t N, int64_t logit_rows, int64_t aux_elems,
                                          ModelUse use) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, D = c.attention_head_dim();
  const int64_t HD = int64_t(c.num_attention_heads) * D, W = (c.num_attention_heads + 2 * int64_t(c.kv_heads())) * D;
  std::vector<NamedShape> layout;
  // Training keeps every block's activations for backward. TrainingRecompute keeps every block's
  // input and one set of the other buffers (layers.0.*), which backward refills per block, plus
  // recompute_out for the recomputed block's output. Inference runs the blocks one after the other
  // through one set of buffers, the residual stream alternating between residual_alt and residual_out.
  const bool all_blocks = use == ModelUse::Training, inputs = use != ModelUse::Inference;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    if (inputs) layout.push_back({p + "input", Shape{N, C}});
    if (l > 0 && !all_blocks) continue;
    layout.push_back({p + "ln1", Shape{N, C}});
    layout.push_back({p + "ln1_rstd", Shape{N}});
    layout.push_back({p + "qkv", Shape{N, W}});
    layout.push_back({p + "att", Shape{N, HD}});
    layout.push_back({p + "att_aux", Shape{std::max<int64_t>(aux_elems, 1)}});
    layout.push_back({p + "mid", Shape{N, C}});
    layout.push_back({p + "ln2", Shape{N, C}});
    layout.push_back({p + "ln2_rstd", Shape{N}});
    layout.push_back({p + "gate_up", Shape{N, 2 * F}});
    layout.push_back({p + "act", Shape{N, F}});
  }
  layout.push_back({"residual_out", Shape{N, C}});
  if (use == ModelUse::Inference) layout.push_back({"residual_alt", Shape{N, C}});
  if (use == ModelUse::TrainingRecompute) layout.push_back({"recompute_out", Shape{N, C}});
  layout.push_back({"lnf", Shape{N, C}});
  layout.push_back({"lnf_rstd", Shape{N}});
  layout.push_back({"logits", Shape{logit_rows, c.vocab_size}});
  layout.push_back({"losses", Shape{N}});
  layout.push_back({"scratch", Shape{N, C}});
  if (use == ModelUse::Inference) return layout;
  // Gradient buffers, reused by every block in backward.
  layout.push_back({"d_residual", Shape{N, C}});
  layout.push_back({"d_ln", Shape{N, C}});
  layout.push_back({"d_qkv", Shape{N, W}});
  layout.push_back({"d_att", Shape{N, HD}});
  layout.push_back({"d_gate_up", Shape{N, 2 * F}});
  layout.push_back({"d_act", Shape{N, F}});
  return layout;
}

bool is_block_param(const ParamSpec& spec, const LlamaConfig& c) {
  return spec.layer >= 0 && spec.layer < c.num_hidden_layers;
}

// Calls fn(begin, end, logits) for the row chunks [begin, end) of [0, N) that fit the logits
// buffer, logits being its first end - begin rows.
void for_each_logits_chunk(const Tensor& buffer, int64_t N,
                           const std::function<void(int64_t, int64_t, const Tensor&)>& fn) {
  for (int64_t begin = 0; begin < N; begin += buffer.rows()) {
    const int64_t end = std::min(N, begin + buffer.rows());
    fn(begin, end, first_rows(buffer, end - begin));
  }
}

void zero_block_grads(Backend& be, const BlockTensors& g) {
  for (const Tensor* t :
       {&g.ln1, &g.qkv_weight, &g.qkv_bias, &g.o_weight, &g.o_bias, &g.ln2, &g.gate_up_weight, &g.down_weight})
    if (!t->empty()) be.fill(*t, 0.0f);
}

// Block l's tensors: the matrices from `matrices`, norm weights and biases from `vectors` (the
// same arena except under Precision::Bf16, where the passes read bf16 copies of the matrices, and
// for per-layer gradients, whose 2-D ones share memory).
BlockTensors block_tensors(const TensorLookup& matrices, const TensorLookup& vectors, const LlamaConfig& c, int l) {
  auto name = [&](const char* suffix) { return block_param_name(l, suffix); };
  const int64_t C = c.hidden_size, F = c.intermediate_size;
  BlockTensors b;
  b.ln1 = vectors(name("input_layernorm.weight"));
  b.qkv_weight = fused_view(
      matrices, {name("self_attn.q_proj.weight"), name("self_attn.k_proj.weight"), name("self_attn.v_proj.weight")}, C);
  if (c.attention_bias)
    b.qkv_bias = fused_view(
        vectors, {name("self_attn.q_proj.bias"), name("self_attn.k_proj.bias"), name("self_attn.v_proj.bias")}, 1);
  b.o_weight = matrices(name("self_attn.o_proj.weight"));
  if (c.o_proj_bias) b.o_bias = vectors(name("self_attn.o_proj.bias"));
  b.ln2 = vectors(name("post_attention_layernorm.weight"));
  b.gate_up_weight = fused_view(matrices, {name("mlp.gate_proj.weight"), name("mlp.up_proj.weight")}, C);
  b.down_weight = matrices(name("mlp.down_proj.weight"));
  GUM_CHECK(b.gate_up_weight.rows() == 2 * F, "gate_up rows");
  return b;
}

// Per-layer gradients: a group of 2-D gradients alive together, laid out from the start of a
// region that groups never alive at the same time share (its views into `views`), with the
// arena's offsets (aligned starts, joined tensors adjacent). group_offsets ends with the group's
// size in elements.
using GradientGroup = std::vector<NamedShape>;
std::vector<int64_t> group_offsets(const GradientGroup& group, DType dtype) {
  const int64_t align = int64_t(kArenaAlignment / dtype_size(dtype));
  std::vector<int64_t> offsets;
  int64_t end = 0;
  for (const NamedShape& t : group) {
    offsets.push_back(t.joins_previous ? end : (end + align - 1) / align * align);
    end = offsets.back() + t.shape.numel();
  }
  offsets.push_back(end);
  return offsets;
}
void lay_over(const Tensor& region, const GradientGroup& group, std::unordered_map<std::string, Tensor>& views) {
  const std::vector<int64_t> offsets = group_offsets(group, region.dtype);
  for (size_t i = 0; i < group.size(); ++i) views[group[i].name] = region.flat_slice(offsets[i], group[i].shape);
}
// The gradient `name` (a stored one: a block's own set's name): a shared view or an arena's.
Tensor stored_grad(const std::unordered_map<std::string, Tensor>& shared, const Arena& grads, const std::string& name) {
  auto it = shared.find(name);
  return it != shared.end() ? it->second : grads.view(name);
}

// Activations that stay fp32 when the others are bf16: RMSNorm's 1/rms, attention's aux (the
// backends keep it F32) and the per-token losses.
bool stays_f32(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with("_rstd") || ends_with("att_aux") || name == "losses";
}

}  // namespace

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::Fp32:
      return "fp32";
    case Precision::Bf16:
      return "bf16";
    case Precision::Bf16Pure:
      return "bf16_pure";
  }
  return "?";
}

Precision precision_from_name(const std::string& name, const std::string& context) {
  for (Precision p : {Precision::Fp32, Precision::Bf16, Precision::Bf16Pure})
    if (name == precision_name(p)) return p;
  usage_error(context, ": unknown precision '", name, "' (supported: fp32, bf16, bf16_pure)");
}

LlamaModel::LlamaModel(const LlamaConfig& config, Backend& backend, int max_batch, int seq_len, ModelUse use,
                       Precision precision, const ModelMemory& memory)
    : config_(config),
      backend_(&backend),
      max_batch_(max_batch),
      seq_len_(seq_len),
      use_(use),
      precision_(precision),
      memory_(memory),
      specs_(llama_param_specs(config)) {
  config_.validate("model");
  if (max_batch <= 0) usage_error("model: max_batch must be positive, got ", max_batch);
  if (seq_len <= 0) usage_error("model: seq_len must be positive, got ", seq_len);
  if (seq_len > config.max_position_embeddings)
    usage_error("model: seq_len ", seq_len, " exceeds max_position_embeddings ", config.max_position_embeddings);
  if (memory.logits_chunk_rows < 0)
    usage_error("model: logits_chunk_rows must be at least 0, got ", memory.logits_chunk_rows);
  if (memory.per_layer_grads && use == ModelUse::Inference)
    usage_error("model: per-layer gradients need a model built for training");

  if (memory.per_layer_grads && memory.gradient_sets != 1 && memory.gradient_sets != 2)
    usage_error("model: per-layer gradients take 1 or 2 block gradient sets, got ", memory.gradient_sets);
  const int sets = memory.gradient_sets;
  const bool tied = config.tie_word_embeddings;
  std::vector<NamedShape> param_layout, grad_layout, matrix_layout;
  // Per-layer gradients: the embedding's and (untied) the head's gradient are groups of their own,
  // block set s holds the 2-D gradients of block s.
  GradientGroup embedding_group, head_group;
  std::vector<GradientGroup> set_groups(static_cast<size_t>(memory.per_layer_grads ? sets : 0));
  for (const auto& spec : specs_) {
    const NamedShape entry{spec.name, spec.shape, spec.joins_previous};
    param_layout.push_back(entry);
    if (spec.shape.rank == 2) matrix_layout.push_back(entry);
    const bool block = is_block_param(spec, config);
    if (!memory.per_layer_grads) {
      grad_layout.push_back(entry);
    } else if (block && spec.layer >= sets) {
      continue;  // block l's gradients are set l % sets's
    } else if (spec.shape.rank != 2) {
      grad_layout.push_back(entry);
    } else if (block) {
      set_groups[size_t(spec.layer)].push_back(entry);
    } else {
      (spec.layer < 0 ? embedding_group : head_group).push_back(entry);
    }
  }
  params_ = Arena(backend, precision == Precision::Bf16Pure ? DType::BF16 : DType::F32, param_layout);
  if (precision == Precision::Bf16) compute_weights_ = Arena(backend, DType::BF16, matrix_layout);
  const Arena& matrices = precision == Precision::Bf16 ? compute_weights_ : params_;
  const bool training = use != ModelUse::Inference;
  if (training) grads_ = Arena(backend, DType::F32, grad_layout);
  state_ = std::make_unique<Private>();
  Private& s = *state_;
  if (memory.per_layer_grads) {
    // Regions of groups never alive together: the embedding's and the head's (the head's is
    // consumed before the first block's backward ends, the embedding's written after the last);
    // with one set, the block set's too. A tied embedding's gradient gathers the head's part first
    // and the embedding's last, so it lives through the blocks: never shared with a set.
    std::vector<std::vector<GradientGroup>> regions = {{embedding_group}};
    if (!head_group.empty()) regions[0].push_back(head_group);
    for (int set = 0; set < std::min(sets, config.num_hidden_layers); ++set)
      if (set == 0 && sets == 1 && !tied)
        regions[0].push_back(set_groups[0]);
      else
        regions.push_back({set_groups[size_t(set)]});
    std::vector<NamedShape> region_layout;
    for (size_t k = 0; k < regions.size(); ++k) {
      int64_t elems = 0;
      for (const GradientGroup& group : regions[k])
        elems = std::max(elems, group_offsets(group, matrix_gradient_dtype()).back());
      region_layout.push_back({"gradient_region." + std::to_string(k), Shape{elems}});
    }
    grad_regions_ = Arena(backend, matrix_gradient_dtype(), region_layout);
    for (size_t k = 0; k < regions.size(); ++k)
      for (const GradientGroup& group : regions[k]) lay_over(grad_regions_.view(k), group, s.shared_grads);
  }
  const TensorLookup grad_matrices = [this](const std::string& name) {
    return stored_grad(state_->shared_grads, grads_, name);
  };

  const int64_t N = int64_t(max_batch) * seq_len;
  AttentionShape full{max_batch, seq_len, config.num_attention_heads, config.kv_heads(), config.attention_head_dim()};
  const std::vector<NamedShape> act_layout =
      activation_layout(config, N, logits_chunk_rows(), int64_t(backend.attention_aux_elems(full)), use);
  if (precision == Precision::Fp32) {
    acts_ = Arena(backend, DType::F32, act_layout);
  } else {
    std::vector<NamedShape> bf16_layout, f32_layout;
    for (const NamedShape& entry : act_layout) (stays_f32(entry.name) ? f32_layout : bf16_layout).push_back(entry);
    acts_ = Arena(backend, DType::BF16, bf16_layout);
    acts_f32_ = Arena(backend, DType::F32, f32_layout);
  }
  if (training) {
    // Reserved now, so that no step (the first included) waits on the device for an allocation.
    TrainingShapes shapes;
    shapes.rows = N;
    shapes.channels = config.hidden_size;
    shapes.attention = full;
    shapes.activations = precision == Precision::Fp32 ? DType::F32 : DType::BF16;
    if (config.attention_bias) shapes.bias_width = full.qkv_width();
    if (config.o_proj_bias) shapes.bias_width = std::max<int64_t>(shapes.bias_width, config.hidden_size);
    op_workspace_bytes_ = backend.training_workspace_bytes(shapes);
    backend.reserve_workspace(op_workspace_bytes_);
  }
  const Arena* f32_acts = precision == Precision::Fp32 ? nullptr : &acts_f32_;
  const Arena& stats = f32_acts ? *f32_acts : acts_;

  for (size_t i = 0; i < compute_weights_.count(); ++i)
    s.compute_copies.emplace_back(compute_weights_.view(i), params_.view(compute_weights_.name(i)));
  const int L = config.num_hidden_layers;
  for (int l = 0; l < L; ++l) {
    s.block_params.push_back(block_tensors(in_arena(matrices), in_arena(params_), config, l));
    if (training) {
      const int set = memory.per_layer_grads ? l % sets : l;
      s.block_grads.push_back(block_tensors(grad_matrices, in_arena(grads_), config, set));
    }
    const std::string p = "layers." + std::to_string(use == ModelUse::Training ? l : 0) + ".";
    BlockBuffers a = BlockBuffers::in_arena(acts_, p, f32_acts);
    // Inference: the last block writes residual_out, so block l reads residual_alt when L-1-l is even.
    if (training)
      a.input = acts_.view("layers." + std::to_string(l) + ".input");
    else
      a.input = acts_.view((L - 1 - l) % 2 == 0 ? "residual_alt" : "residual_out");
    s.blocks.push_back(a);
  }
  const char* head_name = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  s.embedding = matrices.view("model.embed_tokens.weight");
  s.final_norm = params_.view("model.norm.weight");
  s.head = matrices.view(head_name);
  s.residual_out = acts_.view("residual_out");
  s.lnf = acts_.view("lnf");
  s.lnf_rstd = stats.view("lnf_rstd");
  s.logits = acts_.view("logits");
  s.losses = stats.view("losses");
  if (use == ModelUse::TrainingRecompute) s.recompute_out = acts_.view("recompute_out");
  if (training) {
    s.d_embedding = grad_matrices("model.embed_tokens.weight");
    s.d_final_norm = grads_.view("model.norm.weight");
    s.d_head = grad_matrices(head_name);
    s.d_residual = acts_.view("d_residual");
    s.d_ln = acts_.view("d_ln");
    s.d_qkv = acts_.view("d_qkv");
    s.d_att = acts_.view("d_att");
    s.d_gate_up = acts_.view("d_gate_up");
    s.d_act = acts_.view("d_act");
  }

  const int64_t half = config.attention_head_dim() / 2;
  s.tables = Arena(backend, DType::F32, {{"rope_cos_sin", Shape{config.max_position_embeddings, half, 2}}});
  s.cos_sin = s.tables.view("rope_cos_sin");
  const std::vector<float> table = rope_cos_sin_table(config_);
  backend.copy_from_host(s.cos_sin, table.data());

  s.indices = Arena(backend, DType::I32,
                    {{"tokens", Shape{N}}, {"targets", Shape{N}}, {"positions", Shape{N}}, {"doc_start", Shape{N}}});
  s.tokens = s.indices.view("tokens");
  s.targets = s.indices.view("targets");
  s.positions = s.indices.view("positions");
  s.doc_start = s.indices.view("doc_start");
}

LlamaModel::~LlamaModel() = default;

void LlamaModel::init_weights(uint64_t seed) {
  for (size_t i = 0; i < specs_.size(); ++i) {
    const Tensor& p = params_.view(i);
    switch (specs_[i].kind) {
      case ParamKind::Norm:
        backend_->fill(p, 1.0f);
        break;
      case ParamKind::Bias:
        backend_->fill(p, 0.0f);
        break;
      default:
        backend_->fill_normal(p, seed, i, 0.0f, static_cast<float>(config_.initializer_range));
        break;
    }
  }
}

void LlamaModel::zero_grads() {
  if (use_ == ModelUse::Inference) runtime_error("model: zero_grads on a model built for inference (no gradients)");
  backend_->fill(grads_.all(), 0.0f);
  if (grad_regions_.count() > 0) backend_->fill(grad_regions_.all(), 0.0f);
}

DType LlamaModel::matrix_gradient_dtype() const {
  return precision_ == Precision::Bf16Pure && memory_.per_layer_grads ? DType::BF16 : DType::F32;
}

DType LlamaModel::logits_dtype() const { return state_->logits.dtype; }

Tensor LlamaModel::logits() const {
  const int64_t N = int64_t(state_->last_batch) * seq_len_;
  if (state_->logits.rows() < N)
    runtime_error("model: the logits of ", N, " rows are not kept (the head runs in chunks of ", state_->logits.rows(),
                  " rows)");
  if (state_->head_backward_scale > 0)
    runtime_error(
        "model: the logits of the last forward were overwritten by their gradient (forward had a loss scale)");
  return first_rows(state_->logits, N);
}

int64_t LlamaModel::logits_chunk_rows() const {
  const int64_t N = int64_t(max_batch_) * seq_len_;
  return memory_.logits_chunk_rows > 0 ? std::min(memory_.logits_chunk_rows, N) : N;
}

Tensor LlamaModel::grad(const std::string& name) const {
  if (use_ == ModelUse::Inference) runtime_error("model: no gradient of ", name, " in a model built for inference");
  if (!memory_.per_layer_grads) return grads_.view(name);
  std::string own = name;
  for (const auto& spec : specs_)
    if (spec.name == name && is_block_param(spec, config_) && spec.layer >= memory_.gradient_sets) {
      const std::string prefix = block_param_name(spec.layer, "");
      own = block_param_name(spec.layer % memory_.gradient_sets, name.substr(prefix.size()));
      break;
    }
  return stored_grad(state_->shared_grads, grads_, own);
}

const BlockTensors& LlamaModel::block_weights(int layer) const {
  if (layer < 0 || layer >= config_.num_hidden_layers)
    usage_error("model: layer ", layer, " is outside [0, ", config_.num_hidden_layers, ")");
  return state_->block_params[layer];
}
const Tensor& LlamaModel::embedding_weight() const { return state_->embedding; }
const Tensor& LlamaModel::final_norm_weight() const { return state_->final_norm; }
const Tensor& LlamaModel::head_weight() const { return state_->head; }
const Tensor& LlamaModel::rope_cos_sin() const { return state_->cos_sin; }

double LlamaModel::forward(const TokenBatch& batch, float loss_scale) {
  stage(batch);
  const Tensor losses = forward_pass(loss_scale);
  return batch.targets ? backend_->sum(losses) : 0.0;
}

void LlamaModel::forward(const TokenBatch& batch, Tensor loss_sum, bool accumulate, float loss_scale) {
  stage(batch);
  forward_staged(loss_sum, accumulate, loss_scale);
}

void LlamaModel::forward_staged(Tensor loss_sum, bool accumulate, float loss_scale) {
  if (!state_->staged_targets) usage_error("model forward: a loss sum needs targets");
  backend_->sum_into(loss_sum, forward_pass(loss_scale), false, accumulate);
}

void LlamaModel::stage(const TokenBatch& batch) {
  Private& s = *state_;
  Backend& be = *backend_;
  const LlamaConfig& c = config_;
  if (batch.batch <= 0 || batch.batch > max_batch_)
    usage_error("model forward: batch size ", batch.batch, " must be in [1, ", max_batch_, "] (max_batch)");
  if (!batch.tokens) usage_error("model forward: no tokens given");
  const int T = seq_len_;
  const int64_t N = int64_t(batch.batch) * T;
  if (!batch.targets && s.logits.rows() < N)
    usage_error("model forward: logits without targets need the whole batch's logits (the head runs in chunks of ",
                s.logits.rows(), " rows)");

  // Validate the host inputs here, so every backend reports bad ids the same way.
  std::vector<int32_t> positions(static_cast<size_t>(N)), targets(static_cast<size_t>(N), -1);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t b = i / T, t = i % T;
    if (batch.tokens[i] < 0 || batch.tokens[i] >= c.vocab_size)
      runtime_error("model forward: token ", batch.tokens[i], " at batch row ", b, ", position ", t,
                    " is outside the vocabulary [0, ", c.vocab_size, ")");
    if (batch.targets) {
      if (batch.targets[i] >= c.vocab_size)
        runtime_error("model forward: target ", batch.targets[i], " at batch row ", b, ", position ", t,
                      " is outside the vocabulary [0, ", c.vocab_size, ")");
      targets[i] = batch.targets[i] < 0 ? -1 : batch.targets[i];
    }
    positions[i] = batch.positions ? batch.positions[i] : int32_t(t);
    if (positions[i] < 0 || positions[i] >= c.max_position_embeddings)
      runtime_error("model forward: RoPE position ", positions[i], " at batch row ", b, ", position ", t,
                    " is outside [0, ", c.max_position_embeddings, ") (max_position_embeddings)");
    if (batch.doc_start && (batch.doc_start[i] < 0 || batch.doc_start[i] > t))
      runtime_error("model forward: doc_start ", batch.doc_start[i], " at batch row ", b, ", position ", t,
                    " must lie in [0, ", t, "]");
  }
  const Tensor tokens = first_rows(s.tokens, N), target_ids = first_rows(s.targets, N),
               position_ids = first_rows(s.positions, N);
  be.copy_from_host(tokens, batch.tokens);
  be.copy_from_host(target_ids, targets.data());
  be.copy_from_host(position_ids, positions.data());
  if (batch.doc_start) be.copy_from_host(first_rows(s.doc_start, N), batch.doc_start);
  s.staged_batch = batch.batch;
  s.staged_targets = batch.targets != nullptr;
  s.staged_doc_start = batch.doc_start != nullptr;
}

Tensor LlamaModel::forward_pass(float loss_scale) {
  Private& s = *state_;
  Backend& be = *backend_;
  const LlamaConfig& c = config_;
  if (s.staged_batch <= 0) usage_error("model forward: no batch staged");
  const int T = seq_len_;
  const int64_t N = int64_t(s.staged_batch) * T;
  const Tensor tokens = first_rows(s.tokens, N), target_ids = first_rows(s.targets, N),
               position_ids = first_rows(s.positions, N), doc_start = first_rows(s.doc_start, N);
  const Tensor* doc = s.staged_doc_start ? &doc_start : nullptr;
  const AttentionShape shape{s.staged_batch, T, c.num_attention_heads, c.kv_heads(), c.attention_head_dim()};
  const float eps = static_cast<float>(c.rms_norm_eps);
  // The weights may have changed since the last pass (an update, a load): round them afresh.
  for (const auto& [copy, master] : s.compute_copies) be.copy(copy, master);

  const int L = c.num_hidden_layers;
  const Tensor first_input = L > 0 ? first_rows(s.blocks[0].input, N) : first_rows(s.residual_out, N);
  be.embedding_forward(first_input, tokens, s.embedding);
  for (int l = 0; l < L; ++l)
    run_block(l, shape, position_ids, doc,
              l + 1 < L ? first_rows(s.blocks[l + 1].input, N) : first_rows(s.residual_out, N));
  const Tensor lnf = first_rows(s.lnf, N), losses = first_rows(s.losses, N);
  be.rmsnorm_forward(lnf, first_rows(s.lnf_rstd, N), first_rows(s.residual_out, N), s.final_norm, eps);

  s.last_batch = s.staged_batch;
  s.last_has_doc_start = s.staged_doc_start;
  s.last_has_targets = s.staged_targets;
  s.backward_ready = true;
  s.head_backward_scale = 0;
  if (!s.staged_targets) {
    be.linear_forward(first_rows(s.logits, N), lnf, s.head, nullptr);
    return losses;
  }
  if (loss_scale > 0 && use_ == ModelUse::Inference)
    runtime_error("model forward: a loss scale needs a model built for training (gradients)");
  const Tensor d_ln = loss_scale > 0 ? first_rows(s.d_ln, N) : Tensor{};
  // Per-layer gradients: the head's memory last held another group's gradient.
  if (loss_scale > 0 && memory_.per_layer_grads) be.fill(s.d_head, 0.0f);
  for_each_logits_chunk(s.logits, N, [&](int64_t begin, int64_t end, const Tensor& logits) {
    const Tensor lnf_rows = lnf.row_slice(begin, end), chunk_losses = losses.flat_slice(begin, Shape{end - begin}),
                 chunk_targets = target_ids.flat_slice(begin, Shape{end - begin});
    be.linear_forward(logits, lnf_rows, s.head, nullptr);
    if (loss_scale <= 0) {
      be.cross_entropy_forward(chunk_losses, logits, chunk_targets);
      return;
    }
    be.cross_entropy_fused(chunk_losses, logits, chunk_targets, loss_scale);  // logits := dlogits
    be.linear_backward(d_ln.row_slice(begin, end), s.d_head, nullptr, logits, lnf_rows, s.head, false);
  });
  s.head_backward_scale = std::max(loss_scale, 0.0f);
  return losses;
}

// Block l's forward on the first shape.batch sequences, from its stored input into its activation
// buffers and `output` (x_{l+1}).
void LlamaModel::run_block(int l, const AttentionShape& shape, const Tensor& position_ids, const Tensor* doc_start,
                           const Tensor& output) {
  Private& s = *state_;
  Backend& be = *backend_;
  const int64_t N = int64_t(shape.batch) * shape.seq_len;
  BlockBuffers a = s.blocks[l].first_rows(N);
  a.output = output;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  block_forward(
      be, s.block_params[l], a, position_ids, s.cos_sin, shape, eps,
      [&](const Tensor& att, const Tensor& qkv) { be.attention_forward(att, a.att_aux, qkv, doc_start, shape); });
}

void LlamaModel::backward(float loss_scale, const std::function<void(int layer)>& on_layer_done) {
  Private& s = *state_;
  Backend& be = *backend_;
  const LlamaConfig& c = config_;
  if (use_ == ModelUse::Inference) runtime_error("model backward: the model was built for inference (no gradients)");
  if (!s.backward_ready) runtime_error("model backward: no forward pass to differentiate (or backward already ran)");
  if (!s.last_has_targets) runtime_error("model backward: the last forward had no targets, so there is no loss");
  s.backward_ready = false;
  auto done = [&](int layer) {
    if (on_layer_done) on_layer_done(layer);
  };
  const int T = seq_len_;
  const int64_t N = int64_t(s.last_batch) * T;
  const AttentionShape shape{s.last_batch, T, c.num_attention_heads, c.kv_heads(), c.attention_head_dim()};
  const Tensor doc_start = first_rows(s.doc_start, N);
  const Tensor* doc = s.last_has_doc_start ? &doc_start : nullptr;
  const Tensor position_ids = first_rows(s.positions, N);
  const Tensor d_residual = first_rows(s.d_residual, N), d_ln = first_rows(s.d_ln, N);

  // Loss and head, chunk by chunk, unless forward ran them (given the loss scale): dlogits
  // overwrite the logits in place. With one chunk the logits are still those of forward; with
  // several each chunk's are computed again.
  if (s.head_backward_scale > 0 && s.head_backward_scale != loss_scale)
    runtime_error("model backward: loss scale ", loss_scale, " differs from forward's ", s.head_backward_scale);
  const bool recompute_logits = s.logits.rows() < N;
  if (memory_.per_layer_grads) {                              // the head's memory last held another group's gradient
    if (s.head_backward_scale == 0) be.fill(s.d_head, 0.0f);  // else forward wrote it
    be.fill(s.d_final_norm, 0.0f);
  }
  const Tensor lnf = first_rows(s.lnf, N), targets = first_rows(s.targets, N);
  if (s.head_backward_scale == 0)
    for_each_logits_chunk(s.logits, N, [&](int64_t begin, int64_t end, const Tensor& logits) {
      const Tensor lnf_rows = lnf.row_slice(begin, end);
      if (recompute_logits) be.linear_forward(logits, lnf_rows, s.head, nullptr);
      be.cross_entropy_backward(logits, logits, targets.flat_slice(begin, Shape{end - begin}), loss_scale);
      be.linear_backward(d_ln.row_slice(begin, end), s.d_head, nullptr, logits, lnf_rows, s.head, false);
    });
  be.fill(d_residual, 0.0f);  // rmsnorm_backward accumulates into the residual gradient
  be.rmsnorm_backward(d_residual, s.d_final_norm, d_ln, first_rows(s.residual_out, N), s.final_norm,
                      first_rows(s.lnf_rstd, N));
  done(c.num_hidden_layers);

  const Tensor d_qkv = first_rows(s.d_qkv, N), d_att = first_rows(s.d_att, N), d_gate_up = first_rows(s.d_gate_up, N),
               d_act = first_rows(s.d_act, N);
  for (int l = c.num_hidden_layers - 1; l >= 0; --l) {
    const BlockTensors& w = s.block_params[l];
    BlockTensors& g = s.block_grads[l];
    const BlockBuffers a = s.blocks[l].first_rows(N);
    if (memory_.per_layer_grads) zero_block_grads(be, g);
    // Activation checkpointing: refill the shared buffers with this block's activations. The last
    // block needs no re-run: forward left its activations there.
    if (use_ == ModelUse::TrainingRecompute && l + 1 < c.num_hidden_layers)
      run_block(l, shape, position_ids, doc, first_rows(s.recompute_out, N));
    // d_residual holds dL/dx_{l+1}; x_{l+1} = mid + act Wdown^T, so it is also the part of dL/dmid
    // that flows through the skip connection.
    be.linear_backward(d_act, g.down_weight, nullptr, d_residual, a.act, w.down_weight, false);
    be.swiglu_backward(d_gate_up, d_act, a.gate_up);
    be.linear_backward(d_ln, g.gate_up_weight, nullptr, d_gate_up, a.ln2, w.gate_up_weight, false);
    be.rmsnorm_backward(d_residual, g.ln2, d_ln, a.mid, w.ln2, a.ln2_rstd);
    // d_residual = dL/dmid; mid = x_l + att Wo^T (+bo).
    be.linear_backward(d_att, g.o_weight, optional(g.o_bias), d_residual, a.att, w.o_weight, false);
    be.attention_backward(d_qkv, d_att, a.att, a.att_aux, a.qkv, doc, shape);
    be.rope_backward(d_qkv, position_ids, s.cos_sin, shape);
    be.linear_backward(d_ln, g.qkv_weight, optional(g.qkv_bias), d_qkv, a.ln1, w.qkv_weight, false);
    be.rmsnorm_backward(d_residual, g.ln1, d_ln, a.input, w.ln1, a.ln1_rstd);
    done(l);  // d_residual = dL/dx_l
  }
  // Untied, the embedding's gradient shares the head's memory (and with one set the blocks'); tied,
  // it already holds the head's part.
  if (memory_.per_layer_grads && !c.tie_word_embeddings) be.fill(s.d_embedding, 0.0f);
  be.embedding_backward(s.d_embedding, d_residual, first_rows(s.tokens, N));
  done(-1);
}

}  // namespace gum
