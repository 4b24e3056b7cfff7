// The emulated cuSOLVER (tools/cuda_emu/src/cusolver.cpp): gesvd reconstructs A and matches
// double-precision LAPACK's singular values, geqrf + orgqr give an orthonormal Q with Q R = A, and
// every documented argument check (and a short workspace) returns CUSOLVER_STATUS_INVALID_VALUE
// with devInfo naming the parameter.
#include <cusolverDn.h>
#include <lapacke.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

namespace {

// Column-major m x n in an lda-row buffer, entries uniform in [-1, 1].
std::vector<float> random_matrix(int m, int n, int lda, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> a(size_t(lda) * n);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) a[i + size_t(j) * lda] = dist(rng);
  return a;
}

// max |(X^T X - I)_ij| over the n columns of a column-major m x n X.
double orthonormality_error(const float* x, int m, int n, int ld) {
  double worst = 0.0;
  for (int p = 0; p < n; ++p)
    for (int q = 0; q < n; ++q) {
      double dot = 0.0;
      for (int i = 0; i < m; ++i) dot += double(x[i + size_t(p) * ld]) * x[i + size_t(q) * ld];
      worst = std::max(worst, std::fabs(dot - (p == q ? 1.0 : 0.0)));
    }
  return worst;
}

struct Solver {
  cusolverDnHandle_t h = nullptr;
  Solver() { REQUIRE(cusolverDnCreate(&h) == CUSOLVER_STATUS_SUCCESS); }
  ~Solver() { cusolverDnDestroy(h); }
};

// Float LAPACK on these small (at most 11 x 6) random matrices: backward errors are a small
// multiple of n u (u = 6e-8). Measured worst: 9.8e-7 (U's orthonormality), 6.6e-7 (reconstruction),
// 1.9e-7 (singular values against double LAPACK, relative to the largest). 1e-5 is 10x above that
// and far below what a wrong factor or a misread leading dimension produces (order 0.1 or more).
constexpr double kTolerance = 1e-5;

}  // namespace

TEST_CASE("gesvd 'S','S': A = U diag(S) VT, orthonormal factors, S descending and equal to LAPACK's (double)") {
  Solver solver;
  const int m = 9, n = 6, lda = m + 2, ldu = m + 1, ldvt = n + 3;
  const std::vector<float> a = random_matrix(m, n, lda, 1);
  std::vector<float> work_a = a, s(n), u(size_t(ldu) * n), vt(size_t(ldvt) * n);
  int lwork = 0;
  REQUIRE(cusolverDnSgesvd_bufferSize(solver.h, m, n, &lwork) == CUSOLVER_STATUS_SUCCESS);
  REQUIRE(lwork >= 1);
  std::vector<float> work(static_cast<size_t>(lwork));
  int info = 123;
  REQUIRE(cusolverDnSgesvd(solver.h, 'S', 'S', m, n, work_a.data(), lda, s.data(), u.data(), ldu, vt.data(), ldvt,
                           work.data(), lwork, nullptr, &info) == CUSOLVER_STATUS_SUCCESS);
  REQUIRE(info == 0);
  REQUIRE(std::is_sorted(s.rbegin(), s.rend()));
  REQUIRE(orthonormality_error(u.data(), m, n, ldu) < kTolerance);
  // Rows of VT are orthonormal: columns of VT^T, i.e. VT read with row stride ldvt.
  for (int p = 0; p < n; ++p)
    for (int q = 0; q < n; ++q) {
      double dot = 0.0;
      for (int j = 0; j < n; ++j) dot += double(vt[p + size_t(j) * ldvt]) * vt[q + size_t(j) * ldvt];
      REQUIRE(std::fabs(dot - (p == q ? 1.0 : 0.0)) < kTolerance);
    }
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int l = 0; l < n; ++l) sum += double(u[i + size_t(l) * ldu]) * s[l] * vt[l + size_t(j) * ldvt];
      REQUIRE(std::fabs(sum - a[i + size_t(j) * lda]) < kTolerance);
    }
  std::vector<double> a_double(a.begin(), a.end()), s_double(n), superb(n);
  REQUIRE(LAPACKE_dgesvd(LAPACK_COL_MAJOR, 'N', 'N', m, n, a_double.data(), lda, s_double.data(), nullptr, 1, nullptr,
                         1, superb.data()) == 0);
  for (int i = 0; i < n; ++i) REQUIRE(std::fabs(s[i] - s_double[i]) < kTolerance * s_double[0]);
}

TEST_CASE("gesvd 'A' and 'N' jobs: a full square U, or singular values only") {
  Solver solver;
  const int m = 7, n = 4;
  const std::vector<float> a = random_matrix(m, n, m, 2);
  int lwork = 0;
  REQUIRE(cusolverDnSgesvd_bufferSize(solver.h, m, n, &lwork) == CUSOLVER_STATUS_SUCCESS);
  std::vector<float> work(static_cast<size_t>(lwork)), s_all(n), s_none(n), u(size_t(m) * m), vt(size_t(n) * n);
  std::vector<float> copy = a;
  int info = -1;
  REQUIRE(cusolverDnSgesvd(solver.h, 'A', 'A', m, n, copy.data(), m, s_all.data(), u.data(), m, vt.data(), n,
                           work.data(), lwork, nullptr, &info) == CUSOLVER_STATUS_SUCCESS);
  REQUIRE(info == 0);
  REQUIRE(orthonormality_error(u.data(), m, m, m) < kTolerance);
  copy = a;
  // With no vectors wanted, U and VT are never touched (and cuSOLVER still asks for ldu >= m).
  REQUIRE(cusolverDnSgesvd(solver.h, 'N', 'N', m, n, copy.data(), m, s_none.data(), nullptr, m, nullptr, n, work.data(),
                           lwork, nullptr, &info) == CUSOLVER_STATUS_SUCCESS);
  REQUIRE(info == 0);
  for (int i = 0; i < n; ++i) REQUIRE(std::fabs(s_all[i] - s_none[i]) < kTolerance * s_all[0]);
}

TEST_CASE("gesvd argument checks: INVALID_VALUE with devInfo = -(parameter), m >= n only") {
  Solver solver;
  const int m = 6, n = 4;
  std::vector<float> a = random_matrix(m, n, m, 3), s(m), u(size_t(m) * m), vt(size_t(m) * m);
  int lwork = 0;
  REQUIRE(cusolverDnSgesvd_bufferSize(solver.h, m, n, &lwork) == CUSOLVER_STATUS_SUCCESS);
  std::vector<float> work(static_cast<size_t>(lwork));
  auto info_of = [&](signed char jobu, signed char jobvt, int m_, int n_, int lda, int ldu, int ldvt, int lw) {
    int info = 777;
    const cusolverStatus_t status = cusolverDnSgesvd(solver.h, jobu, jobvt, m_, n_, a.data(), lda, s.data(), u.data(),
                                                     ldu, vt.data(), ldvt, work.data(), lw, nullptr, &info);
    REQUIRE((status == CUSOLVER_STATUS_SUCCESS) == (info >= 0));
    if (status != CUSOLVER_STATUS_SUCCESS) REQUIRE(status == CUSOLVER_STATUS_INVALID_VALUE);
    return info;
  };
  REQUIRE(info_of('X', 'S', m, n, m, m, n, lwork) == -1);
  REQUIRE(info_of('O', 'O', m, n, m, m, n, lwork) == -2);
  REQUIRE(info_of('S', 'S', -1, n, m, m, n, lwork) == -3);
  REQUIRE(info_of('S', 'S', n, m, m, m, m, lwork) == -4);  // m < n: cuSOLVER's gesvd refuses wide matrices
  REQUIRE(info_of('S', 'S', m, n, m - 1, m, n, lwork) == -6);
  REQUIRE(info_of('S', 'S', m, n, m, m - 1, n, lwork) == -9);
  REQUIRE(info_of('S', 'S', m, n, m, m, n - 1, lwork) == -11);
  REQUIRE(info_of('S', 'S', m, n, m, m, n, lwork - 1) == -13);
  REQUIRE(info_of('s', 's', m, n, m, m, n, lwork) == 0);  // jobs are case-insensitive, as in LAPACK
  int info = 0;
  REQUIRE(cusolverDnSgesvd(nullptr, 'S', 'S', m, n, a.data(), m, s.data(), u.data(), m, vt.data(), n, work.data(),
                           lwork, nullptr, &info) == CUSOLVER_STATUS_NOT_INITIALIZED);
  REQUIRE(cusolverDnSgesvd_bufferSize(solver.h, -1, n, &lwork) == CUSOLVER_STATUS_INVALID_VALUE);
  REQUIRE(cusolverDnSgesvd_bufferSize(nullptr, m, n, &lwork) == CUSOLVER_STATUS_NOT_INITIALIZED);
}

TEST_CASE("geqrf + orgqr (the backend's thin QR): orthonormal Q, Q R = A, devInfo 0") {
  Solver solver;
  const int m = 11, k = 5, lda = m + 2;
  const std::vector<float> a = random_matrix(m, k, lda, 4);
  std::vector<float> qr = a, tau(k);
  int lwork_geqrf = 0, lwork_orgqr = 0;
  REQUIRE(cusolverDnSgeqrf_bufferSize(solver.h, m, k, qr.data(), lda, &lwork_geqrf) == CUSOLVER_STATUS_SUCCESS);
  REQUIRE(cusolverDnSorgqr_bufferSize(solver.h, m, k, k, qr.data(), lda, tau.data(), &lwork_orgqr) ==
          CUSOLVER_STATUS_SUCCESS);
  const int lwork = std::max(lwork_geqrf, lwork_orgqr);
  std::vector<float> work(static_cast<size_t>(lwork));
  int info = 55;
  REQUIRE(cusolverDnSgeqrf(solver.h, m, k, qr.data(), lda, tau.data(), work.data(), lwork, &info) ==
          CUSOLVER_STATUS_SUCCESS);
  REQUIRE(info == 0);
  std::vector<double> r(size_t(k) * k, 0.0);  // upper triangle of geqrf's output
  for (int j = 0; j < k; ++j)
    for (int i = 0; i <= j; ++i) r[i + size_t(j) * k] = qr[i + size_t(j) * lda];
  info = 55;
  REQUIRE(cusolverDnSorgqr(solver.h, m, k, k, qr.data(), lda, tau.data(), work.data(), lwork, &info) ==
          CUSOLVER_STATUS_SUCCESS);
  REQUIRE(info == 0);
  REQUIRE(orthonormality_error(qr.data(), m, k, lda) < kTolerance);
  for (int j = 0; j < k; ++j)
    for (int i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int l = 0; l <= j; ++l) sum += qr[i + size_t(l) * lda] * r[l + size_t(j) * k];
      REQUIRE(std::fabs(sum - a[i + size_t(j) * lda]) < kTolerance);
    }
}

TEST_CASE("geqrf and orgqr argument checks and short workspaces: INVALID_VALUE, devInfo = -(parameter)") {
  Solver solver;
  const int m = 8, n = 5;
  std::vector<float> a = random_matrix(m, n, m, 5), tau(n);
  int lwork_geqrf = 0, lwork_orgqr = 0;
  REQUIRE(cusolverDnSgeqrf_bufferSize(solver.h, m, n, a.data(), m, &lwork_geqrf) == CUSOLVER_STATUS_SUCCESS);
  REQUIRE(cusolverDnSorgqr_bufferSize(solver.h, m, n, n, a.data(), m, tau.data(), &lwork_orgqr) ==
          CUSOLVER_STATUS_SUCCESS);
  std::vector<float> work(static_cast<size_t>(std::max(lwork_geqrf, lwork_orgqr)));
  auto geqrf_info = [&](int m_, int n_, int lda, int lwork) {
    int info = 777;
    const cusolverStatus_t status =
        cusolverDnSgeqrf(solver.h, m_, n_, a.data(), lda, tau.data(), work.data(), lwork, &info);
    REQUIRE((status == CUSOLVER_STATUS_SUCCESS) == (info == 0));
    return info;
  };
  REQUIRE(geqrf_info(-1, n, m, lwork_geqrf) == -1);
  REQUIRE(geqrf_info(m, -1, m, lwork_geqrf) == -2);
  REQUIRE(geqrf_info(m, n, m - 1, lwork_geqrf) == -4);
  REQUIRE(geqrf_info(m, n, m, lwork_geqrf - 1) == -7);
  REQUIRE(geqrf_info(m, n, m, lwork_geqrf) == 0);
  auto orgqr_info = [&](int m_, int n_, int k_, int lda, int lwork) {
    int info = 777;
    const cusolverStatus_t status =
        cusolverDnSorgqr(solver.h, m_, n_, k_, a.data(), lda, tau.data(), work.data(), lwork, &info);
    REQUIRE((status == CUSOLVER_STATUS_SUCCESS) == (info == 0));
    return info;
  };
  REQUIRE(orgqr_info(-1, n, n, m, lwork_orgqr) == -1);
  REQUIRE(orgqr_info(m, m + 1, n, m, lwork_orgqr) == -2);  // n > m
  REQUIRE(orgqr_info(m, n, n + 1, m, lwork_orgqr) == -3);  // k > n
  REQUIRE(orgqr_info(m, n, n, m - 1, lwork_orgqr) == -5);
  REQUIRE(orgqr_info(m, n, n, m, lwork_orgqr - 1) == -8);
  REQUIRE(orgqr_info(m, n, n, m, lwork_orgqr) == 0);
  int lwork = 0;
  REQUIRE(cusolverDnSgeqrf_bufferSize(solver.h, m, n, a.data(), m - 1, &lwork) == CUSOLVER_STATUS_INVALID_VALUE);
  REQUIRE(cusolverDnSorgqr_bufferSize(solver.h, m, n, n + 1, a.data(), m, tau.data(), &lwork) ==
          CUSOLVER_STATUS_INVALID_VALUE);
  REQUIRE(cusolverDnSetStream(nullptr, nullptr) == CUSOLVER_STATUS_NOT_INITIALIZED);
  REQUIRE(cusolverDnDestroy(nullptr) == CUSOLVER_STATUS_NOT_INITIALIZED);
}
