// AdamW through make_optimizer against a step computed here by hand (Loshchilov & Hutter 2019,
// Alg. 2): m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², m̂ = m/(1−β1^k), v̂ = v/(1−β2^k),
// W ← W − η (m̂ / (√v̂ + ε) + λ W), decay only where the parameter takes it. Gradients from 1 down
// to 1e-9, so ε = 1e-8 outside the square root is what decides the small ones.
#include <catch2/catch.hpp>
#include <cmath>

#include "optim_test_util.h"

using namespace gum;
using namespace gum::test;

namespace {

// What a wrong AdamW would compute instead; each must miss the bound by far (checked below).
enum class Variant { Correct, EpsInsideSqrt, NoBiasCorrection, CoupledDecay, DecayEverywhere };

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8, kDecay = 0.1;
constexpr int kSteps = 3;
const double kLr[kSteps] = {0.1, 0.08, 0.06};

// Gradients of step k for one tensor: magnitudes 1 ... 1e-9, signs changing between steps, ten
// times larger at step 2 so the moments' weighting of the steps (β1, β2) shows in the result.
std::vector<float> gradient(size_t count, int k) {
  constexpr float kMagnitudes[] = {1.0f, 0.25f, 1e-3f, 1e-6f, 1e-8f, 1e-9f};
  std::vector<float> g(count);
  for (size_t e = 0; e < count; ++e)
    g[e] = kMagnitudes[e % 6] * ((e + k) % 3 == 0 ? -1.0f : 1.0f) * (k == 2 ? 10.0f : 1.0f);
  return g;
}

std::vector<double> by_hand(const std::vector<float>& w0, bool decays, Variant variant) {
  std::vector<double> w(w0.begin(), w0.end()), m(w.size(), 0.0), v(w.size(), 0.0);
  const bool apply_decay = decays || variant == Variant::DecayEverywhere;
  for (int k = 1; k <= kSteps; ++k) {
    const std::vector<float> g = gradient(w.size(), k);
    for (size_t e = 0; e < w.size(); ++e) {
      double ge = g[e];
      if (variant == Variant::CoupledDecay && apply_decay) ge += kDecay * w[e];  // L2 in the gradient
      m[e] = kBeta1 * m[e] + (1 - kBeta1) * ge;
      v[e] = kBeta2 * v[e] + (1 - kBeta2) * ge * ge;
      const bool corrected = variant != Variant::NoBiasCorrection;
      const double mhat = corrected ? m[e] / (1 - std::pow(kBeta1, k)) : m[e];
      const double vhat = corrected ? v[e] / (1 - std::pow(kBeta2, k)) : v[e];
      const double direction =
          variant == Variant::EpsInsideSqrt ? mhat / std::sqrt(vhat + kEps) : mhat / (std::sqrt(vhat) + kEps);
      const double decay = apply_decay && variant != Variant::CoupledDecay ? kDecay * w[e] : 0.0;
      w[e] -= kLr[k - 1] * (direction + decay);
    }
  }
  return w;
}

// max over elements of |a − b| / |b − w0|: each element's error relative to its own update.
double worst_relative_to_update(const std::vector<double>& a, const std::vector<double>& b,
                                const std::vector<float>& w0) {
  double worst = 0;
  for (size_t e = 0; e < a.size(); ++e) worst = std::max(worst, std::abs(a[e] - b[e]) / std::abs(b[e] - w0[e]));
  return worst;
}

}  // namespace

TEST_CASE("adamw matches a hand-computed run: eps outside the root, exact bias correction, decoupled decay",
          "[optim][adamw]") {
  auto backend = make_backend("cpu");
  // A norm weight (no decay) and a head matrix (decay), as the trainer marks them.
  auto table = make_param_table(*backend,
                                {{"model.layers.0.input_layernorm.weight", Shape{12}, ParamKind::Norm, 0, false},
                                 {"lm_head.weight", Shape{3, 6}, ParamKind::Head, 1, true}},
                                1);
  OptimizerConfig config;  // β1, β2 and ε are the defaults: the literals above must be them
  config.name = "adamw";
  config.lr = 0.1f;
  config.weight_decay = static_cast<float>(kDecay);
  auto optimizer = build(*backend, *table, config, 0);
  std::vector<std::vector<float>> initial;
  for (const auto& p : table->params) initial.push_back(to_host(*backend, p.param));
  for (int k = 1; k <= kSteps; ++k) {
    for (const auto& p : table->params) from_host(*backend, p.grad, gradient(static_cast<size_t>(p.grad.numel()), k));
    optimizer->step(StepInfo{k, static_cast<float>(kLr[k - 1]), static_cast<float>(kLr[k - 1] / kLr[0])});
  }
  // Measured 2.6e-6 (norm weight) and 1.2e-5 (head): the float32 weights are rounded at every
  // step (half an ulp, up to 1.2e-7 for weights up to 2.5) against double, and the smallest total
  // update of an element is about 0.03. Every wrong variant misses by 1e-2 or more on some element,
  // checked below against 100x the bound.
  const double bound = 1e-4;
  for (size_t i = 0; i < table->params.size(); ++i) {
    const OptimParam& p = table->params[i];
    INFO(p.name);
    const auto out = to_host(*backend, p.param);
    const std::vector<double> ours(out.begin(), out.end());
    const std::vector<double> expected = by_hand(initial[i], p.weight_decay, Variant::Correct);
    const double error = worst_relative_to_update(ours, expected, initial[i]);
    INFO("worst element error " << error << " of its update");
    CHECK(error < bound);
    for (Variant wrong :
         {Variant::EpsInsideSqrt, Variant::NoBiasCorrection, Variant::CoupledDecay, Variant::DecayEverywhere}) {
      if (!p.weight_decay && wrong == Variant::CoupledDecay) continue;    // nothing to couple
      if (p.weight_decay && wrong == Variant::DecayEverywhere) continue;  // the same as correct
      INFO("variant " << static_cast<int>(wrong));
      CHECK(worst_relative_to_update(by_hand(initial[i], p.weight_decay, wrong), expected, initial[i]) > 100 * bound);
    }
  }
}
