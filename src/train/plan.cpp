#include "gum/train/plan.h"

#include <sys/mman.h>

#include <cstring>
#include <map>
#include <sstream>

#include "gum/core/error.h"
#include "gum/core/format.h"
#include "gum/train/metrics.h"
#include "gum/train/runtime.h"

namespace gum {

namespace {

// A backend that only allocates: memory comes from anonymous mappings with MAP_NORESERVE, so
// the kernel hands out zero pages lazily and an allocation never touched costs nothing. Small
// host writes (the RoPE table) work; compute is refused. attention_aux_elems and
// training_workspace_bytes are delegated to the backend the run would use, since it decides the
// attention's activation memory and its ops' scratch; has_side_queue too (where its scratch goes).
class PlanningBackend final : public Backend {
 public:
  explicit PlanningBackend(const Backend& target) : target_(target) {}
  ~PlanningBackend() override {
    for (auto& [ptr, bytes] : mappings_) munmap(ptr, bytes);
  }
  Device device() const override { return Device::CPU; }
  std::string name() const override { return "plan(" + target_.name() + ")"; }

  void* allocate(size_t bytes) override {
    if (bytes == 0) bytes = 1;
    void* ptr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ptr == MAP_FAILED) runtime_error("plan: cannot reserve ", bytes, " bytes of address space");
    mappings_[ptr] = bytes;
    allocated_ += bytes;
    peak_ = std::max(peak_, allocated_);
    return ptr;
  }
  void release(void* ptr) override {
    auto it = mappings_.find(ptr);
    if (it == mappings_.end()) return;
    allocated_ -= it->second;
    munmap(ptr, it->second);
    mappings_.erase(it);
  }
  void copy_from_host(Tensor dst, const void* src) override { std::memcpy(dst.data, src, dst.nbytes()); }
  void copy_to_host(void* dst, const Tensor& src) override { std::memcpy(dst, src.data, src.nbytes()); }
  void copy(Tensor dst, const Tensor& src) override {
    if (dst.dtype != src.dtype) refuse("copy");
    std::memcpy(dst.data, src.data, dst.nbytes());
  }
  void fill(Tensor dst, float value) override {
    if (value != 0.0f) refuse("fill");  // fresh mappings are already zero
  }
  void synchronize() override {}
  size_t peak_memory_bytes() const override { return peak_; }
  size_t attention_aux_elems(const AttentionShape& s) const override { return target_.attention_aux_elems(s); }
  size_t training_workspace_bytes(const TrainingShapes& shapes) const override {
    return target_.training_workspace_bytes(shapes);
  }
  bool has_side_queue() const override { return target_.has_side_queue(); }

  void gemm(bool, bool, float, const Tensor&, const Tensor&, float, Tensor) override { refuse("gemm"); }
  void svd(Tensor, Tensor, Tensor, const Tensor&) override { refuse("svd"); }
  void qr_orthonormal(Tensor, const Tensor&) override { refuse("qr_orthonormal"); }
  void fill_normal(Tensor, uint64_t, uint64_t, float, float) override { refuse("fill_normal"); }
  void round_stochastic(Tensor, const Tensor&, uint64_t, uint64_t) override { refuse("round_stochastic"); }
  void add(Tensor, const Tensor&, const Tensor&) override { refuse("add"); }
  void axpby(Tensor, float, const Tensor&, float) override { refuse("axpby"); }
  void scale(Tensor, float) override { refuse("scale"); }
  double sum(const Tensor&) override { refuse("sum"); }
  double sum_squares(const Tensor&) override { refuse("sum_squares"); }
  void sum_into(Tensor, const Tensor&, bool, bool) override { refuse("sum_into"); }
  void flag_non_finite(Tensor, const Tensor&, double, double) override { refuse("flag_non_finite"); }
  void norm_scale(Tensor, const Tensor&, double, double, double) override { refuse("norm_scale"); }
  void scale_by(Tensor, const Tensor&) override { refuse("scale_by"); }
  void embedding_forward(Tensor, const Tensor&, const Tensor&) override { refuse("embedding_forward"); }
  void embedding_backward(Tensor, const Tensor&, const Tensor&) override { refuse("embedding_backward"); }
  void rmsnorm_forward(Tensor, Tensor, const Tensor&, const Tensor&, float) override { refuse("rmsnorm_forward"); }
  void add_rmsnorm_forward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, float) override {
    refuse("add_rmsnorm_forward");
  }
  void rmsnorm_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&) override {
    refuse("rmsnorm_backward");
  }
  void linear_forward(Tensor, const Tensor&, const Tensor&, const Tensor*) override { refuse("linear_forward"); }
  void linear_backward(Tensor, Tensor, Tensor*, const Tensor&, const Tensor&, const Tensor&, bool) override {
    refuse("linear_backward");
  }
  void rope_forward(Tensor, const Tensor&, const Tensor&, const AttentionShape&) override { refuse("rope_forward"); }
  void rope_backward(Tensor, const Tensor&, const Tensor&, const AttentionShape&) override { refuse("rope_backward"); }
  void attention_forward(Tensor, Tensor, const Tensor&, const Tensor*, const AttentionShape&) override {
    refuse("attention_forward");
  }
  void attention_backward(Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor*,
                          const AttentionShape&) override {
    refuse("attention_backward");
  }
  void cached_attention_forward(Tensor, Tensor, const Tensor&, int, const AttentionShape&) override {
    refuse("cached_attention_forward");
  }
  void swiglu_forward(Tensor, const Tensor&) override { refuse("swiglu_forward"); }
  void swiglu_backward(Tensor, const Tensor&, const Tensor&) override { refuse("swiglu_backward"); }
  void cross_entropy_forward(Tensor, const Tensor&, const Tensor&) override { refuse("cross_entropy_forward"); }
  void cross_entropy_backward(Tensor, const Tensor&, const Tensor&, float) override {
    refuse("cross_entropy_backward");
  }
  void cross_entropy_fused(Tensor, Tensor, const Tensor&, float) override { refuse("cross_entropy_fused"); }

  void adamw_update(Tensor, const Tensor&, Tensor, Tensor, const AdamWArgs&) override { refuse("adamw_update"); }
  void adam_direction(Tensor, const Tensor&, Tensor, Tensor, const AdamWArgs&) override { refuse("adam_direction"); }

 private:
  [[noreturn]] static void refuse(const char* op) {
    runtime_error("plan: the planning backend does not compute (", op, " was called while building the run)");
  }
  const Backend& target_;
  std::map<void*, size_t> mappings_;
  size_t allocated_ = 0, peak_ = 0;
};

}  // namespace

ShardPlan plan_optimizer_shards(const std::vector<OptimParam>& params, int world_size) {
  std::vector<ShardItem> items;
  for (const auto& p : params)
    items.push_back({p.name, p.is_matrix() ? matrix_update_cost(p.param.shape) : numel_cost(p.param.shape)});
  return plan_shards(items, world_size);
}

std::vector<char> owned_by_rank(const ShardPlan& plan, int rank) {
  std::vector<char> owned(plan.owner.size());
  for (size_t i = 0; i < owned.size(); ++i) owned[i] = plan.owns(rank, i) ? 1 : 0;
  return owned;
}

std::string format_rank_state_bytes(const std::vector<double>& bytes_per_rank) {
  std::string text;
  for (size_t r = 0; r < bytes_per_rank.size(); ++r)
    text += concat(r ? ", " : "", "rank ", r, " ", format_bytes(bytes_per_rank[r]));
  return text;
}

MemoryPlan measure_memory_plan(LlamaModel& model, const Optimizer& optimizer, int seq_len) {
  MemoryPlan p;
  p.parameters = model.config().num_parameters();
  p.weight_bytes = model.params().bytes() + model.compute_weight_bytes();  // bf16: master + bf16 copy
  p.gradient_bytes = model.gradient_bytes();
  p.optimizer_state_bytes = optimizer.total_state_bytes();
  p.optimizer_workspace_bytes = optimizer.workspace_bytes();
  p.activation_bytes = model.activation_bytes();
  // The optimizer's refreshes take the side queue's scratch where there is one, else the one buffer.
  p.op_workspace_bytes = model.backend().has_side_queue()
                             ? model.op_workspace_bytes() + optimizer.op_workspace_bytes()
                             : std::max(model.op_workspace_bytes(), optimizer.op_workspace_bytes());
  p.micro_batch = model.max_batch();
  p.seq_len = seq_len;
  p.logits_chunk_rows = model.logits_chunk_rows();
  p.logits_bytes = size_t(p.logits_chunk_rows) * size_t(model.config().vocab_size) * dtype_size(model.logits_dtype());
  p.per_layer_grads = model.memory().per_layer_grads;
  p.gradient_sets = model.memory().gradient_sets;
  p.matrix_gradient_dtype = model.matrix_gradient_dtype();
  p.training_flops_per_token = training_flops_per_token(model.config(), seq_len);
  p.optimizer_table = optimizer_memory_table(optimizer);
  return p;
}

std::string format_memory_plan(const MemoryPlan& p) {
  std::ostringstream out;
  char line[200];
  const double total = double(p.total_bytes());
  auto row = [&](const char* name, size_t bytes, const std::string& note) {
    std::snprintf(line, sizeof(line), "  %-22s %12s %6.1f%%  %s\n", name, format_bytes(double(bytes)).c_str(),
                  total > 0 ? 100.0 * double(bytes) / total : 0.0, note.c_str());
    out << line;
  };
  out << "memory plan per rank (" << format_count(double(p.parameters)) << " parameters, micro-batch " << p.micro_batch
      << " x " << p.seq_len << " tokens)\n";
  row("weights", p.weight_bytes, "");
  const std::string per_layer_note =
      p.gradient_sets == 1 ? "per layer: one block's, sharing memory with the embedding's and head's"
                           : "per layer: two blocks' sets and the embedding's, sharing memory with the head's";
  row(p.matrix_gradient_dtype == DType::BF16 ? "gradients (bf16)" : "gradients (f32)", p.gradient_bytes,
      p.per_layer_grads ? per_layer_note + (p.matrix_gradient_dtype == DType::BF16 ? "; norms' f32" : "") : "");
  row("optimizer state", p.optimizer_state_bytes,
      p.rank_state_bytes.empty()
          ? std::string("checkpointed")
          : concat("checkpointed; sharded: rank ", p.largest_state_rank, " of ", p.rank_state_bytes.size(),
                   " holds the most (unsharded ", format_bytes(double(p.unsharded_optimizer_state_bytes)), ")"));
  row("optimizer workspace", p.optimizer_workspace_bytes, "scratch");
  row("activations", p.activation_bytes,
      concat("of which logits ", format_bytes(double(p.logits_bytes)), " (", p.logits_chunk_rows, " of ",
             int64_t(p.micro_batch) * p.seq_len, " token rows at a time)"));
  if (p.op_workspace_bytes) row("op workspace", p.op_workspace_bytes, "backend scratch of the largest op");
  row("total", p.total_bytes(), "");
  std::snprintf(line, sizeof(line), "  training FLOPs per token: %s (6N + attention), per micro-batch: %s\n",
                format_count(p.training_flops_per_token).c_str(),
                format_count(p.training_flops_per_token * p.micro_batch * p.seq_len).c_str());
  out << line << p.optimizer_table;
  if (!p.rank_state_bytes.empty()) {
    std::vector<double> bytes(p.rank_state_bytes.begin(), p.rank_state_bytes.end());
    out << "  optimizer.shard_states: optimizer state per rank: " << format_rank_state_bytes(bytes) << "\n";
  }
  return out.str();
}

MemoryPlan plan_run(const TrainConfig& config, int world_size) {
  if (world_size < 1) usage_error("plan: the world size must be at least 1, got ", world_size);
  const BatchLayout layout = make_batch_layout(config.training, world_size, config.source);
  // The target backend only answers attention_aux_elems; without a GPU the CPU stands in.
  std::unique_ptr<Backend> target =
      make_backend(config.training.backend == "cuda" && !cuda_available() ? "cpu" : config.training.backend, 0,
                   backend_options(config.training));
  PlanningBackend planning(*target);
  LlamaModel model(config.model, planning, layout.micro_batch, config.training.seq_len,
                   training_model_use(config.training), precision_from_name(config.training.precision, config.source),
                   training_model_memory(config, layout));
  OptimizerContext ctx;
  ctx.backend = &planning;
  ctx.params = make_optim_params(model);
  ctx.num_layers = config.model.num_hidden_layers;
  ctx.config = config.optimizer;
  ctx.seed = config.training.seed;
  ctx.weight_rounding = weight_rounding_from_name(config.training.weight_rounding, config.source);
  std::unique_ptr<Optimizer> optimizer = make_optimizer(config.optimizer.name, ctx);
  MemoryPlan plan;
  if (config.optimizer.shard_states && world_size > 1) {
    // Each rank's optimizer as its trainer builds it (state only for the parameters it owns),
    // one at a time; the plan shows the rank with the most state: the one that runs out first.
    const size_t unsharded_bytes = optimizer->total_state_bytes();
    optimizer.reset();
    const ShardPlan shards = plan_optimizer_shards(ctx.params, world_size);
    std::vector<size_t> rank_state_bytes;
    int largest_rank = 0;
    for (int rank = 0; rank < world_size; ++rank) {
      ctx.owned = owned_by_rank(shards, rank);
      std::unique_ptr<Optimizer> rank_optimizer = make_optimizer(config.optimizer.name, ctx);
      rank_state_bytes.push_back(rank_optimizer->total_state_bytes());
      if (!optimizer || rank_state_bytes.back() > rank_state_bytes[size_t(largest_rank)]) {
        optimizer = std::move(rank_optimizer);
        largest_rank = rank;
      }
    }
    plan = measure_memory_plan(model, *optimizer, config.training.seq_len);
    plan.rank_state_bytes = rank_state_bytes;
    plan.largest_state_rank = largest_rank;
    plan.unsharded_optimizer_state_bytes = unsharded_bytes;
  } else {
    plan = measure_memory_plan(model, *optimizer, config.training.seq_len);
  }
  std::printf("%s: %s backend, %d rank(s), global batch %d x %d tokens, %lld steps (%s tokens)\n",
              config.source.c_str(), target->name().c_str(), world_size, config.training.batch_size,
              config.training.seq_len, static_cast<long long>(config.total_steps()),
              format_count(double(config.total_steps()) * config.tokens_per_step()).c_str());
  std::printf("%s", format_memory_plan(plan).c_str());
  std::printf(
      "  training FLOPs for the whole run: %s\n",
      format_count(plan.training_flops_per_token * double(config.total_steps()) * config.tokens_per_step()).c_str());
  return plan;
}

}  // namespace gum
