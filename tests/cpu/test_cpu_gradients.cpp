// Every transformer op's backward against central finite differences, in double precision on
// the very kernels CpuBackend runs in float. Each check takes the scalar loss
// L = sum(probe * forward(inputs)) for a random probe, so backward(dout = probe) must equal dL/dinput.
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "../../src/backend/cpu/kernels.h"
#include "test_util.h"

using gum::testing::random_vector;
using Vec = std::vector<double>;
namespace k = gum::cpu;

namespace {

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of loss() with respect to every element of `input`, compared with `analytic`.
void require_matches_finite_differences(Vec& input, const Vec& analytic, const std::function<double()>& loss,
                                        const std::string& what) {
  REQUIRE(input.size() == analytic.size());
  const double h = 1e-5;
  double worst = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    const double saved = input[i];
    input[i] = saved + h;
    const double up = loss();
    input[i] = saved - h;
    const double down = loss();
    input[i] = saved;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::fabs(numeric - analytic[i]) / (1.0 + std::fabs(numeric)));
  }
  INFO(what << ": worst relative difference " << worst);
  REQUIRE(worst < 1e-7);
}

}  // namespace

TEST_CASE("embedding backward matches finite differences (repeated tokens)") {
  const int64_t N = 6, C = 5, V = 4;
  std::vector<int32_t> tokens = {0, 3, 1, 3, 3, 2};
  Vec table = random_vector<double>(V * C, 1), probe = random_vector<double>(N * C, 2);
  Vec out(N * C);
  auto loss = [&] {
    k::embedding_forward(out.data(), tokens.data(), table.data(), N, C);
    return dot(out, probe);
  };
  Vec dtable(V * C, 0.0);
  k::embedding_backward(dtable.data(), probe.data(), tokens.data(), N, C);
  require_matches_finite_differences(table, dtable, loss, "dtable");
}

TEST_CASE("rmsnorm backward matches finite differences and accumulates") {
  const int64_t N = 4, C = 7;
  Vec x = random_vector<double>(N * C, 3), w = random_vector<double>(C, 4), probe = random_vector<double>(N * C, 5);
  Vec out(N * C), rstd(N);
  auto loss = [&] {
    k::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
    return dot(out, probe);
  };
  loss();
  Vec initial_dx = random_vector<double>(N * C, 6), dx = initial_dx, dw(C, 0.25);
  k::rmsnorm_backward(dx.data(), dw.data(), probe.data(), x.data(), w.data(), rstd.data(), N, C);
  for (size_t i = 0; i < dx.size(); ++i) dx[i] -= initial_dx[i];  // the op adds into dx
  for (auto& g : dw) g -= 0.25;                                   // and into dweight
  require_matches_finite_differences(x, dx, loss, "dx");
  require_matches_finite_differences(w, dw, loss, "dweight");
}

TEST_CASE("linear backward with bias matches finite differences") {
  const int64_t N = 5, I = 4, O = 3;
  Vec x = random_vector<double>(N * I, 7), w = random_vector<double>(O * I, 8), b = random_vector<double>(O, 9);
  Vec probe = random_vector<double>(N * O, 10), out(N * O);
  auto loss = [&] {
    k::linear_forward(out.data(), x.data(), w.data(), b.data(), N, I, O);
    return dot(out, probe);
  };
  Vec dx(N * I, 99.0), dw(O * I, 0.0), db(O, 0.0);
  k::linear_backward(dx.data(), dw.data(), db.data(), probe.data(), x.data(), w.data(), N, I, O, false);
  require_matches_finite_differences(x, dx, loss, "dx");
  require_matches_finite_differences(w, dw, loss, "dweight");
  require_matches_finite_differences(b, db, loss, "dbias");
  // accumulate_dx adds a second copy of the same gradient.
  Vec dx2 = dx;
  k::linear_backward(dx2.data(), dw.data(), db.data(), probe.data(), x.data(), w.data(), N, I, O, true);
  for (size_t i = 0; i < dx.size(); ++i) REQUIRE(dx2[i] == Approx(2 * dx[i]));
}

TEST_CASE("rope backward (inverse rotation) matches finite differences and leaves v untouched") {
  const int64_t N = 3, H = 2, KV = 1, D = 6, P = 8, W = (H + 2 * KV) * D;
  std::vector<int32_t> positions = {5, 0, 7};
  Vec cos_sin(P * D);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < D / 2; ++j) {
      const double angle = p * std::pow(100.0, -2.0 * j / D);
      cos_sin[(p * D / 2 + j) * 2] = std::cos(angle);
      cos_sin[(p * D / 2 + j) * 2 + 1] = std::sin(angle);
    }
  Vec qkv = random_vector<double>(N * W, 11), probe = random_vector<double>(N * W, 12);
  auto loss = [&] {
    Vec rotated = qkv;
    k::rope_apply(rotated.data(), positions.data(), cos_sin.data(), N, H, KV, D, false);
    return dot(rotated, probe);
  };
  Vec rotated = qkv;
  k::rope_apply(rotated.data(), positions.data(), cos_sin.data(), N, H, KV, D, false);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = (H + KV) * D; c < W; ++c) REQUIRE(rotated[n * W + c] == qkv[n * W + c]);
  // Position 0 is the identity; rotations keep each pair's norm.
  for (int64_t c = 0; c < W; ++c) REQUIRE(rotated[W + c] == Approx(qkv[W + c]));
  Vec dqkv = probe;
  k::rope_apply(dqkv.data(), positions.data(), cos_sin.data(), N, H, KV, D, true);
  require_matches_finite_differences(qkv, dqkv, loss, "dqkv");
}

static void check_attention_gradient(const k::AttentionDims& s, const std::vector<int32_t>* doc_start, uint64_t seed) {
  const int64_t N = s.B * s.T, W = s.width();
  Vec qkv = random_vector<double>(N * W, seed), probe = random_vector<double>(N * s.H * s.D, seed + 1);
  Vec out(N * s.H * s.D), probs(s.B * s.H * s.T * s.T);
  const int32_t* starts = doc_start ? doc_start->data() : nullptr;
  auto loss = [&] {
    k::attention_forward(out.data(), probs.data(), qkv.data(), starts, s);
    return dot(out, probe);
  };
  loss();
  Vec dqkv(N * W, 123.0);  // overwritten
  k::attention_backward(dqkv.data(), probe.data(), probs.data(), qkv.data(), starts, s);
  require_matches_finite_differences(qkv, dqkv, loss, "dqkv");
}

TEST_CASE("attention backward (grouped-query, causal) matches finite differences") {
  check_attention_gradient({2, 4, 4, 2, 3}, nullptr, 20);
  check_attention_gradient({1, 3, 2, 2, 2}, nullptr, 22);  // plain multi-head
}

TEST_CASE("attention with packed documents (doc_start) matches finite differences and masks") {
  const k::AttentionDims s{2, 5, 2, 1, 4};
  // Sequence 0: documents [0,2) and [2,5); sequence 1: [0,1), [1,4), [4,5).
  std::vector<int32_t> doc_start = {0, 0, 2, 2, 2, 0, 1, 1, 1, 4};
  check_attention_gradient(s, &doc_start, 30);
  // A token never sees an earlier document: changing document 1 of sequence 0 leaves
  // the outputs of document 2 unchanged.
  const int64_t N = s.B * s.T, W = s.width();
  Vec qkv = random_vector<double>(N * W, 31), out(N * s.H * s.D), probs(s.B * s.H * s.T * s.T);
  k::attention_forward(out.data(), probs.data(), qkv.data(), doc_start.data(), s);
  Vec before = out;
  for (int64_t c = 0; c < W; ++c) qkv[0 * W + c] += 1.0, qkv[1 * W + c] -= 0.5;
  k::attention_forward(out.data(), probs.data(), qkv.data(), doc_start.data(), s);
  for (int64_t i = 2 * s.H * s.D; i < N * s.H * s.D; ++i) REQUIRE(out[i] == before[i]);
}

TEST_CASE("swiglu backward matches finite differences") {
  const int64_t N = 3, F = 5;
  Vec gate_up = random_vector<double>(N * 2 * F, 40, 2.0), probe = random_vector<double>(N * F, 41), out(N * F);
  auto loss = [&] {
    k::swiglu_forward(out.data(), gate_up.data(), N, F);
    return dot(out, probe);
  };
  Vec dgate_up(N * 2 * F, 7.0);
  k::swiglu_backward(dgate_up.data(), probe.data(), gate_up.data(), N, F);
  require_matches_finite_differences(gate_up, dgate_up, loss, "dgate_up");
}

TEST_CASE("cross-entropy backward with ignored targets matches finite differences") {
  const int64_t N = 5, V = 7;
  std::vector<int32_t> targets = {3, -1, 0, 6, -100};
  Vec logits = random_vector<double>(N * V, 50, 3.0), losses(N);
  const double scale = 0.37;
  auto loss = [&] {
    k::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
    double total = 0;
    for (double l : losses) total += l;
    return scale * total;
  };
  loss();
  REQUIRE(losses[1] == 0.0);
  REQUIRE(losses[4] == 0.0);
  // Against the textbook formula for one row.
  double denom = 0;
  for (int64_t i = 0; i < V; ++i) denom += std::exp(logits[i]);
  REQUIRE(losses[0] == Approx(std::log(denom) - logits[3]).epsilon(1e-12));
  Vec dlogits(N * V);
  k::cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), N, V, scale);
  for (int64_t i = 0; i < V; ++i) REQUIRE(dlogits[1 * V + i] == 0.0);
  require_matches_finite_differences(logits, dlogits, loss, "dlogits");
  // In place (dlogits aliasing logits) gives the same numbers.
  Vec in_place = logits;
  k::cross_entropy_backward(in_place.data(), in_place.data(), targets.data(), N, V, scale);
  REQUIRE(in_place == dlogits);
}
