// LlamaModel behaviour on the CPU backend: initialisation, the per-layer backward hook order,
// gradient accumulation over micro-batches, determinism, and errors for bad inputs.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "gum/core/dtype.h"
#include "gum/core/error.h"
#include "gum/core/philox.h"
#include "gum/model/llama.h"

using namespace gum;

namespace {

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 1;
  c.vocab_size = 29;
  c.max_position_embeddings = 16;
  c.initializer_range = 0.5;
  return c;
}

std::vector<float> host_copy(Backend& be, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  be.copy_to_host(v.data(), t);
  return v;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
  TokenBatch view(int B) const {
    TokenBatch b;
    b.tokens = tokens.data();
    b.targets = targets.data();
    b.batch = B;
    return b;
  }
};

Batch make_batch(int B, int T, int V) {
  Batch b;
  for (int i = 0; i < B * T; ++i) {
    b.tokens.push_back((i * 7 + 3) % V);
    b.targets.push_back((i * 11 + 5) % V);
  }
  return b;
}

}  // namespace

TEST_CASE("init_weights: Philox per parameter, norms 1, biases 0, reproducible") {
  auto backend = make_backend("cpu");
  auto config = tiny_config();
  config.attention_bias = config.o_proj_bias = true;
  LlamaModel a(config, *backend, 1, 8), b(config, *backend, 1, 8);
  a.init_weights(42);
  b.init_weights(42);
  REQUIRE(host_copy(*backend, a.params().all()) == host_copy(*backend, b.params().all()));
  for (size_t i = 0; i < a.specs().size(); ++i) {
    auto values = host_copy(*backend, a.params().view(i));
    const ParamKind kind = a.specs()[i].kind;
    if (kind == ParamKind::Norm)
      for (float v : values) REQUIRE(v == 1.0f);
    else if (kind == ParamKind::Bias)
      for (float v : values) REQUIRE(v == 0.0f);
    else
      REQUIRE(values[0] == 0.5f * philox_normal(42, i, 0));  // stream i, std = initializer_range
  }
  b.init_weights(43);
  REQUIRE(host_copy(*backend, a.params().all()) != host_copy(*backend, b.params().all()));
}

TEST_CASE("backward fires on_layer_done from L down to -1, and gradients accumulate") {
  auto backend = make_backend("cpu");
  const auto config = tiny_config();
  const int T = 8;
  LlamaModel model(config, *backend, 2, T);
  model.init_weights(7);
  model.zero_grads();
  const Batch batch = make_batch(2, T, config.vocab_size);
  const double loss = model.forward(batch.view(2));
  REQUIRE(std::isfinite(loss));
  REQUIRE(loss > 0);
  std::vector<int> order;
  model.backward(1.0f / (2 * T), [&](int layer) { order.push_back(layer); });
  REQUIRE(order == std::vector<int>{3, 2, 1, 0, -1});
  const auto once = host_copy(*backend, model.grads().all());
  REQUIRE(backend->sum_squares(model.grads().all()) > 0);

  // The same micro-batch again: deterministic loss, gradients exactly doubled.
  REQUIRE(model.forward(batch.view(2)) == loss);
  model.backward(1.0f / (2 * T));
  const auto twice = host_copy(*backend, model.grads().all());
  for (size_t i = 0; i < once.size(); ++i) REQUIRE(twice[i] == Approx(2 * once[i]).margin(1e-7));

  // Two half-batches add up to the full batch (the loss scale is the global one).
  model.zero_grads();
  const Batch first = make_batch(1, T, config.vocab_size);
  Batch second;
  second.tokens.assign(batch.tokens.begin() + T, batch.tokens.end());
  second.targets.assign(batch.targets.begin() + T, batch.targets.end());
  const double l1 = model.forward(first.view(1));
  model.backward(1.0f / (2 * T));
  const double l2 = model.forward(second.view(1));
  model.backward(1.0f / (2 * T));
  REQUIRE(l1 + l2 == Approx(loss).epsilon(1e-6));
  const auto split = host_copy(*backend, model.grads().all());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < once.size(); ++i) {
    diff += (split[i] - once[i]) * (split[i] - once[i]);
    norm += once[i] * once[i];
  }
  REQUIRE(std::sqrt(diff / norm) < 1e-5);
}

TEST_CASE("ignored targets contribute neither loss nor gradient") {
  auto backend = make_backend("cpu");
  const auto config = tiny_config();
  const int T = 6;
  LlamaModel model(config, *backend, 1, T);
  model.init_weights(3);
  model.zero_grads();
  Batch batch = make_batch(1, T, config.vocab_size);
  std::fill(batch.targets.begin(), batch.targets.end(), -1);
  REQUIRE(model.forward(batch.view(1)) == 0.0);
  model.backward(1.0f);
  REQUIRE(backend->sum_squares(model.grads().all()) == 0.0);
}

TEST_CASE("logits without targets, and bad inputs raise errors naming the problem") {
  auto backend = make_backend("cpu");
  const auto config = tiny_config();
  const int T = 4;
  LlamaModel model(config, *backend, 2, T);
  model.init_weights(5);
  Batch batch = make_batch(2, T, config.vocab_size);
  TokenBatch no_targets = batch.view(1);
  no_targets.targets = nullptr;
  REQUIRE(model.forward(no_targets) == 0.0);
  REQUIRE(model.logits().shape == Shape{T, config.vocab_size});
  REQUIRE_THROWS_WITH(model.backward(1.0f), Catch::Contains("no targets"));

  REQUIRE_THROWS_WITH(model.forward(batch.view(3)), Catch::Contains("max_batch"));
  batch.tokens[5] = config.vocab_size;
  REQUIRE_THROWS_WITH(model.forward(batch.view(2)), Catch::Contains("token 29 at batch row 1, position 1"));
  batch.tokens[5] = 0;
  batch.targets[2] = 1000;
  REQUIRE_THROWS_WITH(model.forward(batch.view(2)), Catch::Contains("target 1000"));
  batch.targets[2] = 0;
  std::vector<int32_t> positions = {0, 1, 2, 16};
  TokenBatch bad_positions = batch.view(1);
  bad_positions.positions = positions.data();
  REQUIRE_THROWS_WITH(model.forward(bad_positions), Catch::Contains("max_position_embeddings"));
  std::vector<int32_t> doc_start = {0, 0, 3, 0};
  TokenBatch bad_docs = batch.view(1);
  bad_docs.doc_start = doc_start.data();
  REQUIRE_THROWS_WITH(model.forward(bad_docs), Catch::Contains("doc_start 3"));
  REQUIRE_THROWS_AS(LlamaModel(config, *backend, 1, 17), Error);  // seq_len beyond max positions
}

TEST_CASE("an inference model holds no gradients and computes the training model's loss and logits") {
  auto backend = make_backend("cpu");
  const auto config = tiny_config();
  const int B = 2, T = 5;
  LlamaModel training(config, *backend, B, T);
  LlamaModel inference(config, *backend, B, T, ModelUse::Inference);
  training.init_weights(11);
  inference.init_weights(11);
  CHECK(inference.use() == ModelUse::Inference);
  CHECK(inference.grads().bytes() == 0);
  CHECK(training.grads().bytes() == inference.params().bytes());
  CHECK(inference.activation_bytes() < training.activation_bytes());

  Batch batch = make_batch(B, T, config.vocab_size);
  const double training_loss = training.forward(batch.view(B));
  const double inference_loss = inference.forward(batch.view(B));
  CHECK(training_loss > 0);
  CHECK(inference_loss == training_loss);  // the same ops on the same inputs: bitwise equal
  CHECK(host_copy(*backend, inference.logits()) == host_copy(*backend, training.logits()));
  REQUIRE_THROWS_WITH(inference.backward(1.0f), Catch::Contains("inference"));
  REQUIRE_THROWS_WITH(inference.zero_grads(), Catch::Contains("inference"));

  // One set of block buffers serves every layer: activations do not grow with depth.
  for (int layers : {1, 2, 5}) {
    LlamaConfig deeper = config;
    deeper.num_hidden_layers = layers;
    LlamaModel deep_training(deeper, *backend, B, T);
    LlamaModel deep_inference(deeper, *backend, B, T, ModelUse::Inference);
    CHECK(deep_inference.activation_bytes() == inference.activation_bytes());
    deep_training.init_weights(4);
    deep_inference.init_weights(4);
    INFO(layers << " layers");
    CHECK(deep_inference.forward(batch.view(B)) == deep_training.forward(batch.view(B)));
    CHECK(host_copy(*backend, deep_inference.logits()) == host_copy(*backend, deep_training.logits()));
  }
}

TEST_CASE("activation checkpointing recomputes each block in backward: identical loss and gradients, less memory") {
  auto backend = make_backend("cpu");
  LlamaConfig config = tiny_config();
  config.attention_bias = true;
  const int B = 2, T = 6;
  // Packed documents: the recomputed attention must see the same boundaries.
  std::vector<int32_t> doc_start = {0, 0, 0, 3, 3, 3, 0, 1, 1, 1, 1, 5};
  std::vector<int32_t> positions = {0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 3, 0};

  for (int layers : {1, 3, 4}) {
    INFO(layers << " layers");
    config.num_hidden_layers = layers;
    LlamaModel stored(config, *backend, B, T);
    LlamaModel recomputed(config, *backend, B, T, ModelUse::TrainingRecompute);
    stored.init_weights(21);
    recomputed.init_weights(21);
    stored.zero_grads();
    recomputed.zero_grads();

    // Two micro-batches accumulate, and the hook fires in the same order.
    std::vector<int> stored_order, recomputed_order;
    for (int micro = 0; micro < 2; ++micro) {
      Batch batch = make_batch(B, T, config.vocab_size);
      for (auto& token : batch.tokens) token = (token + 5 * micro) % config.vocab_size;
      TokenBatch view = batch.view(B);
      view.doc_start = doc_start.data();
      view.positions = positions.data();
      const double stored_loss = stored.forward(view);
      CHECK(recomputed.forward(view) == stored_loss);
      stored.backward(0.1f, [&](int l) { stored_order.push_back(l); });
      recomputed.backward(0.1f, [&](int l) { recomputed_order.push_back(l); });
    }
    CHECK(recomputed_order == stored_order);
    // The same ops on the same inputs: bitwise equal gradients.
    CHECK(host_copy(*backend, recomputed.grads().all()) == host_copy(*backend, stored.grads().all()));
    CHECK(backend->sum_squares(stored.grads().all()) > 0);

    // Memory: one set of block buffers plus a stored input per layer (and the re-run's output),
    // each an aligned arena entry.
    const size_t row_bytes = arena_entry_bytes(Shape{int64_t(B) * T, config.hidden_size}, DType::F32);
    if (layers > 1) CHECK(recomputed.activation_bytes() < stored.activation_bytes());
    config.num_hidden_layers = layers + 1;
    LlamaModel deeper(config, *backend, B, T, ModelUse::TrainingRecompute);
    CHECK(deeper.activation_bytes() == recomputed.activation_bytes() + row_bytes);
  }
}

TEST_CASE("the LM head in chunks of rows gives the unchunked loss and gradients, without the full logits") {
  auto backend = make_backend("cpu");
  const LlamaConfig config = tiny_config();
  const int B = 2, T = 6, N = B * T;
  LlamaModel whole(config, *backend, B, T);
  whole.init_weights(5);
  std::vector<double> whole_losses;
  whole.zero_grads();
  for (int micro = 0; micro < 2; ++micro) {
    Batch batch = make_batch(B, T, config.vocab_size);
    batch.targets[size_t(3 + micro)] = -1;  // an ignored target inside a chunk
    whole_losses.push_back(whole.forward(batch.view(B)));
    whole.backward(0.25f);
  }
  const std::vector<float> whole_grads = host_copy(*backend, whole.grads().all());

  for (int64_t chunk : {1, 5, 7}) {  // 5 and 7 leave a shorter last chunk
    INFO("chunks of " << chunk << " rows");
    LlamaModel chunked(config, *backend, B, T, ModelUse::Training, Precision::Fp32, ModelMemory{chunk, false});
    CHECK(chunked.logits_chunk_rows() == chunk);
    CHECK(whole.activation_bytes() - chunked.activation_bytes() ==
          arena_entry_bytes(Shape{N, config.vocab_size}, DType::F32) -
              arena_entry_bytes(Shape{chunk, config.vocab_size}, DType::F32));
    chunked.init_weights(5);
    chunked.zero_grads();
    for (int micro = 0; micro < 2; ++micro) {
      Batch batch = make_batch(B, T, config.vocab_size);
      batch.targets[size_t(3 + micro)] = -1;
      // OpenBLAS picks its GEMM kernel by the row count, so a row's logits may round differently
      // (measured: loss sums 57.55490 vs 57.55490, 1.7e-8 relative, about one float ulp per row).
      const double loss = chunked.forward(batch.view(B));
      CHECK(std::fabs(loss - whole_losses[size_t(micro)]) <= 1e-6 * whole_losses[size_t(micro)]);
      chunked.backward(0.25f);
    }
    REQUIRE_THROWS_WITH(chunked.logits(), Catch::Contains("chunks of"));
    const Batch tokens_only = make_batch(B, T, config.vocab_size);
    TokenBatch no_targets = tokens_only.view(B);
    no_targets.targets = nullptr;
    REQUIRE_THROWS_WITH(chunked.forward(no_targets), Catch::Contains("logits without targets"));
    // Those ulps reach every gradient through dlogits, and the head gradient also sums the rows
    // chunk by chunk. Measured: at most 2.3e-7 of the largest entry (chunks of 7); 1e-6 leaves room
    // for other BLAS builds.
    const std::vector<float> grads = host_copy(*backend, chunked.grads().all());
    float scale = 0, diff = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      scale = std::max(scale, std::fabs(whole_grads[i]));
      diff = std::max(diff, std::fabs(grads[i] - whole_grads[i]));
    }
    CHECK(scale > 0);
    CHECK(diff <= 1e-6f * scale);
  }
}

namespace {

// Every element of a tensor as float, whatever its dtype.
std::vector<float> values_of(Backend& be, const Tensor& t) {
  HostTensor h(t.dtype, t.shape);
  be.copy_to_host(h.bytes.data(), t);
  return h.to_f32();
}

}  // namespace

TEST_CASE("per-layer gradients: one or two block sets reused block to block give each block's full gradient") {
  auto backend = make_backend("cpu");
  LlamaConfig config = tiny_config();
  config.num_hidden_layers = 4;
  config.attention_bias = true;
  const int B = 2, T = 6;
  const Batch batch = make_batch(B, T, config.vocab_size);
  for (bool tied : {false, true})
    for (int sets : {1, 2}) {
      config.tie_word_embeddings = tied;
      INFO((tied ? "tied" : "untied") << " embedding, " << sets << " set(s)");
      LlamaModel full(config, *backend, B, T),
          per_layer(config, *backend, B, T, ModelUse::Training, Precision::Fp32, {0, true, sets});
      full.init_weights(9);
      per_layer.init_weights(9);
      // F32 norms and biases of the final norm and of `sets` blocks; the 2-D gradients share
      // memory: the embedding's with the head's, and with one set (untied) the block set's too.
      // Each group's bytes as an arena lays it out (aligned starts, joined q/k/v and gate/up).
      auto arena_bytes = [&](auto keep) {
        std::vector<NamedShape> layout;
        for (const auto& spec : full.specs())
          if (keep(spec)) layout.push_back({spec.name, spec.shape, spec.joins_previous});
        return Arena(*backend, DType::F32, layout).bytes();
      };
      const int L = config.num_hidden_layers;
      const size_t block_matrices = arena_bytes([](const ParamSpec&p) { return p.layer == 0 && p.shape.rank == 2; }),
                   block_vectors = arena_bytes([](const ParamSpec&p) { return p.layer == 0 && p.shape.rank != 2; }),
                   embedding = arena_bytes([](const ParamSpec&p) { return p.layer < 0; }),
                   head = arena_bytes([&](const ParamSpec&p) { return p.layer == L && p.shape.rank == 2; }),
                   final_norm = arena_bytes([&](const ParamSpec&p) { return p.layer == L && p.shape.rank != 2; });
      const size_t shared = !tied && sets == 1 ? std::max({embedding, head, block_matrices})
                                               : std::max(embedding, head) + sets * block_matrices;
      CHECK(per_layer.gradient_bytes() == final_norm + sets * block_vectors + shared);
      CHECK(full.gradient_bytes() == final_norm + embedding + head + 4 * (block_matrices + block_vectors));

      // Copies a layer's gradients inside the hook, as the fused update reads them: the last moment
      // before the next block's backward (one set) or the one after (two) overwrites them.
      auto layer_grads = [&](LlamaModel& model, int layer) {
        std::vector<float> values;
        for (const auto& spec : model.specs())
          if (spec.layer == layer) {
            const std::vector<float> v = values_of(*backend, model.grad(spec.name));
            values.insert(values.end(), v.begin(), v.end());
          }
        return values;
      };
      full.zero_grads();
      per_layer.zero_grads();
      std::map<int, std::vector<float>> seen;
      CHECK(per_layer.forward(batch.view(B)) == full.forward(batch.view(B)));
      per_layer.backward(0.5f, [&](int l) { seen[l] = layer_grads(per_layer, l); });
      full.backward(0.5f);
      for (int l = -1; l <= config.num_hidden_layers; ++l) {
        INFO("layer " << l);
        CHECK(seen.at(l) == layer_grads(full, l));
      }
      CHECK(std::any_of(seen.at(0).begin(), seen.at(0).end(), [](float g) { return g != 0; }));
    }
}

TEST_CASE("per-layer gradients under bf16_pure: the 2-D ones are bf16, the fp32 gradients rounded once") {
  auto backend = make_backend("cpu");
  LlamaConfig config = tiny_config();
  config.attention_bias = true;
  const int B = 2, T = 6;
  const Batch batch = make_batch(B, T, config.vocab_size);
  LlamaModel whole(config, *backend, B, T, ModelUse::Training, Precision::Bf16Pure),
      per_layer(config, *backend, B, T, ModelUse::Training, Precision::Bf16Pure, {0, true, 1});
  CHECK(whole.matrix_gradient_dtype() == DType::F32);  // micro-batches accumulate in it
  CHECK(per_layer.matrix_gradient_dtype() == DType::BF16);
  whole.init_weights(3);
  per_layer.init_weights(3);
  whole.zero_grads();
  per_layer.zero_grads();
  std::map<std::string, std::vector<float>> seen;
  CHECK(per_layer.forward(batch.view(B)) == whole.forward(batch.view(B)));
  per_layer.backward(0.25f, [&](int l) {
    for (const auto& spec : per_layer.specs())
      if (spec.layer == l) {
        const Tensor g = per_layer.grad(spec.name);
        CHECK(g.dtype == (spec.shape.rank == 2 ? DType::BF16 : DType::F32));
        seen[spec.name] = values_of(*backend, g);
      }
  });
  whole.backward(0.25f);
  // The CPU backend accumulates each GEMM, the embedding's scatter-add and the norms' sums in fp32
  // and rounds once on store: bf16 gradients equal the fp32 ones rounded to nearest even (one head
  // chunk here; more chunks round once per chunk).
  for (const auto& spec : whole.specs()) {
    INFO(spec.name);
    std::vector<float> expected = values_of(*backend, whole.grad(spec.name));
    if (spec.shape.rank == 2)
      for (float& v : expected) v = bf16_to_f32(f32_to_bf16(v));
    CHECK(seen.at(spec.name) == expected);
  }
}

namespace {

// Every element of an arena as float, whatever its dtype.
std::vector<float> arena_values(Backend& be, const Arena& arena) {
  std::vector<float> values;
  for (size_t i = 0; i < arena.count(); ++i) {
    const std::vector<float> v = values_of(be, arena.view(i));
    values.insert(values.end(), v.begin(), v.end());
  }
  return values;
}

// Norm of the difference over the norm of the reference, over every element of two arenas.
double arena_relative_error(Backend& be, const Arena& reference, const Arena& actual) {
  const std::vector<float> want = arena_values(be, reference), got = arena_values(be, actual);
  double diff = 0, norm = 0;
  for (size_t j = 0; j < want.size(); ++j) {
    diff += (double(got[j]) - want[j]) * (double(got[j]) - want[j]);
    norm += double(want[j]) * want[j];
  }
  return std::sqrt(diff / norm);
}

}  // namespace

TEST_CASE("bf16 and bf16_pure: bf16 storage, fp32 gradients, loss and gradients close to fp32") {
  auto backend = make_backend("cpu");
  auto config = tiny_config();
  config.attention_bias = true;
  config.initializer_range = 0.1;
  const int B = 2, T = 8;
  const Batch batch = make_batch(B, T, config.vocab_size);
  LlamaModel reference(config, *backend, B, T);
  reference.init_weights(7);
  reference.zero_grads();
  const double reference_loss = reference.forward(batch.view(B));
  reference.backward(1.0f / (B * T));

  for (Precision precision : {Precision::Bf16, Precision::Bf16Pure}) {
    INFO(precision_name(precision));
    for (ModelUse use : {ModelUse::Training, ModelUse::TrainingRecompute}) {
      LlamaModel model(config, *backend, B, T, use, precision);
      CHECK(model.params().view(0).dtype == (precision == Precision::Bf16Pure ? DType::BF16 : DType::F32));
      CHECK(model.grads().view(0).dtype == DType::F32);
      // Mixed keeps a bf16 copy of every 2-D parameter (2 bytes for each of the master's 4), with
      // at most one arena alignment gap per matrix.
      size_t matrix_bytes = 0, matrices = 0;
      for (size_t i = 0; i < model.specs().size(); ++i)
        if (model.specs()[i].shape.rank == 2) {
          matrix_bytes += model.params().view(i).nbytes();
          ++matrices;
        }
      if (precision == Precision::Bf16) {
        CHECK(model.compute_weight_bytes() >= matrix_bytes / 2);
        CHECK(model.compute_weight_bytes() < matrix_bytes / 2 + matrices * kArenaAlignment);
      } else {
        CHECK(model.compute_weight_bytes() == 0);
      }
      // bf16 activations: about half of fp32's (the fp32 statistics and aux are a small part).
      CHECK(model.activation_bytes() < reference.activation_bytes() * 3 / 5);
      model.init_weights(7);
      model.zero_grads();
      // Two micro-batches: the fp32 gradient accumulates (twice the single-batch gradient).
      double loss = 0;
      for (int m = 0; m < 2; ++m) {
        loss = model.forward(batch.view(B));
        model.backward(0.5f / (B * T));
      }
      // Weights, activations and GEMM operands rounded to 8 significant bits (2^-9 = 2e-3 relative
      // each, through 3 blocks): measured a loss 2.2e-4 relative from fp32 and a gradient error of
      // 9.9e-3 over all parameters, equal for both modes (the initial norm weights 1 and biases 0
      // are exact in bf16). The bounds leave a factor 3 to 10.
      CHECK(std::fabs(loss - reference_loss) < 2e-3 * std::fabs(reference_loss));
      const double grad_error = arena_relative_error(*backend, reference.grads(), model.grads());
      INFO("gradient relative error " << grad_error);
      CHECK(grad_error < 3e-2);
    }
  }
}

TEST_CASE("forward given the loss scale runs the head's backward: the same loss and gradients, bit for bit") {
  auto backend = make_backend("cpu");
  const LlamaConfig config = tiny_config();
  const int B = 2, T = 6;
  for (int64_t chunk : {0, 5}) {  // one chunk, and chunks with a shorter last one
    INFO("logits_chunk_rows " << chunk);
    LlamaModel apart(config, *backend, B, T, ModelUse::Training, Precision::Fp32, ModelMemory{chunk, false}),
        fused(config, *backend, B, T, ModelUse::Training, Precision::Fp32, ModelMemory{chunk, false});
    apart.init_weights(9);
    fused.init_weights(9);
    apart.zero_grads();
    fused.zero_grads();
    for (int micro = 0; micro < 2; ++micro) {
      Batch batch = make_batch(B, T, config.vocab_size);
      batch.targets[size_t(2 + micro)] = -1;
      CHECK(fused.forward(batch.view(B), 0.25f) == apart.forward(batch.view(B)));
      if (chunk == 0) REQUIRE_THROWS_WITH(fused.logits(), Catch::Contains("overwritten by their gradient"));
      apart.backward(0.25f);
      fused.backward(0.25f);
    }
    CHECK(host_copy(*backend, fused.grads().all()) == host_copy(*backend, apart.grads().all()));
    CHECK(backend->sum_squares(fused.grads().all()) > 0);
    fused.forward(make_batch(B, T, config.vocab_size).view(B), 0.25f);
    REQUIRE_THROWS_WITH(fused.backward(0.5f), Catch::Contains("differs from forward's"));
  }
  LlamaModel inference(config, *backend, B, T, ModelUse::Inference);
  REQUIRE_THROWS_WITH(inference.forward(make_batch(B, T, config.vocab_size).view(B), 0.25f),
                      Catch::Contains("built for training"));
}
