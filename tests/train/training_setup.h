#pragma once
// A model and its optimizer built as the trainer builds them (layout, model use, precision,
// memory plan, initial weights), and a deterministic token batch per step, for the tests that
// drive a training step by hand (the memory plan's exactness, the side-stream refresh).
#include <memory>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/model/llama.h"
#include "gum/optim/optimizer.h"
#include "gum/train/config.h"
#include "gum/train/runtime.h"

namespace gum_test {

struct TrainingSetup {
  gum::BatchLayout layout;
  std::unique_ptr<gum::LlamaModel> model;
  std::unique_ptr<gum::Optimizer> optimizer;
};

inline TrainingSetup build_training_setup(const gum::TrainConfig& config, gum::Backend& backend, int ranks) {
  TrainingSetup setup;
  setup.layout = gum::make_batch_layout(config.training, ranks, config.source);
  setup.model = std::make_unique<gum::LlamaModel>(config.model, backend, setup.layout.micro_batch,
                                                  config.training.seq_len, gum::training_model_use(config.training),
                                                  gum::precision_from_name(config.training.precision, config.source),
                                                  gum::training_model_memory(config, setup.layout));
  setup.model->init_weights(config.training.seed);
  gum::OptimizerContext ctx;
  ctx.backend = &backend;
  ctx.params = gum::make_optim_params(*setup.model);
  ctx.num_layers = config.model.num_hidden_layers;
  ctx.config = config.optimizer;
  ctx.seed = config.training.seed;
  setup.optimizer = gum::make_optimizer(config.optimizer.name, ctx);
  return setup;
}

// Tokens and targets of one micro-batch, a different pattern at each step.
struct SyntheticBatch {
  std::vector<int32_t> tokens, targets;
  gum::TokenBatch batch;
  SyntheticBatch(const gum::TrainConfig& config, int micro_batch, int step) {
    const int64_t rows = int64_t(micro_batch) * config.training.seq_len;
    tokens.resize(static_cast<size_t>(rows));
    targets.resize(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) {
      tokens[size_t(i)] = int32_t((i * 37 + 11 * step) % config.model.vocab_size);
      targets[size_t(i)] = int32_t((i * 53 + 7 * step) % config.model.vocab_size);
    }
    batch.tokens = tokens.data();
    batch.targets = targets.data();
    batch.batch = micro_batch;
  }
  SyntheticBatch(const SyntheticBatch&) = delete;  // batch points into the vectors
};

}  // namespace gum_test
