// The low-rank optimizers' projector refreshes run as side work (Backend::begin_side_work): on the
// cuda backend a second stream, ordered by events. Their results must be those of the one-stream
// path bit for bit: the same kernels in the same order per matrix. Written against CUDA's stream
// semantics; under the emulator's GUM_CUDA_EMU_STREAMS (whatever it is set to) a missing event
// wait would read stale or poisoned data and show here.
#include <catch2/catch.hpp>

#include "gum/backend/backend.h"
#include "gum/io/weights.h"
#include "gum/train/config.h"
#include "gum/train/plan.h"
#include "gum/train/runtime.h"
#include "train_test_util.h"
#include "training_setup.h"

using namespace gum;
using namespace gum_test;

namespace {

// Weights and optimizer state after `steps` steps built as the trainer builds them, with the
// trainer's order of calls: prepare() with the parameters about to be updated, then update() of
// each (per layer inside backward under the fused update).
TensorMap train_steps(const TrainConfig& config, bool side_stream, int steps) {
  BackendOptions options = backend_options(config.training);
  options.side_stream = side_stream;
  std::unique_ptr<Backend> backend = make_backend("cuda", 0, options);
  CHECK(backend->has_side_queue() == side_stream);
  TrainingSetup setup = build_training_setup(config, *backend, 1);
  LlamaModel& model = *setup.model;
  Optimizer* optimizer = setup.optimizer.get();
  const int64_t rows = int64_t(setup.layout.micro_batch) * config.training.seq_len;
  for (int step = 1; step <= steps; ++step) {
    const SyntheticBatch tokens(config, setup.layout.micro_batch, step);
    StepInfo info;
    info.step = step;
    info.lr = 1e-2f;
    info.lr_ratio = 1.0f;
    model.zero_grads();
    optimizer->begin_step(info);
    model.forward(tokens.batch);
    const auto update = [&](const std::vector<size_t>& indices) {
      optimizer->prepare(indices);
      for (size_t i : indices) optimizer->update(i);
    };
    model.backward(1.0f / float(rows), [&](int layer) {
      if (config.training.fused_update) update(optimizer->layer_params(layer));
    });
    if (!config.training.fused_update) {
      std::vector<size_t> all(optimizer->params().size());
      for (size_t i = 0; i < all.size(); ++i) all[i] = i;
      update(all);
    }
  }
  TensorMap result = weights_to_host(*backend, model.params());
  optimizer->save_state(result);
  return result;
}

}  // namespace

TEST_CASE("projector refreshes on the side stream give the one-stream path's weights and state bit for bit") {
  if (!cuda_available()) return;
  prepared_micro_data();
  const std::string dir = fresh_test_dir("refresh_side_stream");
  // update_proj_gap 2: steps 1 and 3 refresh, step 2 reuses the projectors (and the moments the
  // refresh realigned).
  const std::vector<nlohmann::json> optimizers = {
      {{"name", "galore_adamw"}, {"rank", 4}, {"update_proj_gap", 2}},
      {{"name", "galore_adamw"}, {"rank", 4}, {"update_proj_gap", 2}, {"projector", "randomized"}},
      {{"name", "gum"}, {"rank", 4}, {"update_proj_gap", 2}, {"full_rank_layers", 1}},
      {{"name", "plumage"}, {"rank", 4}, {"update_proj_gap", 2}},
      {{"name", "stiefel"}, {"rank", 4}, {"update_proj_gap", 2}},
      {{"name", "stiefel"}, {"rank", 4}, {"update_proj_gap", 2}, {"stiefel_sampling", "optimal"}},
  };
  for (const nlohmann::json& optimizer : optimizers)
    for (const bool fused : {false, true}) {
      INFO(optimizer.dump() << (fused ? ", fused update" : ""));
      const nlohmann::json patch = {
          {"optimizer", optimizer},
          {"training", {{"backend", "cuda"}, {"fused_update", fused}, {"grad_clip", fused ? 0.0 : 1.0}}}};
      const TrainConfig config = load_train_config(write_config(dir, micro_config(dir + "/run", patch)));
      const TensorMap one_stream = train_steps(config, false, 3);
      const TensorMap two_streams = train_steps(config, true, 3);
      REQUIRE(two_streams.size() == one_stream.size());
      for (const auto& [name, tensor] : one_stream) {
        INFO(name);
        REQUIRE(two_streams.count(name) == 1);
        CHECK(two_streams.at(name).bytes == tensor.bytes);
      }
    }
}
