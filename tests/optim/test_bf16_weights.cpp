// Pure bf16 weights (precision bf16_pure): the optimizer's fp32 result is stored into BF16 weights
// by stochastic rounding (unbiased, reproducible), a Kahan compensation (tracks the fp32 result),
// or rounding to nearest (loses updates below half an ulp: the failure the other two avoid).
// Its per-layer gradients are bf16 too: every optimizer reads them into fp32 math.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "gum/backend/arena.h"
#include "gum/core/dtype.h"
#include "gum/optim/optimizer.h"
#include "optim_test_util.h"

using namespace gum;

namespace {

constexpr int64_t kRows = 64, kCols = 64, kSteps = 50;
// A tenth of bf16's ulp at 1 (2^-7) per step: below half the ulp just under 1 (2^-8), so rounding
// to nearest puts every step's result back on 1.
constexpr float kLr = 0.1f / 128;

struct Result {
  std::vector<float> weights;
  TensorMap state;
};

// kSteps of AdamW (no decay) on a [64, 64] BF16 matrix starting at 1 with a constant gradient 1:
// each step's direction is mhat / sqrt(vhat) = 1 (up to eps), so the exact result is 1 - kSteps * kLr.
// With `resume_at` > 0 the state is saved after that step and loaded into a fresh optimizer.
Result train(WeightRounding rounding, uint64_t seed, int64_t resume_at = 0) {
  auto backend = make_backend("cpu");
  Arena weights(*backend, DType::BF16, {{"w", Shape{kRows, kCols}}});
  Arena grads(*backend, DType::F32, {{"w", Shape{kRows, kCols}}});
  backend->fill(weights.all(), 1.0f);
  backend->fill(grads.all(), 1.0f);
  OptimizerContext ctx;
  ctx.backend = backend.get();
  ctx.params = {OptimParam{"w", weights.view("w"), grads.view("w"), ParamKind::Matrix, 0, true}};
  ctx.num_layers = 1;
  ctx.seed = seed;
  ctx.weight_rounding = rounding;
  ctx.config.name = "adamw";
  auto optimizer = make_optimizer("adamw", ctx);
  for (int64_t step = 1; step <= kSteps; ++step) {
    optimizer->step(StepInfo{step, kLr, 1.0f});
    if (step == resume_at) {
      TensorMap saved;
      optimizer->save_state(saved);
      optimizer = make_optimizer("adamw", ctx);
      optimizer->load_state(saved);
    }
  }
  Result r;
  std::vector<uint16_t> bits(static_cast<size_t>(kRows * kCols));
  backend->copy_to_host(bits.data(), weights.view("w"));
  for (uint16_t b : bits) r.weights.push_back(bf16_to_f32(b));
  optimizer->save_state(r.state);
  return r;
}

double mean(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return s / double(v.size());
}

// bf16 = f32 rounded to nearest even, then f32 = bf16 (exact), tensor by tensor: the two arenas
// hold the same tensors, with alignment gaps that differ by dtype.
void round_through_bf16(Backend& backend, const Arena& bf16, const Arena& f32) {
  for (size_t i = 0; i < f32.count(); ++i) {
    backend.copy(bf16.view(i), f32.view(i));
    backend.copy(f32.view(i), bf16.view(i));
  }
}

}  // namespace

TEST_CASE("bf16 weights: nearest loses small updates, stochastic rounding is unbiased, Kahan tracks fp32") {
  const double exact = 1.0 - double(kSteps) * kLr;  // 0.9609375 (eps moves it by 1e-8 relative)

  const Result nearest = train(WeightRounding::Nearest, 1);
  for (float w : nearest.weights) CHECK(w == 1.0f);  // all 50 updates lost

  // Each step adds rounding noise of at most one ulp (2^-8 below 1) with mean 0: per weight a
  // standard deviation of at most sqrt(50) * 2^-8 / 2 = 0.0138, so the mean of 4096 weights has a
  // standard error of at most 2.2e-4; 1.1e-3 is 5 of them (nearest's error is 0.039).
  const Result stochastic = train(WeightRounding::Stochastic, 1);
  CHECK(std::fabs(mean(stochastic.weights) - exact) < 1.1e-3);
  // The weights really are spread over neighbouring bf16 values, not all rounded one way.
  float lowest = 2, highest = 0;
  for (float w : stochastic.weights) {
    lowest = std::min(lowest, w);
    highest = std::max(highest, w);
  }
  CHECK(highest > lowest);
  // Reproducible: the rounding bits are a function of (seed, step, parameter, element).
  CHECK(train(WeightRounding::Stochastic, 1).weights == stochastic.weights);
  CHECK(train(WeightRounding::Stochastic, 2).weights != stochastic.weights);
  // A saved and reloaded optimizer continues with the same bits.
  CHECK(train(WeightRounding::Stochastic, 1, 20).weights == stochastic.weights);

  // Weight plus compensation hold the fp32 result to about 16 bits, so each weight is that
  // result rounded to nearest: within half an ulp (2^-9) of the exact value (plus fp32 rounding).
  const Result kahan = train(WeightRounding::Kahan, 1);
  for (float w : kahan.weights) CHECK(std::fabs(w - exact) <= 0.5 / 256 + 1e-6);
  CHECK(kahan.state.count("w.weight_compensation") == 1);
  CHECK(kahan.state.at("w.weight_compensation").dtype == DType::BF16);
  CHECK(train(WeightRounding::Kahan, 1, 20).weights == kahan.weights);
  CHECK(stochastic.state.count("w.weight_compensation") == 0);
}

TEST_CASE("bf16 weights: every parameter must be BF16") {
  auto backend = make_backend("cpu");
  Arena bf16(*backend, DType::BF16, {{"a", Shape{4, 4}}});
  Arena f32(*backend, DType::F32, {{"b", Shape{4, 4}}, {"ga", Shape{4, 4}}, {"gb", Shape{4, 4}}});
  OptimizerContext ctx;
  ctx.backend = backend.get();
  ctx.params = {OptimParam{"a", bf16.view("a"), f32.view("ga"), ParamKind::Matrix, 0, true},
                OptimParam{"b", f32.view("b"), f32.view("gb"), ParamKind::Matrix, 0, true}};
  ctx.num_layers = 1;
  CHECK_THROWS_WITH(make_optimizer("adamw", ctx), Catch::Contains("'b' is F32"));
}

TEST_CASE("bf16 gradients: every optimizer updates as from fp32 gradients holding the same values") {
  std::vector<std::string> backends = {"cpu"};
  if (cuda_available()) backends.push_back("cuda");  // a GPU, or the emulator in CI
  for (const std::string& backend_name : backends)
    for (const char* name : {"adamw", "muon", "galore_adamw", "plumage", "gum"})
      for (const char* state_dtype : {"fp32", "bf16"}) {
        INFO(backend_name << " backend, " << name << ", state " << state_dtype);
        auto backend = make_backend(backend_name);
        // Two copies of the toy model; `bf16` reads its gradients from a BF16 arena, `f32` from F32
        // gradients holding the same (bf16-rounded) values.
        auto f32 = test::make_param_table(*backend, test::toy_model(), 5);
        auto bf16 = test::make_param_table(*backend, test::toy_model(), 5);
        std::vector<NamedShape> layout;
        for (const OptimParam& p : bf16->params) layout.push_back({p.name, p.param.shape});
        Arena bf16_grads(*backend, DType::BF16, layout);
        for (size_t i = 0; i < bf16->params.size(); ++i) bf16->params[i].grad = bf16_grads.view(i);
        // Refreshes every second step, GUM with a full-rank block (its projected and full paths).
        const OptimizerConfig config = test::optimizer_config(
            name,
            {{"lr", 0.01}, {"rank", 4}, {"update_proj_gap", 2}, {"full_rank_layers", 1}, {"state_dtype", state_dtype}});
        auto f32_optimizer = test::build(*backend, *f32, config, 11);
        auto bf16_optimizer = test::build(*backend, *bf16, config, 11);
        for (int64_t step = 1; step <= 4; ++step) {
          test::fill_gradients(*backend, f32->params, 3, step);
          round_through_bf16(*backend, bf16_grads, f32->grads);
          const StepInfo info{step, 0.01f, 1.0f};
          f32_optimizer->step(info);
          bf16_optimizer->step(info);
        }
        const std::vector<float> want = test::concat_all(*backend, f32->params, false),
                                 got = test::concat_all(*backend, bf16->params, false);
        INFO("relative difference " << test::distance(got, want) / test::norm(want));
        // The cpu backend widens bf16 operands exactly and runs the same fp32 kernels: identical. On
        // cuda, `bf16`'s widened gradient meets the same projectors in the same GEMMs (bf16 ones
        // widened by the GEMM, as `f32`'s are) or its bf16 gradient meets bf16 state elementwise
        // (adamw, muon): identical too.
        CHECK(got == want);
      }
}

TEST_CASE("bf16 weights: every optimizer steps as on fp32 weights rounded to nearest after each step") {
  auto backend = make_backend("cpu");
  for (const char* name : {"adamw", "muon", "galore_adamw", "plumage", "stiefel", "gum", "galore_muon"}) {
    INFO(name);
    // `f32` holds bf16 values in fp32 weights and is rounded to nearest after every step by hand;
    // `bf16` has BF16 weights and the same rounding through the wrapper, whose working copies live
    // in the optimizer's workspace (a matrix's opened at its update's last write).
    auto f32 = test::make_param_table(*backend, test::toy_model(), 5);
    auto bf16 = test::make_param_table(*backend, test::toy_model(), 5);
    std::vector<NamedShape> layout;
    for (const OptimParam& p : f32->params) layout.push_back({p.name, p.param.shape});
    Arena bf16_weights(*backend, DType::BF16, layout);
    round_through_bf16(*backend, bf16_weights, f32->values);
    const std::vector<float> initial = test::concat_all(*backend, f32->params, false);
    OptimizerContext ctx;
    ctx.backend = backend.get();
    ctx.params = bf16->params;
    for (size_t i = 0; i < ctx.params.size(); ++i) ctx.params[i].param = bf16_weights.view(i);
    ctx.num_layers = bf16->num_layers;
    ctx.config =
        test::optimizer_config(name, {{"lr", 0.01}, {"rank", 4}, {"update_proj_gap", 2}, {"full_rank_layers", 1}});
    ctx.seed = 11;
    ctx.weight_rounding = WeightRounding::Nearest;
    auto bf16_optimizer = make_optimizer(name, ctx);
    auto f32_optimizer = test::build(*backend, *f32, ctx.config, 11);
    Arena rounded(*backend, DType::BF16, layout);
    for (int64_t step = 1; step <= 4; ++step) {
      test::fill_gradients(*backend, f32->params, 3, step);
      backend->copy(bf16->grads.all(), f32->grads.all());
      const StepInfo info{step, 0.01f, 1.0f};
      f32_optimizer->step(info);
      bf16_optimizer->step(info);
      round_through_bf16(*backend, rounded, f32->values);
    }
    const std::vector<float> want = test::concat_all(*backend, f32->params, false);
    std::vector<float> got;
    for (size_t i = 0; i < layout.size(); ++i) {
      HostTensor h(DType::BF16, layout[i].shape);
      backend->copy_to_host(h.bytes.data(), bf16_weights.view(i));
      const std::vector<float> v = h.to_f32();
      got.insert(got.end(), v.begin(), v.end());
    }
    CHECK(got == want);     // the same fp32 kernels on the same values, rounded the same way
    CHECK(got != initial);  // the steps moved them
  }
}
