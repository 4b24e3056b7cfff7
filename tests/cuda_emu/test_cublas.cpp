// The emulated cuBLAS (tools/cuda_emu/src/cublas.cpp) against a naive double-precision GEMM:
// every transpose pair, odd sizes, padded leading dimensions, BF16 operands and outputs, batches,
// the backend's row-major call, and each argument check cuBLAS documents.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gum/core/dtype.h"

namespace {

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A column-major matrix of `rows` x `cols` stored with leading dimension `ld` >= rows; the padding
// rows hold a sentinel so a write outside the matrix shows.
struct Matrix {
  int rows, cols, ld;
  std::vector<float> data;
  Matrix(int r, int c, int ld_, unsigned seed) : rows(r), cols(c), ld(ld_), data(random_floats(size_t(ld_) * c, seed)) {
    for (int j = 0; j < cols; ++j)
      for (int i = rows; i < ld; ++i) at(i, j) = kSentinel;
  }
  float& at(int i, int j) { return data[i + size_t(j) * ld]; }
  float at(int i, int j) const { return data[i + size_t(j) * ld]; }
  std::vector<uint16_t> bf16() const {
    std::vector<uint16_t> bits(data.size());
    for (size_t i = 0; i < data.size(); ++i) bits[i] = gum::f32_to_bf16(data[i]);
    return bits;
  }
  // The values a BF16 operand holds: each element rounded to BF16.
  Matrix rounded_to_bf16() const {
    Matrix m = *this;
    for (float& x : m.data) x = gum::bf16_to_f32(gum::f32_to_bf16(x));
    return m;
  }
  static constexpr float kSentinel = 12345.0f;
};

float op_at(const Matrix& m, cublasOperation_t op, int i, int j) { return op == CUBLAS_OP_N ? m.at(i, j) : m.at(j, i); }

// C = alpha op(A) op(B) + beta C in double, with the magnitude sum_l |a_il b_lj| that bounds the
// rounding error of a float evaluation.
struct Reference {
  std::vector<double> value, magnitude;
};

Reference reference_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const Matrix& a,
                         const Matrix& b, float beta, const Matrix& c) {
  Reference r{std::vector<double>(size_t(m) * n), std::vector<double>(size_t(m) * n)};
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double sum = 0.0, abs_sum = 0.0;
      for (int l = 0; l < k; ++l) {
        const double p = double(op_at(a, ta, i, l)) * op_at(b, tb, l, j);
        sum += p;
        abs_sum += std::fabs(p);
      }
      const double c_term = beta == 0.0f ? 0.0 : double(beta) * c.at(i, j);
      r.value[i + size_t(j) * m] = alpha * sum + c_term;
      r.magnitude[i + size_t(j) * m] = std::fabs(alpha) * abs_sum + std::fabs(c_term);
    }
  return r;
}

// A float GEMM element is a k-term dot product plus the alpha and beta roundings: Higham's bound
// is (k + 2) u times the magnitude, u = 2^-24; doubled for OpenBLAS's blocked summation order.
// Measured: the worst element of these tests reaches 0.11 of this bound (a wrong element, such as
// a transposed operand, misses it by orders of magnitude).
double float_gemm_bound(int k, double magnitude) { return 2.0 * (k + 2) * std::ldexp(1.0, -24) * magnitude; }

void require_matches(const Matrix& c, const Reference& r, int k) {
  for (int j = 0; j < c.cols; ++j) {
    for (int i = 0; i < c.rows; ++i) {
      INFO("element (" << i << ", " << j << ")");
      const double expected = r.value[i + size_t(j) * c.rows];
      REQUIRE(std::fabs(c.at(i, j) - expected) <= float_gemm_bound(k, r.magnitude[i + size_t(j) * c.rows]));
    }
    for (int i = c.rows; i < c.ld; ++i) REQUIRE(c.at(i, j) == Matrix::kSentinel);
  }
}

struct Handle {
  cublasHandle_t h = nullptr;
  Handle() { REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS); }
  ~Handle() { cublasDestroy(h); }
};

const cublasOperation_t kOps[] = {CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C};
const float kOne = 1.0f;

}  // namespace

TEST_CASE("GemmEx F32: every transpose pair, odd sizes, padded leading dimensions, alpha and beta") {
  Handle handle;
  const int m = 5, n = 7, k = 3;
  const float alpha = 0.75f, beta = -0.5f;
  for (cublasOperation_t ta : kOps)
    for (cublasOperation_t tb : kOps) {
      INFO("transa " << ta << ", transb " << tb);
      const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
      const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
      const Matrix a(a_rows, a_cols, a_rows + 2, 1), b(b_rows, b_cols, b_rows + 1, 2);
      Matrix c(m, n, m + 3, 3);
      const Reference r = reference_gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
      REQUIRE(cublasGemmEx(handle.h, ta, tb, m, n, k, &alpha, a.data.data(), CUDA_R_32F, a.ld, b.data.data(),
                           CUDA_R_32F, b.ld, &beta, c.data.data(), CUDA_R_32F, c.ld, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      require_matches(c, r, k);
    }
}

TEST_CASE("GemmEx with beta = 0 never reads C (NaN there stays out of the result), F32 and BF16 outputs") {
  Handle handle;
  const int m = 4, n = 3, k = 6;
  const float alpha = 1.0f, beta = 0.0f;
  const Matrix a = Matrix(m, k, m, 4).rounded_to_bf16(), b = Matrix(k, n, k, 5).rounded_to_bf16();
  const auto a_bits = a.bf16(), b_bits = b.bf16();
  Matrix c(m, n, m, 6);
  const Reference r = reference_gemm(CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, alpha, a, b, beta, c);

  std::fill(c.data.begin(), c.data.end(), std::numeric_limits<float>::quiet_NaN());
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a.data.data(), CUDA_R_32F, m, b.data.data(),
                       CUDA_R_32F, k, &beta, c.data.data(), CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  require_matches(c, r, k);

  std::vector<uint16_t> c_bits(size_t(m) * n, 0x7fc0);  // BF16 NaN
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a_bits.data(), CUDA_R_16BF, m,
                       b_bits.data(), CUDA_R_16BF, k, &beta, c_bits.data(), CUDA_R_16BF, m, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  for (uint16_t bits : c_bits) REQUIRE(std::isfinite(gum::bf16_to_f32(bits)));
}

TEST_CASE("GemmEx with k = 0: C = beta C, zeros for beta = 0 whatever C held") {
  Handle handle;
  const int m = 2, n = 3;
  const float alpha = 1.0f, half = 0.5f, zero = 0.0f, unused = 7.0f;
  std::vector<float> c = {1, 2, 3, 4, 5, 6};
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &alpha, &unused, CUDA_R_32F, m, &unused, CUDA_R_32F,
                       1, &half, c.data(), CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(c == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f});
  std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &alpha, &unused, CUDA_R_32F, m, &unused, CUDA_R_32F,
                       1, &zero, c.data(), CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(c == std::vector<float>(6, 0.0f));
}

TEST_CASE("GemmEx BF16 operands: widened to float, F32 output, every transpose pair") {
  Handle handle;
  const int m = 6, n = 5, k = 9;
  const float alpha = -1.25f, beta = 0.5f;
  for (cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T})
    for (cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
      INFO("transa " << ta << ", transb " << tb);
      const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
      const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
      // The reference multiplies the BF16 values exactly: only the float accumulation may differ.
      const Matrix a = Matrix(a_rows, a_cols, a_rows + 1, 7).rounded_to_bf16();
      const Matrix b = Matrix(b_rows, b_cols, b_rows + 2, 8).rounded_to_bf16();
      const auto a_bits = a.bf16(), b_bits = b.bf16();
      Matrix c(m, n, m + 1, 9);
      const Reference r = reference_gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
      REQUIRE(cublasGemmEx(handle.h, ta, tb, m, n, k, &alpha, a_bits.data(), CUDA_R_16BF, a.ld, b_bits.data(),
                           CUDA_R_16BF, b.ld, &beta, c.data.data(), CUDA_R_32F, c.ld, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      require_matches(c, r, k);
    }
}

TEST_CASE("GemmEx BF16 output: the float result rounded to nearest even, padding untouched") {
  Handle handle;
  const int m = 7, n = 3, k = 5, ldc = m + 2;
  const float alpha = 1.0f, beta = 1.0f;
  const Matrix a = Matrix(k, m, k, 10).rounded_to_bf16(), b = Matrix(k, n, k, 11).rounded_to_bf16();
  const Matrix c = Matrix(m, n, ldc, 12).rounded_to_bf16();
  const auto a_bits = a.bf16(), b_bits = b.bf16();
  auto c_bits = c.bf16();
  const Reference r = reference_gemm(CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, alpha, a, b, beta, c);
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a_bits.data(), CUDA_R_16BF, k,
                       b_bits.data(), CUDA_R_16BF, k, &beta, c_bits.data(), CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      // One BF16 rounding (unit roundoff 2^-8: 8 significant bits) on top of the float GEMM's error;
      // measured worst: 0.78 of this bound, as a round-to-nearest error can be.
      const double expected = r.value[i + size_t(j) * m];
      const double got = gum::bf16_to_f32(c_bits[i + size_t(j) * ldc]);
      REQUIRE(std::fabs(got - expected) <=
              std::ldexp(std::fabs(expected), -8) + float_gemm_bound(k, r.magnitude[i + size_t(j) * m]));
    }
    for (int i = m; i < ldc; ++i) REQUIRE(c_bits[i + size_t(j) * ldc] == gum::f32_to_bf16(Matrix::kSentinel));
  }
}

// TF32 as the tensor cores read an F32 operand: 11 significant bits (10 stored), to nearest with ties
// away from zero; written with frexp/round, independently of the shim's bit manipulation.
Matrix rounded_to_tf32(const Matrix& m) {
  Matrix r = m;
  for (float& x : r.data) {
    int e = 0;
    const double f = std::frexp(double(x), &e);  // x = f 2^e, 0.5 <= |f| < 1
    x = float(std::ldexp(std::round(std::ldexp(f, 11)), e - 11));
  }
  return r;
}

TEST_CASE("GemmEx TF32: operands rounded to 10 mantissa bits, fp32 accumulation, math mode and pedantic compute") {
  Handle handle;
  const int m = 9, n = 6, k = 64;
  const float alpha = 1.0f, beta = 0.0f;
  const Matrix a(m, k, m, 21), b(k, n, k, 22);
  Matrix c(m, n, m, 23);
  const Reference exact = reference_gemm(CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, alpha, a, b, beta, c);
  const Reference tf32 =
      reference_gemm(CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, alpha, rounded_to_tf32(a), rounded_to_tf32(b), beta, c);
  auto run = [&](cublasComputeType_t compute) {
    Matrix out(m, n, m, 24);
    REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a.data.data(), CUDA_R_32F, m,
                         b.data.data(), CUDA_R_32F, k, &beta, out.data.data(), CUDA_R_32F, m, compute,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    return out;
  };
  const Matrix fast = run(CUBLAS_COMPUTE_32F_FAST_TF32);
  // The product of the TF32-rounded operands, accumulated in float: the fp32 GEMM bound holds.
  require_matches(fast, tf32, k);
  // Against the exact product, the error is TF32's: each operand off by at most 2^-11 relative
  // (half of 2^-10), so each product by 2^-10 (+ 2^-22); with the float sum, |error| <= (2^-10 +
  // float bound) * magnitude. The worst element must exceed the fp32 bound: TF32 really is emulated.
  double worst_fp32_ratio = 0.0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const size_t at = i + size_t(j) * m;
      const double error = std::fabs(fast.at(i, j) - exact.value[at]);
      REQUIRE(error <= (std::ldexp(1.0, -10) + float_gemm_bound(k, 1.0)) * exact.magnitude[at]);
      worst_fp32_ratio = std::max(worst_fp32_ratio, error / float_gemm_bound(k, exact.magnitude[at]));
    }
  REQUIRE(worst_fp32_ratio > 1.0);

  // CUBLAS_COMPUTE_32F under CUBLAS_TF32_TENSOR_OP_MATH is TF32 too; the pedantic compute type is not.
  const Matrix plain = run(CUBLAS_COMPUTE_32F);
  REQUIRE(cublasSetMathMode(handle.h, CUBLAS_TF32_TENSOR_OP_MATH) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(run(CUBLAS_COMPUTE_32F).data == fast.data);
  REQUIRE(run(CUBLAS_COMPUTE_32F_PEDANTIC).data == plain.data);
  require_matches(plain, exact, k);
}

TEST_CASE("GemmBatchedEx: each item through its own pointers") {
  Handle handle;
  const int m = 3, n = 4, k = 5, batch = 3;
  const float alpha = 2.0f, beta = 0.25f;
  std::vector<Matrix> a, b, c;
  std::vector<Reference> r;
  for (int i = 0; i < batch; ++i) {
    a.emplace_back(k, m, k + 1, 20 + i);
    b.emplace_back(n, k, n, 30 + i);
    c.emplace_back(m, n, m + 1, 40 + i);
    r.push_back(reference_gemm(CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, alpha, a[i], b[i], beta, c[i]));
  }
  std::vector<const void*> ap, bp;
  std::vector<void*> cp;
  for (int i = 0; i < batch; ++i) {
    ap.push_back(a[i].data.data());
    bp.push_back(b[i].data.data());
    cp.push_back(c[i].data.data());
  }
  REQUIRE(cublasGemmBatchedEx(handle.h, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &alpha, ap.data(), CUDA_R_32F, k + 1,
                              bp.data(), CUDA_R_32F, n, &beta, cp.data(), CUDA_R_32F, m + 1, batch, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  for (int i = 0; i < batch; ++i) require_matches(c[i], r[i], k);
  // batchCount 0 is a valid empty batch.
  REQUIRE(cublasGemmBatchedEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, nullptr, CUDA_R_32F, m, nullptr,
                              CUDA_R_32F, k, &beta, nullptr, CUDA_R_32F, m, 0, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
}

TEST_CASE("the backend's row-major call: C = A B^T as column-major C^T = B A^T (operands swapped)") {
  Handle handle;
  const int M = 5, N = 4, K = 7;  // row-major A [M, K], B [N, K], C [M, N]
  const auto a = random_floats(size_t(M) * K, 50), b = random_floats(size_t(N) * K, 51);
  std::vector<float> c(size_t(M) * N, std::numeric_limits<float>::quiet_NaN());
  const float alpha = 1.0f, beta = 0.0f;
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, b.data(), CUDA_R_32F, K, a.data(),
                       CUDA_R_32F, K, &beta, c.data(), CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double sum = 0.0, magnitude = 0.0;
      for (int l = 0; l < K; ++l) {
        sum += double(a[i * K + l]) * b[j * K + l];
        magnitude += std::fabs(double(a[i * K + l]) * b[j * K + l]);
      }
      REQUIRE(std::fabs(c[i * N + j] - sum) <= float_gemm_bound(K, magnitude));
    }
}

TEST_CASE("GemmEx argument checks return cuBLAS's documented status") {
  Handle handle;
  const int m = 4, n = 3, k = 2;
  std::vector<float> a(64), b(64), c(64);
  // transa = T: A is stored k x m (needs lda >= k); transb = N: B is k x n (ldb >= k).
  auto call = [&](cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m_, int n_, int k_, int lda,
                  int ldb, int ldc, cudaDataType_t at = CUDA_R_32F, cudaDataType_t bt = CUDA_R_32F,
                  cudaDataType_t ct = CUDA_R_32F, cublasComputeType_t compute = CUBLAS_COMPUTE_32F,
                  cublasGemmAlgo_t algo = CUBLAS_GEMM_DEFAULT, const float* alpha = &kOne) {
    return cublasGemmEx(h, ta, tb, m_, n_, k_, alpha, a.data(), at, lda, b.data(), bt, ldb, &kOne, c.data(), ct, ldc,
                        compute, algo);
  };
  const auto N = CUBLAS_OP_N, T = CUBLAS_OP_T;
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(call(nullptr, N, N, m, n, k, m, k, m) == CUBLAS_STATUS_NOT_INITIALIZED);
  REQUIRE(call(handle.h, N, N, -1, n, k, 1, k, 1) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, N, N, m, -1, k, m, k, m) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, N, N, m, n, -1, m, 1, m) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, cublasOperation_t(3), N, m, n, k, m, k, m) == CUBLAS_STATUS_INVALID_VALUE);
  // lda: rows of A as stored, m when not transposed and k when transposed.
  REQUIRE(call(handle.h, N, N, m, n, k, m - 1, k, m) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, T, N, m, n, k, k, k, m) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(call(handle.h, T, N, m, n, k, k - 1, k, m) == CUBLAS_STATUS_INVALID_VALUE);
  // ldb: k when not transposed, n when transposed.
  REQUIRE(call(handle.h, N, N, m, n, k, m, k - 1, m) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, N, T, m, n, k, m, n, m) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(call(handle.h, N, T, m, n, k, m, n - 1, m) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m - 1) == CUBLAS_STATUS_INVALID_VALUE);
  // Leading dimensions are at least 1 even for empty matrices.
  REQUIRE(call(handle.h, N, N, 0, n, k, 0, k, 1) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, N, N, 0, n, k, 1, k, 1) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F,
               CUBLAS_GEMM_DEFAULT, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, cublasComputeType_t(1234)) ==
          CUBLAS_STATUS_INVALID_VALUE);
  // Type, compute type and algorithm combinations outside what is emulated.
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_32F, CUDA_R_16BF) == CUBLAS_STATUS_NOT_SUPPORTED);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_32F, CUDA_R_32F, CUDA_R_16BF) == CUBLAS_STATUS_NOT_SUPPORTED);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_16F, CUDA_R_16F, CUDA_R_32F) == CUBLAS_STATUS_NOT_SUPPORTED);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_16F) ==
          CUBLAS_STATUS_NOT_SUPPORTED);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32) ==
          CUBLAS_STATUS_NOT_SUPPORTED);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F,
               cublasGemmAlgo_t(5)) == CUBLAS_STATUS_NOT_SUPPORTED);
  REQUIRE(call(handle.h, N, N, m, n, k, m, k, m, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F_PEDANTIC,
               CUBLAS_GEMM_DEFAULT_TENSOR_OP) == CUBLAS_STATUS_SUCCESS);

  const void* ap[] = {a.data()};
  const void* bp[] = {b.data()};
  void* cp[] = {c.data()};
  REQUIRE(cublasGemmBatchedEx(handle.h, N, N, m, n, k, &kOne, ap, CUDA_R_32F, m, bp, CUDA_R_32F, k, &kOne, cp,
                              CUDA_R_32F, m, -1, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(cublasGemmBatchedEx(handle.h, N, N, m, n, k, &kOne, ap, CUDA_R_32F, m - 1, bp, CUDA_R_32F, k, &kOne, cp,
                              CUDA_R_32F, m, 1, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
}

TEST_CASE("handle calls: stream, math modes, status names and descriptions") {
  Handle handle;
  REQUIRE(cublasSetStream(handle.h, nullptr) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSetStream(nullptr, nullptr) == CUBLAS_STATUS_NOT_INITIALIZED);
  REQUIRE(cublasSetMathMode(handle.h, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSetMathMode(handle.h,
                            cublasMath_t(CUBLAS_PEDANTIC_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)) ==
          CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasSetMathMode(handle.h, cublasMath_t(7)) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE(cublasSetMathMode(nullptr, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_NOT_INITIALIZED);
  REQUIRE(cublasDestroy(nullptr) == CUBLAS_STATUS_NOT_INITIALIZED);
  REQUIRE(std::string(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE)) == "CUBLAS_STATUS_INVALID_VALUE");
  REQUIRE(std::string(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED)) == "CUBLAS_STATUS_NOT_SUPPORTED");
  REQUIRE(std::string(cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED)) == "the library was not initialized");
  REQUIRE(std::string(cublasGetStatusName(cublasStatus_t(99))) == "CUBLAS_STATUS_UNKNOWN");
}

TEST_CASE("GemmEx under stream capture is recorded, not run, and a replay computes it with the captured alpha") {
  Handle handle;
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  REQUIRE(cublasSetStream(handle.h, stream) == CUBLAS_STATUS_SUCCESS);
  const int m = 4, n = 3, k = 5;
  const Matrix a(m, k, m, 11), b(k, n, k, 12);
  Matrix c(m, n, m, 13);
  const Matrix c_before = c;
  float alpha = 2.0f;
  const float beta = 0.0f;
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal) == cudaSuccess);
  REQUIRE(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a.data.data(), CUDA_R_32F, a.ld,
                       b.data.data(), CUDA_R_32F, b.ld, &beta, c.data.data(), CUDA_R_32F, c.ld, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  CHECK(c.data == c_before.data);  // recorded only
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph) == cudaSuccess);
  alpha = -1.0f;  // cuBLAS read the host scalar at the call
  REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  require_matches(c, reference_gemm(CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, 2.0f, a, b, beta, c_before), k);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}
