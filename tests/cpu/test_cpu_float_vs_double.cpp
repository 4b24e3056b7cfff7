// CpuBackend's float ops (OpenMP-parallel, with argument checks) equal the double-precision
// kernels (serial in this test binary) within fp32 tolerance: ||float - double|| / ||double|| < 1e-5.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "../../src/backend/cpu/kernels.h"
#include "gum/core/error.h"
#include "test_util.h"

using namespace gum;
using gum::testing::DeviceBuffer;
using gum::testing::random_vector;
using Vec = std::vector<double>;
namespace k = gum::cpu;

namespace {

std::vector<float> to_float(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }

void require_close(const std::vector<float>& actual, const Vec& expected, const char* what, double tol = 1e-5) {
  REQUIRE(actual.size() == expected.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  const double rel = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
  INFO(what << ": relative error " << rel);
  REQUIRE(rel < tol);
}

// A backend buffer holding `values` (rounded to float); `exact` keeps the rounded values in double.
struct Input {
  DeviceBuffer buffer;
  Vec exact;
  Input(Backend& b, Shape shape, const Vec& values) : buffer(b, DType::F32, shape) {
    auto f = to_float(values);
    buffer.upload(f);
    exact.assign(f.begin(), f.end());
  }
  Tensor& t() { return buffer.tensor; }
};

struct IntInput {
  DeviceBuffer buffer;
  std::vector<int32_t> values;
  IntInput(Backend& b, const std::vector<int32_t>& v) : buffer(b, DType::I32, Shape{int64_t(v.size())}), values(v) {
    buffer.upload(v);
  }
  Tensor& t() { return buffer.tensor; }
};

}  // namespace

TEST_CASE("embedding float op equals the double kernel and rejects bad ids") {
  auto backend = make_backend("cpu");
  const int64_t N = 300, C = 130, V = 17;
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = int32_t((n * 7) % V);
  IntInput tokens(*backend, ids);
  Input table(*backend, Shape{V, C}, random_vector<double>(V * C, 1)),
      dout(*backend, Shape{N, C}, random_vector<double>(N * C, 2));
  DeviceBuffer out(*backend, DType::F32, Shape{N, C}), dtable(*backend, DType::F32, Shape{V, C});
  backend->embedding_forward(out.tensor, tokens.t(), table.t());
  backend->embedding_backward(dtable.tensor, dout.t(), tokens.t());
  Vec out_ref(N * C), dtable_ref(V * C, 0.0);
  k::embedding_forward(out_ref.data(), ids.data(), table.exact.data(), N, C);
  k::embedding_backward(dtable_ref.data(), dout.exact.data(), ids.data(), N, C);
  require_close(out.download(), out_ref, "out");
  require_close(dtable.download(), dtable_ref, "dtable");
  IntInput bad(*backend, std::vector<int32_t>(N, int32_t(V)));
  REQUIRE_THROWS_AS(backend->embedding_forward(out.tensor, bad.t(), table.t()), Error);
}

TEST_CASE("rmsnorm float op equals the double kernel") {
  auto backend = make_backend("cpu");
  const int64_t N = 33, C = 96;
  Input x(*backend, Shape{N, C}, random_vector<double>(N * C, 3)), w(*backend, Shape{C}, random_vector<double>(C, 4));
  Input dout(*backend, Shape{N, C}, random_vector<double>(N * C, 5));
  DeviceBuffer out(*backend, DType::F32, Shape{N, C}), rstd(*backend, DType::F32, Shape{N}),
      dx(*backend, DType::F32, Shape{N, C}), dw(*backend, DType::F32, Shape{C});
  backend->rmsnorm_forward(out.tensor, rstd.tensor, x.t(), w.t(), 1e-6f);
  backend->rmsnorm_backward(dx.tensor, dw.tensor, dout.t(), x.t(), w.t(), rstd.tensor);
  Vec out_ref(N * C), rstd_ref(N), dx_ref(N * C, 0.0), dw_ref(C, 0.0);
  k::rmsnorm_forward(out_ref.data(), rstd_ref.data(), x.exact.data(), w.exact.data(), N, C, 1e-6);
  k::rmsnorm_backward(dx_ref.data(), dw_ref.data(), dout.exact.data(), x.exact.data(), w.exact.data(), rstd_ref.data(),
                      N, C);
  require_close(out.download(), out_ref, "out");
  require_close(rstd.download(), rstd_ref, "rstd");
  require_close(dx.download(), dx_ref, "dx");
  require_close(dw.download(), dw_ref, "dweight");
}

TEST_CASE("linear float op equals the double kernel") {
  auto backend = make_backend("cpu");
  const int64_t N = 40, I = 24, O = 18;
  Input x(*backend, Shape{N, I}, random_vector<double>(N * I, 6)),
      w(*backend, Shape{O, I}, random_vector<double>(O * I, 7));
  Input b(*backend, Shape{O}, random_vector<double>(O, 8)),
      dout(*backend, Shape{N, O}, random_vector<double>(N * O, 9));
  DeviceBuffer out(*backend, DType::F32, Shape{N, O}), dx(*backend, DType::F32, Shape{N, I}),
      dw(*backend, DType::F32, Shape{O, I}), db(*backend, DType::F32, Shape{O});
  backend->linear_forward(out.tensor, x.t(), w.t(), &b.t());
  backend->linear_backward(dx.tensor, dw.tensor, &db.tensor, dout.t(), x.t(), w.t(), false);
  Vec out_ref(N * O), dx_ref(N * I), dw_ref(O * I, 0.0), db_ref(O, 0.0);
  k::linear_forward(out_ref.data(), x.exact.data(), w.exact.data(), b.exact.data(), N, I, O);
  k::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dout.exact.data(), x.exact.data(), w.exact.data(), N,
                     I, O, false);
  require_close(out.download(), out_ref, "out");
  require_close(dx.download(), dx_ref, "dx");
  require_close(dw.download(), dw_ref, "dweight");
  require_close(db.download(), db_ref, "dbias");
  DeviceBuffer wrong(*backend, DType::F32, Shape{O, I + 1});
  REQUIRE_THROWS_AS(backend->linear_forward(out.tensor, x.t(), wrong.tensor, nullptr), Error);
}

TEST_CASE("rope and attention float ops equal the double kernels") {
  auto backend = make_backend("cpu");
  const AttentionShape s{2, 9, 4, 2, 8};
  const int64_t N = s.batch * s.seq_len, W = s.qkv_width(), P = 16, HD = s.n_head * s.head_dim;
  std::vector<int32_t> pos(N), starts(N);
  for (int64_t n = 0; n < N; ++n) {
    pos[n] = int32_t(n % s.seq_len + 3);
    const int64_t t = n % s.seq_len;
    starts[n] = int32_t(t >= 4 ? 4 : 0);  // two packed documents per row
  }
  IntInput positions(*backend, pos), doc_start(*backend, starts);
  Vec table(P * s.head_dim);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < s.head_dim / 2; ++j) {
      const double angle = p * std::pow(10000.0, -2.0 * j / s.head_dim);
      table[(p * s.head_dim / 2 + j) * 2] = std::cos(angle);
      table[(p * s.head_dim / 2 + j) * 2 + 1] = std::sin(angle);
    }
  Input cos_sin(*backend, Shape{P, s.head_dim / 2, 2}, table);
  Input qkv(*backend, Shape{N, W}, random_vector<double>(N * W, 10)),
      dout(*backend, Shape{N, HD}, random_vector<double>(N * HD, 11));
  for (bool packed : {false, true}) {
    const Tensor* ds = packed ? &doc_start.t() : nullptr;
    const int32_t* ds_ref = packed ? starts.data() : nullptr;
    DeviceBuffer rotated(*backend, DType::F32, Shape{N, W}), out(*backend, DType::F32, Shape{N, HD}),
        aux(*backend, DType::F32, Shape{int64_t(backend->attention_aux_elems(s))}),
        dqkv(*backend, DType::F32, Shape{N, W});
    backend->copy(rotated.tensor, qkv.t());
    backend->rope_forward(rotated.tensor, positions.t(), cos_sin.t(), s);
    backend->attention_forward(out.tensor, aux.tensor, rotated.tensor, ds, s);
    backend->attention_backward(dqkv.tensor, dout.t(), out.tensor, aux.tensor, rotated.tensor, ds, s);
    backend->rope_backward(dqkv.tensor, positions.t(), cos_sin.t(), s);

    const k::AttentionDims dims{s.batch, s.seq_len, s.n_head, s.n_kv_head, s.head_dim};
    Vec rotated_ref = qkv.exact, out_ref(N * HD), probs(backend->attention_aux_elems(s)), dqkv_ref(N * W);
    k::rope_apply(rotated_ref.data(), pos.data(), cos_sin.exact.data(), N, s.n_head, s.n_kv_head, s.head_dim, false);
    k::attention_forward(out_ref.data(), probs.data(), rotated_ref.data(), ds_ref, dims);
    k::attention_backward(dqkv_ref.data(), dout.exact.data(), probs.data(), rotated_ref.data(), ds_ref, dims);
    k::rope_apply(dqkv_ref.data(), pos.data(), cos_sin.exact.data(), N, s.n_head, s.n_kv_head, s.head_dim, true);
    require_close(rotated.download(), rotated_ref, "rope");
    require_close(out.download(), out_ref, "attention out");
    require_close(dqkv.download(), dqkv_ref, "dqkv");
  }
  std::vector<int32_t> bad = starts;
  bad[1] = 5;  // later than its own position
  IntInput bad_start(*backend, bad);
  DeviceBuffer out(*backend, DType::F32, Shape{N, HD}),
      aux(*backend, DType::F32, Shape{int64_t(backend->attention_aux_elems(s))});
  REQUIRE_THROWS_AS(backend->attention_forward(out.tensor, aux.tensor, qkv.t(), &bad_start.t(), s), Error);
}

TEST_CASE("swiglu and cross-entropy float ops equal the double kernels") {
  auto backend = make_backend("cpu");
  const int64_t N = 21, F = 35, V = 50;
  Input gate_up(*backend, Shape{N, 2 * F}, random_vector<double>(N * 2 * F, 12, 2.0)),
      dout(*backend, Shape{N, F}, random_vector<double>(N * F, 13));
  DeviceBuffer out(*backend, DType::F32, Shape{N, F}), dgate_up(*backend, DType::F32, Shape{N, 2 * F});
  backend->swiglu_forward(out.tensor, gate_up.t());
  backend->swiglu_backward(dgate_up.tensor, dout.t(), gate_up.t());
  Vec out_ref(N * F), dgate_up_ref(N * 2 * F);
  k::swiglu_forward(out_ref.data(), gate_up.exact.data(), N, F);
  k::swiglu_backward(dgate_up_ref.data(), dout.exact.data(), gate_up.exact.data(), N, F);
  require_close(out.download(), out_ref, "swiglu out");
  require_close(dgate_up.download(), dgate_up_ref, "dgate_up");

  std::vector<int32_t> t(N);
  for (int64_t n = 0; n < N; ++n) t[n] = n % 4 == 3 ? -1 : int32_t((n * 13) % V);
  IntInput targets(*backend, t);
  Input logits(*backend, Shape{N, V}, random_vector<double>(N * V, 14, 4.0));
  DeviceBuffer losses(*backend, DType::F32, Shape{N}), dlogits(*backend, DType::F32, Shape{N, V});
  backend->cross_entropy_forward(losses.tensor, logits.t(), targets.t());
  backend->cross_entropy_backward(dlogits.tensor, logits.t(), targets.t(), 0.125f);
  Vec losses_ref(N), dlogits_ref(N * V);
  k::cross_entropy_forward(losses_ref.data(), logits.exact.data(), t.data(), N, V);
  k::cross_entropy_backward(dlogits_ref.data(), logits.exact.data(), t.data(), N, V, 0.125);
  require_close(losses.download(), losses_ref, "losses");
  require_close(dlogits.download(), dlogits_ref, "dlogits");
  // In place, as the model uses it.
  backend->cross_entropy_backward(logits.t(), logits.t(), targets.t(), 0.125f);
  require_close(logits.buffer.download(), dlogits_ref, "dlogits in place");
  t[0] = int32_t(V);
  IntInput bad(*backend, t);
  REQUIRE_THROWS_AS(backend->cross_entropy_forward(losses.tensor, logits.t(), bad.t()), Error);
}

TEST_CASE("vector_exp is within 1.5e-7 of exp over the float range and propagates NaN") {
  double worst = 0;
  for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
    const double exact = std::exp(double(x));
    worst = std::max(worst, std::fabs(double(k::vector_exp(x)) - exact) / exact);
  }
  INFO("worst relative error " << worst);
  REQUIRE(worst < 1.5e-7);
  REQUIRE(k::vector_exp(0.0f) == 1.0f);
  REQUIRE(std::isnan(k::vector_exp(NAN)));
  // Far below the range the result is a tiny normal number, never negative or NaN.
  REQUIRE(k::vector_exp(-1000.0f) >= 0.0f);
  REQUIRE(k::vector_exp(-1000.0f) < 1e-37f);
  REQUIRE(k::vector_exp(-INFINITY) < 1e-37f);
}
