// Every transformer op of the CPU backend against PyTorch autograd (tests/reference/llama_ops_ref.py,
// float64, written from the Hugging Face formulas): for random inputs and random output gradients,
// the outputs and every input/parameter gradient must agree to ||ours - ref|| / ||ref|| < 1e-5.
// All ops go to one Python process, so the test costs one torch import.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/relative_error.h"
#include "../cpu/test_util.h"
#include "gum/backend/backend.h"
#include "gum/io/safetensors.h"

using namespace gum;
using gum::testing::DeviceBuffer;
using gum::testing::random_vector;
namespace fs = std::filesystem;

namespace {

// Collects the inputs sent to the reference and our results to compare with its answers.
struct OpCases {
  Backend& backend;
  TensorMap inputs;
  std::map<std::string, std::string> metadata;
  std::map<std::string, std::vector<float>> ours;  // "<op>.out" and "<op>.grad.<input>"
  uint64_t seed = 100;

  // A backend tensor filled with N(0, scale^2) values, also recorded as input "<op>.<name>".
  DeviceBuffer& random_input(std::vector<std::unique_ptr<DeviceBuffer>>& keep, const std::string& key, Shape shape,
                             double scale = 1.0) {
    auto values = random_vector(shape.numel(), seed++, scale);
    return input(keep, key, shape, values);
  }

  template <typename T>
  DeviceBuffer& input(std::vector<std::unique_ptr<DeviceBuffer>>& keep, const std::string& key, Shape shape,
                      const std::vector<T>& values) {
    constexpr DType dtype = std::is_same_v<T, int32_t> ? DType::I32 : DType::F32;
    keep.push_back(std::make_unique<DeviceBuffer>(backend, dtype, shape));
    keep.back()->upload(values);
    HostTensor host(dtype, shape);
    std::memcpy(host.bytes.data(), values.data(), host.bytes.size());
    inputs[key] = std::move(host);
    return *keep.back();
  }

  void result(const std::string& key, const Tensor& t) {
    std::vector<float> values(static_cast<size_t>(t.numel()));
    backend.copy_to_host(values.data(), t);
    ours[key] = std::move(values);
  }
};

// Runs one op's forward and backward on the CPU backend and records everything the reference needs.
using OpCase = std::function<void(OpCases&, std::vector<std::unique_ptr<DeviceBuffer>>&)>;

void embedding_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep) {
  const int64_t N = 40, V = 17, C = 24;
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = int32_t((n * 7 + n / 5) % V);  // repeated rows accumulate
  auto& tokens = c.input(keep, "embedding.tokens", {N}, ids);
  auto& table = c.random_input(keep, "embedding.table", {V, C});
  auto& dout = c.random_input(keep, "embedding.dout", {N, C});
  DeviceBuffer out(c.backend, DType::F32, {N, C}), dtable(c.backend, DType::F32, {V, C});
  c.backend.embedding_forward(out.tensor, tokens.tensor, table.tensor);
  c.backend.embedding_backward(dtable.tensor, dout.tensor, tokens.tensor);
  c.result("embedding.out", out.tensor);
  c.result("embedding.grad.table", dtable.tensor);
}

void rmsnorm_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep) {
  const int64_t N = 30, C = 48;
  const float eps = 1e-5f;
  c.metadata["rmsnorm.eps"] = std::to_string(eps);
  auto& x = c.random_input(keep, "rmsnorm.x", {N, C}, 2.0);
  auto& weight = c.random_input(keep, "rmsnorm.weight", {C});
  auto& dout = c.random_input(keep, "rmsnorm.dout", {N, C});
  DeviceBuffer out(c.backend, DType::F32, {N, C}), rstd(c.backend, DType::F32, {N});
  DeviceBuffer dx(c.backend, DType::F32, {N, C}), dweight(c.backend, DType::F32, {C});
  c.backend.rmsnorm_forward(out.tensor, rstd.tensor, x.tensor, weight.tensor, eps);
  c.backend.rmsnorm_backward(dx.tensor, dweight.tensor, dout.tensor, x.tensor, weight.tensor, rstd.tensor);
  c.result("rmsnorm.out", out.tensor);
  c.result("rmsnorm.grad.x", dx.tensor);
  c.result("rmsnorm.grad.weight", dweight.tensor);
}

void linear_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep) {
  const int64_t N = 33, I = 20, O = 27;
  auto& x = c.random_input(keep, "linear.x", {N, I});
  auto& weight = c.random_input(keep, "linear.weight", {O, I}, 0.3);
  auto& bias = c.random_input(keep, "linear.bias", {O});
  auto& dout = c.random_input(keep, "linear.dout", {N, O});
  DeviceBuffer out(c.backend, DType::F32, {N, O}), dx(c.backend, DType::F32, {N, I});
  DeviceBuffer dweight(c.backend, DType::F32, {O, I}), dbias(c.backend, DType::F32, {O});
  c.backend.linear_forward(out.tensor, x.tensor, weight.tensor, &bias.tensor);
  c.backend.linear_backward(dx.tensor, dweight.tensor, &dbias.tensor, dout.tensor, x.tensor, weight.tensor, false);
  c.result("linear.out", out.tensor);
  c.result("linear.grad.x", dx.tensor);
  c.result("linear.grad.weight", dweight.tensor);
  c.result("linear.grad.bias", dbias.tensor);
}

void rope_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep) {
  const int64_t N = 18, H = 4, KV = 2, D = 16, P = 64, half = D / 2;
  const double theta = 500.0;
  c.metadata["rope.n_head"] = std::to_string(H);
  c.metadata["rope.n_kv_head"] = std::to_string(KV);
  c.metadata["rope.head_dim"] = std::to_string(D);
  c.metadata["rope.theta"] = std::to_string(theta);
  std::vector<float> table(P * half * 2);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double angle = double(p) * std::pow(theta, -2.0 * double(j) / double(D));
      table[(p * half + j) * 2] = float(std::cos(angle));
      table[(p * half + j) * 2 + 1] = float(std::sin(angle));
    }
  DeviceBuffer cos_sin(c.backend, DType::F32, {P, half, 2});
  cos_sin.upload(table);
  std::vector<int32_t> pos(N);
  for (int64_t n = 0; n < N; ++n) pos[n] = int32_t((n * 11 + 3) % P);
  auto& positions = c.input(keep, "rope.positions", {N}, pos);
  auto& qkv = c.random_input(keep, "rope.qkv", {N, (H + 2 * KV) * D});
  auto& dout = c.random_input(keep, "rope.dout", {N, (H + 2 * KV) * D});
  const AttentionShape shape{1, int(N), int(H), int(KV), int(D)};
  c.backend.rope_forward(qkv.tensor, positions.tensor, cos_sin.tensor, shape);  // in place
  c.backend.rope_backward(dout.tensor, positions.tensor, cos_sin.tensor, shape);
  c.result("rope.out", qkv.tensor);
  c.result("rope.grad.qkv", dout.tensor);
}

// Grouped-query causal attention; with `packed`, documents restart inside the sequences, including
// one boundary past position 64 (the CPU kernel works in row blocks).
void attention_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep, const std::string& op,
                    const AttentionShape& s, bool packed) {
  const int64_t N = int64_t(s.batch) * s.seq_len, W = s.qkv_width(), HD = int64_t(s.n_head) * s.head_dim;
  c.metadata[op + ".batch"] = std::to_string(s.batch);
  c.metadata[op + ".n_head"] = std::to_string(s.n_head);
  c.metadata[op + ".n_kv_head"] = std::to_string(s.n_kv_head);
  c.metadata[op + ".head_dim"] = std::to_string(s.head_dim);
  auto& qkv = c.random_input(keep, op + ".qkv", {N, W}, 1.5);
  auto& dout = c.random_input(keep, op + ".dout", {N, HD});
  const Tensor* doc = nullptr;
  if (packed) {
    std::vector<int32_t> starts(N);
    for (int64_t b = 0; b < s.batch; ++b) {
      const std::vector<int32_t> boundaries = b == 0 ? std::vector<int32_t>{0, 9, 70} : std::vector<int32_t>{0, 1, 40};
      for (int64_t t = 0; t < s.seq_len; ++t) {
        int32_t start = 0;
        for (int32_t boundary : boundaries)
          if (boundary <= t) start = boundary;
        starts[b * s.seq_len + t] = start;
      }
    }
    doc = &c.input(keep, op + ".doc_start", {N}, starts).tensor;
  }
  DeviceBuffer out(c.backend, DType::F32, {N, HD}), dqkv(c.backend, DType::F32, {N, W});
  DeviceBuffer aux(c.backend, DType::F32, {int64_t(c.backend.attention_aux_elems(s))});
  c.backend.attention_forward(out.tensor, aux.tensor, qkv.tensor, doc, s);
  c.backend.attention_backward(dqkv.tensor, dout.tensor, out.tensor, aux.tensor, qkv.tensor, doc, s);
  c.result(op + ".out", out.tensor);
  c.result(op + ".grad.qkv", dqkv.tensor);
}

void swiglu_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep) {
  const int64_t N = 21, F = 35;
  auto& gate_up = c.random_input(keep, "swiglu.gate_up", {N, 2 * F}, 3.0);
  auto& dout = c.random_input(keep, "swiglu.dout", {N, F});
  DeviceBuffer out(c.backend, DType::F32, {N, F}), dgate_up(c.backend, DType::F32, {N, 2 * F});
  c.backend.swiglu_forward(out.tensor, gate_up.tensor);
  c.backend.swiglu_backward(dgate_up.tensor, dout.tensor, gate_up.tensor);
  c.result("swiglu.out", out.tensor);
  c.result("swiglu.grad.gate_up", dgate_up.tensor);
}

void cross_entropy_case(OpCases& c, std::vector<std::unique_ptr<DeviceBuffer>>& keep) {
  const int64_t N = 12, V = 3001;
  const float scale = 0.0625f;
  c.metadata["cross_entropy.scale"] = std::to_string(scale);
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = n % 4 == 3 ? (n % 8 == 3 ? -1 : -100) : int32_t((n * 997) % V);
  auto& targets = c.input(keep, "cross_entropy.targets", {N}, ids);
  auto& logits = c.random_input(keep, "cross_entropy.logits", {N, V}, 4.0);
  DeviceBuffer losses(c.backend, DType::F32, {N}), dlogits(c.backend, DType::F32, {N, V});
  c.backend.cross_entropy_forward(losses.tensor, logits.tensor, targets.tensor);
  c.backend.cross_entropy_backward(dlogits.tensor, logits.tensor, targets.tensor, scale);
  c.result("cross_entropy.out", losses.tensor);
  c.result("cross_entropy.grad.logits", dlogits.tensor);
}

// Our float32 result against PyTorch's float64 tensor.
double relative_error(const std::vector<float>& ours, const HostTensor& ref_tensor) {
  std::vector<double> ref(static_cast<size_t>(ref_tensor.numel()));
  REQUIRE(ref_tensor.dtype == DType::F64);
  std::memcpy(ref.data(), ref_tensor.bytes.data(), ref_tensor.bytes.size());
  return gum::testing::relative_error(ref, ours);
}

}  // namespace

TEST_CASE("every CPU transformer op and its gradients match PyTorch autograd") {
  auto backend = make_backend("cpu");
  OpCases cases{*backend, {}, {}, {}};
  std::vector<std::unique_ptr<DeviceBuffer>> keep;
  embedding_case(cases, keep);
  rmsnorm_case(cases, keep);
  linear_case(cases, keep);
  rope_case(cases, keep);
  attention_case(cases, keep, "attention", AttentionShape{2, 13, 3, 1, 8}, false);
  attention_case(cases, keep, "attention_packed", AttentionShape{2, 80, 4, 2, 16}, true);
  swiglu_case(cases, keep);
  cross_entropy_case(cases, keep);

  const fs::path dir = fs::path(GUM_BINARY_DIR) / "test_outputs" / "llama_ops_reference";
  fs::create_directories(dir);
  write_safetensors((dir / "inputs.safetensors").string(), cases.inputs, cases.metadata);
  const std::string command = std::string(GUM_SYSTEM_PYTHON) + " " + GUM_SOURCE_DIR +
                              "/tests/reference/llama_ops_ref.py --inputs " + (dir / "inputs.safetensors").string() +
                              " --out " + (dir / "ref.safetensors").string();
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
  const TensorMap ref = read_safetensors((dir / "ref.safetensors").string());

  REQUIRE(ref.size() == cases.ours.size());
  for (const auto& [key, ours] : cases.ours) {
    const auto it = ref.find(key);
    INFO(key << " is missing from the reference output");
    REQUIRE(it != ref.end());
    const double err = relative_error(ours, it->second);
    INFO(key << ": relative error " << err);
    CHECK(err < 1e-5);
  }
}
