// Data parallelism: `mpirun -np 2 gum_train` on the CPU follows the single-process trajectory
// (same global batch, gradients summed with a 1/global-targets loss scale; only the summation
// order differs, so equal to rounding).
#include <catch2/catch.hpp>

#include "common/skip.h"
#include "train_test_util.h"

using namespace gum_test;

TEST_CASE("two MPI ranks follow the single-process trajectory") {
  if (run_command("command -v mpirun").exit_code != 0) GUM_SKIP_TEST("mpirun not installed");
  prepared_micro_data();
  const nlohmann::json patch = {{"training", {{"max_steps", 8}}}, {"checkpoint", {{"every_steps", 0}}}};
  const std::string single_dir = fresh_test_dir("dp_single");
  const std::string single = write_config(single_dir, micro_config(single_dir + "/run", patch));
  REQUIRE(run_gum_train(single + " --resume never").exit_code == 0);

  const std::string dp_dir = fresh_test_dir("dp_two_ranks");
  const std::string dp = write_config(dp_dir, micro_config(dp_dir + "/run", patch));
  CommandResult r =
      run_command("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe " +
                  gum_train_binary() + " " + dp + " --resume never");
  if (r.output.find("built without MPI") != std::string::npos) GUM_SKIP_TEST("gum_train built without MPI");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("on 2 x cpu") != std::string::npos);

  std::vector<nlohmann::json> a = metrics_lines(single_dir + "/run", "loss"),
                              b = metrics_lines(dp_dir + "/run", "loss");
  REQUIRE(a.size() == 8);
  REQUIRE(b.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(b[i]["step"] == a[i]["step"]);
    CHECK(b[i]["tokens"] == a[i]["tokens"]);
    CHECK(b[i]["loss"].get<double>() == Approx(a[i]["loss"].get<double>()).epsilon(1e-5));
    CHECK(b[i]["grad_norm"].get<double>() == Approx(a[i]["grad_norm"].get<double>()).epsilon(1e-4));
  }
}
