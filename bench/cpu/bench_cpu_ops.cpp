// The CPU backend's per-op playground (llm.c dev/cuda style): times every transformer op's
// forward and backward and a whole LlamaModel step (forward + backward + AdamW) at a preset's
// shapes, prints a table and writes JSON that bench/cpu/torch_ops.py reads to time the same
// work in PyTorch and print both side by side (see bench/cpu/README.md).
//
//   gum_bench_cpu_ops --model llama_20m --batch 8 --seq-len 256 --threads 2 --json ours.json
//
// Each entry is the median of --repeats timed calls after --warmup untimed ones: the machine
// this was written on has 2 cores shared with other work, and the median is the robust number.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/model/config.h"
#include "gum/model/llama.h"

using namespace gum;

namespace {

struct Options {
  std::string model = "llama_tiny";
  int batch = 8, seq_len = 256, threads = 0, warmup = 2, repeats = 10, step_repeats = 5;
  std::string json_path;
  std::string only;  // run only entries whose name contains this
};

Options parse_options(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage_error("option ", argv[i], " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model")
      o.model = value(i);
    else if (arg == "--batch")
      o.batch = std::stoi(value(i));
    else if (arg == "--seq-len")
      o.seq_len = std::stoi(value(i));
    else if (arg == "--threads")
      o.threads = std::stoi(value(i));
    else if (arg == "--warmup")
      o.warmup = std::stoi(value(i));
    else if (arg == "--repeats")
      o.repeats = std::stoi(value(i));
    else if (arg == "--step-repeats")
      o.step_repeats = std::stoi(value(i));
    else if (arg == "--json")
      o.json_path = value(i);
    else if (arg == "--only")
      o.only = value(i);
    else if (arg == "--help" || arg == "-h") {
      std::printf(
          "gum_bench_cpu_ops [--model PRESET] [--batch B] [--seq-len T] [--threads N] [--warmup W]\n"
          "                  [--repeats R] [--step-repeats S] [--json OUT] [--only SUBSTRING]\n");
      std::exit(0);
    } else {
      usage_error("unknown option ", arg, " (see --help)");
    }
  }
  if (o.batch <= 0 || o.seq_len <= 0 || o.repeats <= 0 || o.step_repeats <= 0)
    usage_error("--batch, --seq-len, --repeats and --step-repeats must be positive");
  return o;
}

// `setup` runs untimed before every call of `body`.
double median_ms(const std::function<void()>& body, int warmup, int repeats, const std::function<void()>& setup = {}) {
  for (int i = 0; i < warmup; ++i) {
    if (setup) setup();
    body();
  }
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    if (setup) setup();
    const auto begin = std::chrono::steady_clock::now();
    body();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// A zero-initialised backend buffer that frees itself.
struct Buffer {
  Backend& backend;
  Tensor tensor;
  Buffer(Backend& b, DType dtype, Shape shape)
      : backend(b), tensor(b.allocate(size_t(shape.numel()) * dtype_size(dtype)), dtype, b.device(), shape) {}
  ~Buffer() { backend.release(tensor.data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

struct Bench {
  Options options;
  Backend& backend;
  nlohmann::json rows = nlohmann::json::array();
  uint64_t next_stream = 0;

  bool wanted(const std::string& name) const {
    return options.only.empty() || name.find(options.only) != std::string::npos;
  }

  void record(const std::string& op, const std::string& pass, double ms) {
    std::printf("%-18s %-9s %10.3f ms\n", op.c_str(), pass.c_str(), ms);
    std::fflush(stdout);
    rows.push_back({{"op", op}, {"pass", pass}, {"ms", ms}});
  }

  void time(const std::string& op, const std::string& pass, const std::function<void()>& body, int repeats = 0) {
    record(op, pass, median_ms(body, options.warmup, repeats > 0 ? repeats : options.repeats));
  }

  void randomize(const Tensor& t, float std = 1.0f) { backend.fill_normal(t, 77, next_stream++, 0.0f, std); }
};

void upload_ids(Backend& backend, const Tensor& t, int limit, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<int32_t> ids(static_cast<size_t>(t.numel()));
  for (auto& id : ids) id = int32_t(rng() % uint32_t(limit));
  backend.copy_from_host(t, ids.data());
}

void bench_linear(Bench& b, const std::string& name, int64_t N, int64_t in, int64_t out) {
  if (!b.wanted(name)) return;
  Backend& be = b.backend;
  Buffer x(be, DType::F32, {N, in}), w(be, DType::F32, {out, in}), y(be, DType::F32, {N, out});
  Buffer dx(be, DType::F32, {N, in}), dw(be, DType::F32, {out, in});
  b.randomize(x.tensor);
  b.randomize(w.tensor, float(1.0 / std::sqrt(double(in))));
  b.time(name, "forward", [&] { be.linear_forward(y.tensor, x.tensor, w.tensor, nullptr); });
  b.randomize(y.tensor);
  b.time(name, "backward",
         [&] { be.linear_backward(dx.tensor, dw.tensor, nullptr, y.tensor, x.tensor, w.tensor, false); });
}

void bench_ops(Bench& b, const LlamaConfig& c) {
  Backend& be = b.backend;
  const int64_t B = b.options.batch, T = b.options.seq_len, N = B * T;
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, D = c.attention_head_dim();
  const int64_t H = c.num_attention_heads, KV = c.kv_heads(), W = (H + 2 * KV) * D;
  const AttentionShape shape{int(B), int(T), int(H), int(KV), int(D)};

  if (b.wanted("embedding")) {
    Buffer tokens(be, DType::I32, {N}), table(be, DType::F32, {V, C}), out(be, DType::F32, {N, C});
    Buffer dtable(be, DType::F32, {V, C});
    upload_ids(be, tokens.tensor, int(V), 1);
    b.randomize(table.tensor);
    b.time("embedding", "forward", [&] { be.embedding_forward(out.tensor, tokens.tensor, table.tensor); });
    b.time("embedding", "backward", [&] { be.embedding_backward(dtable.tensor, out.tensor, tokens.tensor); });
  }
  if (b.wanted("rmsnorm")) {
    Buffer x(be, DType::F32, {N, C}), w(be, DType::F32, {C}), y(be, DType::F32, {N, C}), rstd(be, DType::F32, {N});
    Buffer dx(be, DType::F32, {N, C}), dw(be, DType::F32, {C});
    b.randomize(x.tensor);
    be.fill(w.tensor, 1.0f);
    b.time("rmsnorm", "forward", [&] { be.rmsnorm_forward(y.tensor, rstd.tensor, x.tensor, w.tensor, 1e-6f); });
    b.time("rmsnorm", "backward",
           [&] { be.rmsnorm_backward(dx.tensor, dw.tensor, y.tensor, x.tensor, w.tensor, rstd.tensor); });
  }
  bench_linear(b, "linear qkv", N, C, W);
  bench_linear(b, "linear o", N, H * D, C);
  bench_linear(b, "linear gate_up", N, C, 2 * F);
  bench_linear(b, "linear down", N, F, C);
  bench_linear(b, "linear head", N, C, V);
  if (b.wanted("rope")) {
    Buffer qkv(be, DType::F32, {N, W}), positions(be, DType::I32, {N}), cos_sin(be, DType::F32, {T, D / 2, 2});
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) pos[i] = int32_t(i % T);
    be.copy_from_host(positions.tensor, pos.data());
    b.randomize(qkv.tensor);
    b.randomize(cos_sin.tensor);
    b.time("rope", "forward", [&] { be.rope_forward(qkv.tensor, positions.tensor, cos_sin.tensor, shape); });
    b.time("rope", "backward", [&] { be.rope_backward(qkv.tensor, positions.tensor, cos_sin.tensor, shape); });
  }
  if (b.wanted("attention")) {
    Buffer qkv(be, DType::F32, {N, W}), out(be, DType::F32, {N, H * D}), dqkv(be, DType::F32, {N, W});
    Buffer aux(be, DType::F32, {int64_t(be.attention_aux_elems(shape))}), dout(be, DType::F32, {N, H * D});
    b.randomize(qkv.tensor);
    b.randomize(dout.tensor);
    b.time("attention", "forward", [&] { be.attention_forward(out.tensor, aux.tensor, qkv.tensor, nullptr, shape); });
    b.time("attention", "backward", [&] {
      be.attention_backward(dqkv.tensor, dout.tensor, out.tensor, aux.tensor, qkv.tensor, nullptr, shape);
    });
  }
  if (b.wanted("swiglu")) {
    Buffer gate_up(be, DType::F32, {N, 2 * F}), out(be, DType::F32, {N, F}), dgate_up(be, DType::F32, {N, 2 * F});
    b.randomize(gate_up.tensor);
    b.time("swiglu", "forward", [&] { be.swiglu_forward(out.tensor, gate_up.tensor); });
    b.time("swiglu", "backward", [&] { be.swiglu_backward(dgate_up.tensor, out.tensor, gate_up.tensor); });
  }
  if (b.wanted("cross_entropy")) {
    Buffer logits(be, DType::F32, {N, V}), dlogits(be, DType::F32, {N, V}), targets(be, DType::I32, {N});
    Buffer losses(be, DType::F32, {N});
    b.randomize(logits.tensor);
    upload_ids(be, targets.tensor, int(V), 2);
    b.time("cross_entropy", "forward", [&] { be.cross_entropy_forward(losses.tensor, logits.tensor, targets.tensor); });
    b.time("cross_entropy", "backward",
           [&] { be.cross_entropy_backward(dlogits.tensor, logits.tensor, targets.tensor, 1.0f / float(N)); });
  }
}

// The whole training step the trainer runs for one micro-batch: forward, backward, AdamW on
// every parameter (one fused update over the parameter arena, as the per-layer hook would do).
void bench_model(Bench& b, const LlamaConfig& c) {
  Backend& be = b.backend;
  const int B = b.options.batch, T = b.options.seq_len;
  const int64_t N = int64_t(B) * T;
  LlamaModel model(c, be, B, T);
  model.init_weights(1234);
  const Tensor params = model.params().all(), grads = model.grads().all();
  Buffer m(be, DType::F32, params.shape), v(be, DType::F32, params.shape);
  std::vector<int32_t> tokens(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  std::mt19937 rng(3);
  for (int64_t i = 0; i < N; ++i) tokens[i] = int32_t(rng() % uint32_t(c.vocab_size));
  for (int64_t i = 0; i < N; ++i) targets[i] = i + 1 < N ? tokens[i + 1] : 0;
  TokenBatch batch;
  batch.tokens = tokens.data();
  batch.targets = targets.data();
  batch.batch = B;
  AdamWArgs adam;
  adam.lr = 1e-3f;
  adam.weight_decay = 0.0f;
  const float loss_scale = 1.0f / float(N);
  int64_t step = 0;

  if (b.wanted("adamw")) {
    b.time("adamw", "update", [&] {
      adam.step = ++step;
      be.adamw_update(params, grads, m.tensor, v.tensor, adam);
    });
  }
  if (!b.wanted("model")) return;
  b.time(
      "model", "forward", [&] { model.forward(batch); }, b.options.step_repeats);
  // Backward alone: each timed call follows an untimed forward (backward consumes the logits).
  b.record("model", "backward",
           median_ms([&] { model.backward(loss_scale); }, b.options.warmup, b.options.step_repeats,
                     [&] { model.forward(batch); }));
  b.time(
      "model", "step",
      [&] {
        model.zero_grads();
        model.forward(batch);
        model.backward(loss_scale);
        adam.step = ++step;
        be.adamw_update(params, grads, m.tensor, v.tensor, adam);
      },
      b.options.step_repeats);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse_options(argc, argv);
    if (options.threads > 0) omp_set_num_threads(options.threads);
    const LlamaConfig config = llama_preset(options.model);
    auto backend = make_backend("cpu");
    std::printf("gum_train CPU ops: %s, batch %d, seq_len %d, %d OpenMP threads, median of %d (step %d)\n",
                options.model.c_str(), options.batch, options.seq_len, omp_get_max_threads(), options.repeats,
                options.step_repeats);
    Bench bench{options, *backend};
    bench_ops(bench, config);
    bench_model(bench, config);
    if (!options.json_path.empty()) {
      nlohmann::json doc;
      doc["impl"] = "gum_train";
      doc["model"] = options.model;
      doc["batch"] = options.batch;
      doc["seq_len"] = options.seq_len;
      doc["threads"] = omp_get_max_threads();
      doc["repeats"] = options.repeats;
      doc["step_repeats"] = options.step_repeats;
      doc["config"] = {{"hidden_size", config.hidden_size},
                       {"intermediate_size", config.intermediate_size},
                       {"num_hidden_layers", config.num_hidden_layers},
                       {"num_attention_heads", config.num_attention_heads},
                       {"num_key_value_heads", config.kv_heads()},
                       {"head_dim", config.attention_head_dim()},
                       {"vocab_size", config.vocab_size},
                       {"rms_norm_eps", config.rms_norm_eps},
                       {"rope_theta", config.rope_theta},
                       {"tie_word_embeddings", config.tie_word_embeddings}};
      doc["ops"] = bench.rows;
      std::ofstream(options.json_path) << doc.dump(2) << "\n";
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "gum_bench_cpu_ops: %s\n", e.what());
    return 2;
  }
}
