#include "gum/train/trainer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "gradient_sync.h"
#include "gum/core/error.h"
#include "gum/core/format.h"
#include "gum/core/logging.h"
#include "gum/core/time_spent.h"
#include "gum/data/checksum.h"
#include "gum/data/loader.h"
#include "gum/data/prepare.h"
#include "gum/dist/sharding.h"
#include "gum/io/checkpoint.h"
#include "gum/io/weights.h"
#include "gum/model/llama.h"
#include "gum/optim/optimizer.h"
#include "gum/train/batch_source.h"
#include "gum/train/evaluate.h"
#include "gum/train/init_from.h"
#include "gum/train/metrics.h"
#include "gum/train/plan.h"
#include "gum/train/runtime.h"

namespace fs = std::filesystem;

namespace gum {

namespace {

constexpr const char* kTrainerStateFormat = "gum_train.trainer_state.v1";

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Test hook for fault-injection tests: GUM_FAULT_KILL_AFTER_STEP=N makes the process SIGKILL
// itself right after step N is complete (and checkpointed when due), as `kill -9` would.
// With GUM_FAULT_RANK=R set as well, only rank R does (one rank of a job dying).
int64_t fault_kill_step(int rank) {
  const char* value = std::getenv("GUM_FAULT_KILL_AFTER_STEP");
  const char* only_rank = std::getenv("GUM_FAULT_RANK");
  if (only_rank && std::atoi(only_rank) != rank) return -1;
  return value ? std::atoll(value) : -1;
}

// Two trainers writing one run folder would interleave metrics.jsonl and race on checkpoints:
// rank 0 holds an exclusive flock on RUN_DIR/.lock for the whole run. The kernel drops the lock
// when the process ends however it ends (kill -9 included), so a dead run never blocks the next.
// The file holds the holder's pid, for the message the second run prints.
class RunDirLock {
 public:
  explicit RunDirLock(const std::string& run_dir) {
    std::error_code ec;
    fs::create_directories(run_dir, ec);
    if (ec) runtime_error(run_dir, ": cannot create the run folder (", ec.message(), ")");
    const std::string path = run_dir + "/.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) runtime_error(path, ": cannot open the run folder's lock file (", std::strerror(errno), ")");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      char holder[32] = {};
      const ssize_t n = ::pread(fd_, holder, sizeof(holder) - 1, 0);
      ::close(fd_);
      if (error != EWOULDBLOCK) runtime_error(path, ": cannot lock (", std::strerror(error), ")");
      std::string pid = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "unknown";
      while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
      runtime_error(run_dir, ": another gum_train (pid ", pid, ") is training in this run folder; wait for it ",
                    "to finish or give this run its own logging.run_dir");
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
      runtime_error(path, ": cannot write the pid (", std::strerror(errno), ")");
  }
  ~RunDirLock() { ::close(fd_); }
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

class Trainer {
 public:
  Trainer(const TrainConfig& config, Runtime& runtime);
  void run(const std::string& resume);

 private:
  bool is_root() const { return comm_.is_root(); }
  void open_data();
  void start_fresh();
  void restore(const std::string& step_dir);
  void write_run_config() const;
  void restore_or_start(const std::string& resume);
  void log_startup() const;

  // What one optimizer step measured: the mean loss of the global batch and the global norm of
  // its gradient (before clipping), read from the device scalars.
  struct StepResult {
    double loss = 0;
    double grad_norm = 0;
  };
  void train_step(const StepInfo& info);
  bool due(int64_t every) const { return every > 0 && step_ % every == 0; }
  bool log_due() const { return due(config_.logging.every_steps) || step_ == total_steps_ || step_ == 1; }
  bool checkpoint_due() const {
    return due(config_.checkpoint.every_steps) || (step_ == total_steps_ && config_.checkpoint.at_end);
  }
  void after_step(double lr);
  int64_t load_micro_batches();
  void forward_backward(float loss_scale, const std::function<void(int layer)>& on_layer_done);
  StepResult read_step_scalars();
  void update_params(const std::vector<size_t>& indices);
  bool sharded() const { return shard_plan_.has_value(); }
  // Layers whose reduction may still travel when the fused update runs: per-layer gradients allow
  // one per set beyond the first; a whole gradient holds every layer's.
  size_t layers_in_flight() const {
    const ModelMemory& memory = model_->memory();
    return memory.per_layer_grads ? size_t(memory.gradient_sets - 1) : 1;
  }
  TensorMap optimizer_state_for_checkpoint() const;
  void log_state_per_rank() const;
  void clip_gradients(const std::vector<size_t>& indices);
  void clip_and_update(const std::vector<size_t>& indices);
  bool replay_recording(std::unique_ptr<RecordedWork>& recording, bool stale, const std::function<void()>& work);
  // Ends the run at `step` naming what was not finite and the last checkpoint to go back to.
  [[noreturn]] void stop_on_non_finite(int64_t step, const std::string& what) const;
  [[noreturn]] void stop_on_non_finite_flag(int64_t flagged_step, double what, double value) const;

  void log_step(const StepResult& result, double lr);
  void run_evaluation();
  void save_checkpoint_now();
  nlohmann::json trainer_state() const;

  const TrainConfig& config_;
  Backend& backend_;
  Communicator& comm_;
  BatchLayout layout_;
  int64_t total_steps_;
  bool fused_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::optional<ShardPlan> shard_plan_;  // set under optimizer.shard_states
  std::vector<Tensor> param_tensors_;    // optimizer_->params()[i].param, for broadcasts
  std::unique_ptr<BatchSource> data_;    // token shards or SFT examples (batch_source.h)
  MetricsLog metrics_;
  ProgressBar progress_;

  std::optional<StepRows> rows_;  // this rank's rows of the global batch
  // The step's measurements stay on the device (Backend "device scalars") and are read once per
  // logged or checkpointed step (read_step_scalars), so other steps never wait for the GPU:
  // F64 [loss_sum, grad_sum_squares, non_finite (step, what, value)]. loss_sum and
  // grad_sum_squares are this step's (zeroed when it starts); non_finite keeps the first NaN/Inf
  // loss or gradient of the run (what: -1 the loss, else the parameter index).
  Arena scalars_;
  Tensor loss_sum_, grad_sum_squares_, non_finite_;
  Arena clip_scale_;                   // F32 [1]: the clip factor (Backend::norm_scale), read by scale_by
  int64_t step_valid_targets_ = 0;     // of the global batch of the last step
  int64_t scalars_read_at_step_ = -1;  // read_step_scalars reads once per step
  StepResult last_read_;
  int64_t step_ = 0;
  int64_t tokens_ = 0;
  double elapsed_s_ = 0;  // training time of all sessions of this run (resumes add up)
  // Throughput since the last log line: training steps only (evaluations and checkpoint
  // saves in between do not count against tokens/s).
  double interval_s_ = 0;
  int64_t interval_steps_ = 0;
  // The optimizer's share of those steps (begin_step and every update, refreshes included), the
  // steps' CPU time, and the optimizer's refresh time already logged.
  TimeSpent interval_optimizer_;
  double interval_cpu_s_ = 0;
  TimeSpent refresh_logged_;
  double peak_tflops_ = 0;
  double flops_per_token_ = 0;
  std::string last_checkpoint_;
  std::optional<RunDirLock> run_dir_lock_;  // rank 0's, from the start of run() to the end

  // training.cuda_graphs (forward_backward): whether to record, the recording, the loss scale its
  // kernels were given, and the layers its backward reported done, in order.
  bool record_passes_ = false;
  bool warmed_up_ = false;
  std::unique_ptr<RecordedWork> recorded_pass_;
  float recorded_loss_scale_ = 0;
  std::vector<int> recorded_layers_;
  // clip_and_update's: whether one update ran eagerly, the recording and the parameters it updates.
  bool updated_once_ = false;
  std::unique_ptr<RecordedWork> recorded_update_;
  std::vector<size_t> recorded_update_indices_;
};

Trainer::Trainer(const TrainConfig& config, Runtime& runtime)
    : config_(config),
      backend_(*runtime.backend),
      comm_(*runtime.comm),
      layout_(make_batch_layout(config.training, runtime.comm->world_size(), config.source)),
      total_steps_(config.total_steps()),
      fused_(config.training.fused_update),
      // mpirun gives ranks a pseudo-terminal: no redrawn bar in a job's interleaved output.
      progress_(runtime.comm->is_root() && stdout_is_terminal() && !runtime.launch.under_mpirun) {
  model_ = std::make_unique<LlamaModel>(
      config.model, backend_, layout_.micro_batch, config.training.seq_len, training_model_use(config.training),
      precision_from_name(config.training.precision, config.source), training_model_memory(config, layout_));
  OptimizerContext ctx;
  ctx.backend = &backend_;
  ctx.params = make_optim_params(*model_);
  ctx.num_layers = config.model.num_hidden_layers;
  ctx.config = config.optimizer;
  ctx.seed = config.training.seed;
  ctx.weight_rounding = weight_rounding_from_name(config.training.weight_rounding, config.source);
  if (config.optimizer.shard_states) {
    shard_plan_ = plan_optimizer_shards(ctx.params, comm_.world_size());
    ctx.owned = owned_by_rank(*shard_plan_, comm_.rank());
  }
  optimizer_ = make_optimizer(config.optimizer.name, ctx);
  for (const auto& p : optimizer_->params()) param_tensors_.push_back(p.param);
  open_data();

  rows_.emplace(layout_.accumulation_steps, layout_.micro_batch, config.training.seq_len, data_->packed());
  scalars_ = Arena(backend_, DType::F64, {{"step_scalars", Shape{5}}});
  loss_sum_ = scalars_.view(0).flat_slice(0, Shape{1});
  grad_sum_squares_ = scalars_.view(0).flat_slice(1, Shape{1});
  non_finite_ = scalars_.view(0).flat_slice(2, Shape{3});
  clip_scale_ = Arena(backend_, DType::F32, {{"clip_scale", Shape{1}}});
  flops_per_token_ = training_flops_per_token(config.model, config.training.seq_len);
  // With several ranks the layer hook starts reductions and with fused_update it updates: host
  // work between the kernels of backward, which a recording would skip.
  record_passes_ = config.training.cuda_graphs == "auto" && comm_.world_size() == 1 && !fused_;
  peak_tflops_ = device_peak_tflops(backend_.name(), config.logging.peak_tflops);
}

void Trainer::open_data() { data_ = open_batch_source(config_); }

void Trainer::write_run_config() const {
  if (!is_root()) return;
  fs::create_directories(config_.logging.run_dir);
  std::ofstream out(config_.logging.run_dir + "/config.json");
  out << train_config_to_json(config_).dump(2) << "\n";
  if (!out) runtime_error(config_.logging.run_dir, "/config.json: write failed");
}

void Trainer::start_fresh() {
  if (config_.init_from.empty()) {
    model_->init_weights(config_.training.seed);
  } else {
    // Fine-tuning: the weights of model.init_from (the config was checked against it when parsed).
    const InitSource source = resolve_init_source(config_.init_from, config_.source);
    load_weights(backend_, model_->params(), read_init_weights(source), source.dir);
    spdlog::info("initial weights from {}", source.is_checkpoint ? source.step_dir : source.dir);
  }
  if (is_root()) metrics_ = MetricsLog(config_.metrics_path(), -1);
}

void Trainer::restore(const std::string& step_dir) {
  CheckpointContents c = load_checkpoint(step_dir);
  const nlohmann::json& s = c.trainer;
  if (s.value("format", "") != kTrainerStateFormat)
    runtime_error(step_dir, "/trainer.json: not a gum_train trainer state (format '", s.value("format", ""), "')");
  load_weights(backend_, model_->params(), c.model, step_dir + "/model.safetensors");
  // The file holds the whole (unsharded) state; under sharding each rank takes its own part.
  optimizer_->load_state(c.optimizer);
  if (!s.at("step").is_number_integer() || !s.at("tokens").is_number_integer())
    runtime_error(step_dir, "/trainer.json: step and tokens must be integers, got ", s.at("step").dump(), " and ",
                  s.at("tokens").dump());
  step_ = s.at("step").get<int64_t>();
  tokens_ = s.at("tokens").get<int64_t>();
  // A step past the end would "complete" the run without training a step.
  if (step_ < 0 || step_ > total_steps_ || tokens_ < step_)
    runtime_error(step_dir, "/trainer.json: step ", step_, " with ", tokens_, " tokens is not a state of this run (",
                  total_steps_, " steps; a step of training sees at least one token)");
  elapsed_s_ = s.value("elapsed_s", 0.0);
  data_->restore(s.at("loader"), step_dir + "/trainer.json");

  // Settings that change the trajectory: allowed (a user may mean it), but said out loud.
  const nlohmann::json saved = s.at("config");
  const nlohmann::json now = train_config_to_json(config_);
  for (const char* section : {"optimizer", "schedule", "training"}) {
    for (const auto& item : now[section].items()) {
      if (saved.contains(section) && saved[section].contains(item.key()) && saved[section][item.key()] != item.value())
        spdlog::warn("resume: {}.{} was {} in the checkpoint, now {}", section, item.key(),
                     saved[section][item.key()].dump(), item.value().dump());
    }
  }
  const int saved_world = s.value("world_size", 1);
  if (saved_world != comm_.world_size())
    spdlog::info("resume: checkpoint written by {} rank(s), continuing on {} (the data order does not depend on it)",
                 saved_world, comm_.world_size());
  if (is_root()) metrics_ = MetricsLog(config_.metrics_path(), step_);
  last_checkpoint_ = step_dir;
  spdlog::info("resumed from {} at step {} ({} tokens)", step_dir, step_, format_count(double(tokens_)));
}

nlohmann::json Trainer::trainer_state() const {
  return {{"format", kTrainerStateFormat},
          {"version", GUM_VERSION},
          {"step", step_},
          {"tokens", tokens_},
          {"elapsed_s", elapsed_s_},
          {"loader", data_->state()},
          // Every random choice derives from these seeds through counter-based Philox streams
          // (weights: stream = parameter index; data order: (data seed, epoch)); generators
          // with a position (GUM's sampler) keep it in optimizer.safetensors.
          {"rng", {{"training_seed", config_.training.seed}, {"data_seed", config_.data.seed}}},
          {"world_size", comm_.world_size()},
          {"optimizer", optimizer_->name()},
          {"config", train_config_to_json(config_)}};
}

// The whole optimizer state on rank 0 (other ranks: their part, unused): under sharding the
// owners' parts are gathered and merged, so the file equals a single process's.
TensorMap Trainer::optimizer_state_for_checkpoint() const {
  TensorMap mine;
  optimizer_->save_state(mine);
  if (!sharded() || comm_.world_size() == 1) return mine;
  std::vector<TensorMap> parts = gather_tensor_maps(comm_, mine, 0);
  return is_root() ? merge_sharded_parts(parts) : TensorMap{};
}

void Trainer::save_checkpoint_now() {
  read_step_scalars();  // stops before saving when a loss or gradient was NaN or Inf
  CheckpointContents c;
  c.model = weights_to_host(backend_, model_->params());
  // The loss of this step was finite, but its update may not be: such weights are never saved,
  // so that the last checkpoint written is always one to go back to.
  const std::string bad = non_finite_tensor(c.model);
  if (!bad.empty()) stop_on_non_finite(step_, "after the update, weight " + bad + " (not saved)");
  c.optimizer = optimizer_state_for_checkpoint();
  c.trainer = trainer_state();
  if (is_root()) {
    const auto start = Clock::now();
    last_checkpoint_ = save_checkpoint(config_.checkpoint_dir(), step_, c, config_.checkpoint.keep_last);
    spdlog::info("checkpoint {} saved in {:.1f}s", last_checkpoint_, seconds_since(start));
  }
  comm_.barrier();  // no rank runs ahead of a checkpoint that may fail
}

int64_t Trainer::load_micro_batches() {
  const int64_t valid = rows_->load(*data_, comm_.rank(), comm_.world_size());
  return static_cast<int64_t>(std::llround(comm_.all_reduce_host(static_cast<double>(valid), ReduceOp::Sum)));
}

void Trainer::stop_on_non_finite(int64_t step, const std::string& what) const {
  runtime_error("step ", step, ": ", what, "; stopping. ",
                last_checkpoint_.empty() ? std::string("No checkpoint was written yet.")
                                         : "The last good checkpoint is " + last_checkpoint_ + ".",
                " Try a lower optimizer.lr, a longer warmup or training.grad_clip.");
}

// Updates the parameters among `indices` this rank owns (all of them without sharding); under
// sharding the owners then broadcast the new weights, so every rank holds the same model.
void Trainer::update_params(const std::vector<size_t>& indices) {
  ScopedTimeSpent timed(interval_optimizer_);
  optimizer_->prepare(indices);  // the projector refreshes start on the side queue
  for (size_t i : indices)
    if (optimizer_->owns(i)) optimizer_->update(i);
  if (sharded() && comm_.world_size() > 1) broadcast_from_owners(comm_, *shard_plan_, param_tensors_, indices);
}

// Scales the gradients this rank holds among `indices` (all, or under sharding those it owns) by
// the clip factor computed on the device from the whole gradient's sum of squares.
void Trainer::clip_gradients(const std::vector<size_t>& indices) {
  const double max_norm = config_.training.grad_clip;
  if (max_norm <= 0) return;
  // Global-norm clipping (Pascanu et al. 2013): one scale for all gradients keeps their direction.
  backend_.norm_scale(clip_scale_.view(0), grad_sum_squares_, max_norm, 1e-6, max_norm);
  for (size_t i : indices)
    if (optimizer_->owns(i)) backend_.scale_by(optimizer_->params()[i].grad, clip_scale_.view(0));
}

// The one host round trip of a logged (or checkpointed) step: every rank calls it at the same
// steps (the loss sum is summed over the ranks first). A NaN or Inf recorded since the start
// stops the run here, naming the step it happened at.
Trainer::StepResult Trainer::read_step_scalars() {
  if (scalars_read_at_step_ == step_) return last_read_;
  if (comm_.world_size() > 1) comm_.wait(comm_.all_reduce_async({loss_sum_}, ReduceOp::Sum));
  double host[5];
  backend_.copy_to_host(host, scalars_.view(0));
  if (host[2] != 0) stop_on_non_finite_flag(static_cast<int64_t>(host[2]), host[3], host[4]);
  scalars_read_at_step_ = step_;
  last_read_ = {host[0] / static_cast<double>(step_valid_targets_), std::sqrt(host[1])};
  return last_read_;
}

void Trainer::stop_on_non_finite_flag(int64_t flagged_step, double what, double value) const {
  const std::string kind = std::isnan(value) ? "NaN" : "Inf";
  const std::string found = flagged_step == step_ ? ""
                                                  : " (found at step " + std::to_string(step_) +
                                                        ": the device's checks are read when a step is logged or "
                                                        "checkpointed)";
  if (what >= 0)
    stop_on_non_finite(
        flagged_step, "gradient of " + optimizer_->params()[static_cast<size_t>(what)].name + " is NaN or Inf" + found);
  if (!found.empty()) stop_on_non_finite(flagged_step, "loss is " + kind + found);
  // Found at its own step: name where it starts, the first non-finite weight, else the first
  // non-finite gradient (this step's, still held). Failing already, a round trip each is fine.
  comm_.wait_all();
  std::string where = "every weight and gradient is finite (the overflow is in the activations)";
  for (const auto& p : optimizer_->params())
    if (!std::isfinite(backend_.sum_squares(p.param))) {
      where = "first non-finite weight: " + p.name;
      break;
    }
  if (where.rfind("first", 0) != 0)
    for (const auto& p : optimizer_->params())
      if (!std::isfinite(backend_.sum_squares(p.grad))) {
        where = "first non-finite gradient: " + p.name;
        break;
      }
  stop_on_non_finite(flagged_step, "loss is " + kind + " (" + where + ")");
}

// One optimizer step: forward and backward of each micro-batch (gradients accumulate), the
// gradients summed over the ranks layer by layer while the last backward runs, then the update.
// Nothing here waits for the device: the loss, the gradient norm and the NaN/Inf checks stay in
// scalars_ until read_step_scalars.
void Trainer::train_step(const StepInfo& info) {
  step_valid_targets_ = load_micro_batches();
  if (step_valid_targets_ == 0) runtime_error("step ", info.step, ": the batch has no valid targets");
  // Every token's loss weighs 1 / (valid targets of the global batch), whatever the split into
  // ranks and micro-batches: the summed gradients are the mean over the global batch.
  const float loss_scale = 1.0f / static_cast<float>(step_valid_targets_);
  model_->zero_grads();
  {
    ScopedTimeSpent timed(interval_optimizer_);
    optimizer_->begin_step(info);  // on every rank: GUM draws its full-rank blocks here
  }
  // This step's loss_sum and grad_sum_squares start at 0; the non-finite record is the run's.
  backend_.fill(scalars_.view(0).flat_slice(0, Shape{2}), 0.0f);

  // The last backward completes each layer's gradient; its hook starts the layer's reduction at
  // once, while backward goes on with the layers below. Fused over several ranks, the hook then
  // updates the layer completed before it, whose reduction travelled during this layer's backward;
  // alone, it updates its own layer at once (one per-layer gradient set). The whole gradient is
  // never needed at once (and is never clipped: fused needs grad_clip 0).
  GradientSync sync(comm_, backend_, *optimizer_, sharded() ? &*shard_plan_ : nullptr, grad_sum_squares_, non_finite_,
                    info.step);
  const auto last_layer_done = [&](int layer) {
    sync.layer_done(layer);
    if (fused_) update_params(sync.complete(layers_in_flight()));
  };
  for (int m = 0; m < layout_.accumulation_steps; ++m) {
    model_->stage(rows_->micro_batch(m));
    const bool last = m + 1 == layout_.accumulation_steps;
    forward_backward(loss_scale, last ? last_layer_done : std::function<void(int)>());
  }
  // Checked in this order, the first non-finite record is a gradient the fused update met inside
  // backward, else the loss, else a gradient of the rest (under sharded state: its owner's record).
  backend_.flag_non_finite(non_finite_, loss_sum_, double(info.step), -1.0);
  const std::vector<size_t> rest = sync.complete();  // fused: the bottom layer; otherwise every layer
  sync.finish();
  clip_and_update(rest);
}

// The clipping and the update after the last micro-batch. Under training.cuda_graphs they are
// recorded (Backend::record) and replayed like the passes when the optimizer reads every value
// that changes between steps from device memory (Optimizer::update_recordable: AdamW, whose lr and
// bias corrections begin_step copied to the device before the step; the clip factor is computed on
// the device). The first update runs eagerly (what it sizes on first use is then in place), and a
// step whose update the optimizer cannot replay (a projector refresh, GUM's sampled blocks, lr
// and scales by value in Muon's, GaLore's and GUM's kernels) runs eagerly, leaving the recording
// for the next step that can. The gradient norm's sum before it stays eager: its NaN/Inf record
// takes the step number by value.
void Trainer::clip_and_update(const std::vector<size_t>& indices) {
  const auto work = [&] {
    clip_gradients(indices);
    update_params(indices);
  };
  if (!record_passes_ || !updated_once_ || !optimizer_->update_recordable()) {
    work();
    updated_once_ = true;
    return;
  }
  const bool other_params = recorded_update_indices_ != indices;
  if (!replay_recording(recorded_update_, other_params, work)) {
    work();
    return;
  }
  if (other_params) recorded_update_indices_ = indices;
}

// Replays `recording`, recording `work` first (Backend::record) when there is none, the backend
// invalidated it or the caller says it is `stale`. False where the backend cannot record: the
// caller runs the work eagerly, as every later pass and update then does.
bool Trainer::replay_recording(std::unique_ptr<RecordedWork>& recording, bool stale,
                               const std::function<void()>& work) {
  if (!recording || !recording->valid() || stale) {
    recording.reset();
    recording = backend_.record(work);
    if (!recording) {
      record_passes_ = false;
      return false;
    }
  }
  recording->replay();
  return true;
}

// The forward and backward of the staged micro-batch. Under training.cuda_graphs they are recorded
// once (Backend::record) and replayed: a replay launches the same kernels with the same arguments,
// so every value that changes between steps must be in device memory written before it. In this
// pass the only such host value is the loss scale (1 / valid targets of the step), which the loss
// kernels take as an argument: a step with another scale records again, as does one after the
// backend moved a scratch buffer the recording addresses (an op workspace grown past its start-up
// reservation: a replay would write the freed one). The batch is staged (copied) before; the
// update after the last micro-batch has its own recording (clip_and_update); the read-back of
// logged steps runs eagerly. The layer hook runs on the host after the replay, in the recorded
// order: on one rank and without fused_update (record_passes_) it only starts no-op reductions.
void Trainer::forward_backward(float loss_scale, const std::function<void(int layer)>& on_layer_done) {
  const auto pass = [&](const std::function<void(int layer)>& hook) {
    model_->forward_staged(loss_sum_, /*accumulate=*/true, loss_scale);
    model_->backward(loss_scale, hook);
  };
  // The first pass runs eagerly: a buffer sized on first use would be allocated there, and an
  // allocation inside a recording fails it (the cuda backend reserves its op scratch at start-up).
  if (!record_passes_ || !warmed_up_) {
    pass(on_layer_done);
    warmed_up_ = true;
    return;
  }
  const auto record_layers = [&] {
    recorded_layers_.clear();
    pass([&](int layer) { recorded_layers_.push_back(layer); });
  };
  if (!replay_recording(recorded_pass_, recorded_loss_scale_ != loss_scale, record_layers)) {
    pass(on_layer_done);
    return;
  }
  recorded_loss_scale_ = loss_scale;
  if (on_layer_done)
    for (int layer : recorded_layers_) on_layer_done(layer);
}

void Trainer::log_step(const StepResult& result, double lr) {
  const double tok_per_s = interval_s_ > 0 ? double(interval_steps_ * config_.tokens_per_step()) / interval_s_ : 0.0;
  // Milliseconds per step over the interval (rank 0's own share under sharded state).
  const double ms_per_step = 1e3 / double(interval_steps_);
  const TimeSpent optimizer = interval_optimizer_;
  const TimeSpent refresh{optimizer_->refresh_time().wall_s - refresh_logged_.wall_s,
                          optimizer_->refresh_time().cpu_s - refresh_logged_.cpu_s};
  const double step_cpu_s = interval_cpu_s_;
  refresh_logged_ = optimizer_->refresh_time();
  interval_optimizer_ = {};
  interval_cpu_s_ = 0;
  interval_s_ = 0;
  interval_steps_ = 0;
  if (!is_root()) return;
  const double step_s = tok_per_s > 0 ? double(config_.tokens_per_step()) / tok_per_s : 0.0;
  const double eta_s = step_s * double(total_steps_ - step_);
  std::string mfu = "n/a";
  if (peak_tflops_ > 0 && tok_per_s > 0) {
    char text[16];
    std::snprintf(text, sizeof(text), "%.1f%%",
                  100.0 * flops_per_token_ * tok_per_s / (peak_tflops_ * 1e12 * comm_.world_size()));
    mfu = text;
  }
  const size_t memory = backend_.device() == Device::CUDA ? backend_.peak_memory_bytes() : peak_rss_bytes();
  progress_.clear();
  spdlog::info("step {:>{}}/{} | loss {:.4f} | lr {:.3e} | grad {:.3f} | {} tok/s | MFU {} | mem {} | eta {}", step_,
               std::to_string(total_steps_).size(), total_steps_, result.loss, lr, result.grad_norm,
               format_count(tok_per_s), mfu, format_bytes(double(memory)), format_duration(eta_s));
  metrics_.append({{"step", step_},
                   {"tokens", tokens_},
                   {"loss", result.loss},
                   {"lr", lr},
                   {"grad_norm", result.grad_norm},
                   {"tok_per_s", tok_per_s},
                   {"step_cpu_ms", step_cpu_s * ms_per_step},
                   {"optimizer_ms", optimizer.wall_s * ms_per_step},
                   {"optimizer_cpu_ms", optimizer.cpu_s * ms_per_step},
                   {"refresh_ms", refresh.wall_s * ms_per_step},
                   {"refresh_cpu_ms", refresh.cpu_s * ms_per_step},
                   {"elapsed_s", elapsed_s_}});
}

void Trainer::run_evaluation() {
  if (!data_->has_validation()) return;
  EvalResult r = data_->evaluate(*model_, comm_, config_.eval.max_tokens);
  if (!is_root()) return;
  progress_.clear();
  spdlog::info("eval  step {} | val_loss {:.4f} | val_ppl {:.2f} | {} tokens in {:.1f}s", step_, r.loss(),
               r.perplexity(), format_count(double(r.tokens)), r.seconds);
  metrics_.append({{"step", step_},
                   {"tokens", tokens_},
                   {"val_loss", r.loss()},
                   {"val_ppl", r.perplexity()},
                   {"val_tokens", r.tokens},
                   {"elapsed_s", elapsed_s_}});
}

void Trainer::restore_or_start(const std::string& resume) {
  std::string resume_from;
  if (resume == "auto")
    resume_from = find_resume_checkpoint(config_.checkpoint_dir());
  else if (resume != "never")
    resume_from = resolve_checkpoint_path(resume, "--resume");
  // Every rank must restore the same checkpoint: rank 0 decides.
  resume_from = comm_.broadcast_string(resume_from, 0);
  if (resume_from.empty())
    start_fresh();
  else
    restore(resume_from);
  write_run_config();
}

// Optimizer state bytes of each rank (collective: every rank calls it), logged by rank 0.
void Trainer::log_state_per_rank() const {
  if (!sharded()) return;
  const double mine = static_cast<double>(optimizer_->total_state_bytes());
  std::vector<double> bytes_per_rank;
  for (int r = 0; r < comm_.world_size(); ++r)
    bytes_per_rank.push_back(comm_.all_reduce_host(comm_.rank() == r ? mine : 0.0, ReduceOp::Sum));
  if (!is_root()) return;
  spdlog::info("optimizer.shard_states: each rank keeps the state of the matrices it owns (imbalance {:.2f})\n{}",
               shard_plan_->imbalance(), shard_plan_->summary());
  spdlog::info("optimizer state per rank: {}", format_rank_state_bytes(bytes_per_rank));
}

void Trainer::log_startup() const {
  log_state_per_rank();
  if (!is_root()) return;
  spdlog::info(
      "gum_train {}: {} on {} x {} ({} communicator) | {} parameters | {} steps x {} tokens | optimizer {} | "
      "update {} | activations {}",
      GUM_VERSION, config_.source, comm_.world_size(), backend_.name(), comm_.name(),
      format_count(double(config_.model.num_parameters())), total_steps_,
      format_count(double(config_.tokens_per_step())), optimizer_->name(),
      !fused_ ? "after backward"
      : model_->memory().per_layer_grads
          ? concat("fused per layer in backward (", model_->memory().gradient_sets == 1 ? "one block's" : "two blocks'",
                   " gradients at a time; no clipping)")
          : "fused per layer in backward (whole gradient over the micro-batches; no clipping)",
      model_->use() == ModelUse::TrainingRecompute ? "recomputed per block in backward" : "stored");
  spdlog::info("batch {} sequences x {} tokens = {} ranks x {} micro-batches x {} rows", config_.training.batch_size,
               config_.training.seq_len, comm_.world_size(), layout_.accumulation_steps, layout_.micro_batch);
  spdlog::info("\n{}", format_memory_plan(measure_memory_plan(*model_, *optimizer_, config_.training.seq_len)));
  spdlog::info("metrics: {} | checkpoints: {}", config_.metrics_path(), config_.checkpoint_dir());
  data_->log_summary();
}

void Trainer::after_step(double lr) {
  const bool last = step_ == total_steps_;
  if (log_due())
    log_step(read_step_scalars(), lr);
  else if (is_root())
    progress_.draw(step_, total_steps_, "step " + std::to_string(step_) + "/" + std::to_string(total_steps_));
  if (due(config_.eval.every_steps) || (last && config_.eval.at_end)) run_evaluation();
  if (checkpoint_due()) save_checkpoint_now();
}

void Trainer::run(const std::string& resume) {
  if (is_root()) {
    run_dir_lock_.emplace(config_.logging.run_dir);
    remove_partial_checkpoints(config_.checkpoint_dir());  // safe: no other writer holds the lock
  }
  restore_or_start(resume);
  log_startup();
  if (step_ == 0 && config_.eval.at_start) run_evaluation();
  const int64_t kill_after = fault_kill_step(comm_.rank());
  while (step_ < total_steps_) {
    const auto start = Clock::now();
    const double cpu_start_s = process_cpu_seconds();
    const double lr_ratio = lr_multiplier(config_.schedule, step_, total_steps_);
    const double lr = config_.optimizer.lr * lr_ratio;
    StepInfo info;
    info.step = step_ + 1;
    info.lr = static_cast<float>(lr);
    info.lr_ratio = static_cast<float>(lr_ratio);
    train_step(info);
    ++step_;
    // The read waits for the device, so the time of a logged step includes the work queued since
    // the last read: tokens/s over a logging interval is the device's, not the host's.
    if (log_due() || checkpoint_due()) read_step_scalars();
    const double step_s = seconds_since(start);
    interval_cpu_s_ += process_cpu_seconds() - cpu_start_s;
    tokens_ += config_.tokens_per_step();
    elapsed_s_ += step_s;
    interval_s_ += step_s;
    ++interval_steps_;
    after_step(lr);
    if (step_ == kill_after) std::raise(SIGKILL);
  }
  progress_.clear();
  if (is_root())
    spdlog::info("done: {} steps, {} tokens in {}", step_, format_count(double(tokens_)), format_duration(elapsed_s_));
}

}  // namespace

int run_training(const TrainConfig& config, const std::string& resume) {
  Runtime runtime = make_runtime(config);
  auto body = [&] {
    Trainer trainer(config, runtime);
    trainer.run(resume);
    return 0;
  };
  // Alone, an error reaches main (one line, exit code); with several ranks it must end them all.
  if (runtime.comm->world_size() == 1) return body();
  return run_or_abort(*runtime.comm, body);
}

}  // namespace gum
