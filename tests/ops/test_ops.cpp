// The driver of the op table (op_table.cpp): every row in each column it takes part in, and the
// check that the table covers every method of the Backend interface.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>

#include "common/relative_error.h"
#include "common/skip.h"
#include "gum/core/error.h"
#include "op_case.h"
#ifdef GUM_HAVE_CUDA
#include "cuda/cuda_test_util.h"
#endif

using namespace gum;
using namespace gum::op_test;
using gum::testing::relative_error;

namespace {

// GUM_OP_TABLE_REPORT=1 prints every measured error (for choosing a new row's tolerances).
void report(const std::string& row, const std::string& what, double error) {
  static const bool enabled = std::getenv("GUM_OP_TABLE_REPORT") != nullptr;
  if (enabled) std::printf("%-90s %-40s %.3g\n", row.c_str(), what.c_str(), error);
}

void expect_close(const std::string& row, const HostTensors& expected, const HostTensors& actual, const Compare& c,
                  double tolerance, const char* column) {
  const std::vector<double>&e = expected.at(c.tensor), &a = actual.at(c.tensor);
  const double error = relative_error(e, a);
  report(row, std::string(column) + " " + c.tensor, error);
  INFO(column << " " << c.tensor << ": normalised error " << error << " (tolerance " << tolerance << ", " << e.size()
              << " values)");
  CHECK(error <= tolerance);
}

void expect_rejected(Backend& backend, const OpCase& row, const HostTensors& initial) {
  for (const auto& [what, call] : row.rejects) {
    DeviceTensors t(backend, row.tensors, initial);
    INFO("invalid call: " << what);
    CHECK_THROWS_AS(
        [&] {
          call(backend, t);
          backend.synchronize();
        }(),
        Error);
  }
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The Backend methods declared in include/gum/backend/backend.h: every `virtual <type> <name>(`.
// The header is the one source of truth, so a method added there fails the coverage test until a
// row covers it (an explicit list kept beside the table could silently lag behind the interface).
// Every `virtual` but the destructor's must parse as a method, so a declaration the pattern does
// not understand fails loudly instead of going unchecked.
std::set<std::string> backend_methods() {
  std::ifstream file(std::string(GUM_SOURCE_DIR) + "/include/gum/backend/backend.h");
  REQUIRE(file);
  std::stringstream text;
  text << file.rdbuf();
  const std::string source = text.str();
  const std::regex method(R"(virtual\s+[\w:<>\*&\s]+?[\s\*&](\w+)\s*\()"), keyword(R"(\bvirtual\b)");
  std::set<std::string> names;
  size_t declarations = 0;
  for (auto it = std::sregex_iterator(source.begin(), source.end(), method); it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1]);
    ++declarations;
  }
  const auto keywords =
      size_t(std::distance(std::sregex_iterator(source.begin(), source.end(), keyword), std::sregex_iterator()));
  INFO("`virtual` appears " << keywords << " times, " << declarations << " declarations parsed");
  REQUIRE(declarations + 1 == keywords);  // + the destructor
  REQUIRE(names.size() == declarations);  // no overloads: a row names a method unambiguously
  return names;
}

}  // namespace

TEST_CASE("every Backend method is covered by a row of the op table, and rows name only Backend methods") {
  const std::set<std::string> methods = backend_methods();
  REQUIRE(methods.count("gemm") == 1);
  REQUIRE(methods.count("native_stream") == 1);  // virtual with a default body, still a method to cover
  std::set<std::string> covered, row_names;
  for (const OpCase& row : op_table()) {
    INFO("row " << row.name);
    CHECK(row_names.insert(row.name).second);  // a row's name selects its section: unique
    for (const std::string& name : row.covers) {
      INFO("row " << row.name << " covers " << name);
      CHECK(methods.count(name) == 1);
      covered.insert(name);
    }
  }
  for (const std::string& name : methods) {
    INFO("Backend::" << name << " has no row in tests/ops/op_table.cpp");
    CHECK(covered.count(name) == 1);
  }
}

TEST_CASE("float vs double: CPU float ops equal the double reference, keep row properties, reject bad arguments") {
  auto cpu = make_backend("cpu");
  for (const OpCase& row : op_table()) {
    DYNAMIC_SECTION(row.name) {
      const HostTensors initial = initial_values(row);
      DeviceTensors t(*cpu, row.tensors, initial);
      row.run(*cpu, t);
      const HostTensors result = t.download();
      if (row.forward) {
        HostTensors expected = initial;
        row.forward(expected);
        if (row.backward) row.backward(expected);
        for (const Compare& c : row.compare)
          if (c.vs_double != kNotCompared)
            expect_close(row.name, expected, result, c, c.vs_double, "cpu float vs double");
      }
      if (row.check) row.check(initial, result);
      expect_rejected(*cpu, row, initial);
    }
  }
}

TEST_CASE("finite differences: every backward in double equals central differences of its forward") {
  for (const OpCase& row : op_table()) {
    if (row.gradients.empty() || row.gradient_tolerance == 0) continue;
    DYNAMIC_SECTION(row.name) {
      REQUIRE(row.forward);
      REQUIRE(row.backward);
      const HostTensors initial = initial_values(row);
      HostTensors analytic = initial;
      row.forward(analytic);
      const HostTensors before_backward = analytic;
      row.backward(analytic);
      auto loss = [&](HostTensors& w) {
        row.forward(w);
        double total = 0;
        for (const auto& [output, probe] : row.loss) total += dot(w.at(output), w.at(probe));
        return total;
      };
      // h = 1e-5: truncation error ~h^2 |L'''| ~ 1e-10, rounding ~1e-16 |L| / h ~ 1e-11.
      const double h = 1e-5;
      for (const Gradient& g : row.gradients) {
        std::vector<double> expected = analytic.at(g.gradient);
        if (g.accumulates)
          for (size_t i = 0; i < expected.size(); ++i) expected[i] -= before_backward.at(g.gradient)[i];
        std::vector<double> numeric(initial.at(g.input).size());
        for (size_t i = 0; i < numeric.size(); ++i) {
          HostTensors up = initial, down = initial;
          up(g.input)[i] += h;
          down(g.input)[i] -= h;
          numeric[i] = (loss(up) - loss(down)) / (2 * h);
        }
        const double error = relative_error(numeric, expected);
        report(row.name, "finite differences " + g.gradient, error);
        INFO(g.gradient << " (" << (g.accumulates ? "accumulated" : "overwritten") << ") vs d loss / d " << g.input
                        << ": normalised error " << error << " (tolerance " << row.gradient_tolerance << ")");
        CHECK(error <= row.gradient_tolerance);
      }
    }
  }
}

#ifdef GUM_HAVE_CUDA
TEST_CASE("cpu vs cuda: the CUDA backend equals the CPU backend on every row, twice with the same bits") {
  if (!cuda_available()) GUM_SKIP_TEST("no usable CUDA backend");
  auto cpu = make_backend("cpu");
  for (const OpCase& row : op_table()) {
    for (const char* attention : row.cuda_attention) {
      DYNAMIC_SECTION(row.name << " [training.attention=" << attention << "]") {
        auto cuda = cuda_test::BackendPair::make_cuda_backend(attention);
        const HostTensors initial = initial_values(row);
        DeviceTensors on_cpu(*cpu, row.tensors, initial), on_cuda(*cuda, row.tensors, initial),
            again(*cuda, row.tensors, initial);
        row.run(*cpu, on_cpu);
        row.run(*cuda, on_cuda);
        row.run(*cuda, again);
        const HostTensors expected = on_cpu.download(), result = on_cuda.download(), repeated = again.download();
        for (const Compare& c : row.compare) {
          const bool same_layout = c.cuda_attention_only.empty() || c.cuda_attention_only == attention;
          if (c.vs_cuda != kNotCompared && same_layout)
            expect_close(row.name + " [" + attention + "]", expected, result, c, c.vs_cuda, "cuda vs cpu");
          // No float atomics: a second run gives the same bits (NaN where the first had NaN).
          expect_close(row.name, result, repeated, c, 0.0, "cuda run twice");
        }
        if (row.check) row.check(initial, result);
        expect_rejected(*cuda, row, initial);
      }
    }
  }
}
#endif
