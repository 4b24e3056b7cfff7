// The single communicator and the launch environment, in one process (no mpirun). The
// multi-process collectives run from tests/dist/programs under mpirun (tests/CMakeLists.txt).
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/dist/communicator.h"

using namespace gum;

namespace {

// Sets environment variables for one test and restores the previous values afterwards.
class ScopedEnvironment {
 public:
  void set(const std::string& name, const char* value) {
    if (!saved_.count(name)) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value)
      setenv(name.c_str(), value, 1);
    else
      unsetenv(name.c_str());
  }
  ~ScopedEnvironment() {
    for (auto& [name, value] : saved_) {
      if (value)
        setenv(name.c_str(), value->c_str(), 1);
      else
        unsetenv(name.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

const char* const kLaunchVariables[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                        "OMPI_COMM_WORLD_LOCAL_SIZE"};

}  // namespace

TEST_CASE("launch info without mpirun is a single process", "[dist]") {
  ScopedEnvironment env;
  for (const char* name : kLaunchVariables) env.set(name, nullptr);
  LaunchInfo info = launch_info_from_environment();
  CHECK_FALSE(info.under_mpirun);
  CHECK(info.rank == 0);
  CHECK(info.world_size == 1);
  CHECK(info.local_rank == 0);
}

TEST_CASE("launch info reads OpenMPI's variables", "[dist]") {
  ScopedEnvironment env;
  env.set("OMPI_COMM_WORLD_SIZE", "8");
  env.set("OMPI_COMM_WORLD_RANK", "5");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  env.set("OMPI_COMM_WORLD_LOCAL_SIZE", "4");
  LaunchInfo info = launch_info_from_environment();
  CHECK(info.under_mpirun);
  CHECK(info.world_size == 8);
  CHECK(info.rank == 5);
  CHECK(info.local_rank == 1);
  CHECK(info.local_size == 4);
}

TEST_CASE("launch info rejects malformed variables, naming them", "[dist]") {
  ScopedEnvironment env;
  env.set("OMPI_COMM_WORLD_SIZE", "2");
  env.set("OMPI_COMM_WORLD_RANK", "one");
  CHECK_THROWS_WITH(launch_info_from_environment(), Catch::Contains("OMPI_COMM_WORLD_RANK='one'"));
  env.set("OMPI_COMM_WORLD_RANK", "2");
  CHECK_THROWS_WITH(launch_info_from_environment(), Catch::Contains("OMPI_COMM_WORLD_RANK=2"));
}

TEST_CASE("each local rank takes GPU local_rank % device_count", "[dist]") {
  CHECK(device_index_for_local_rank(0, 8) == 0);
  CHECK(device_index_for_local_rank(5, 4) == 1);
  CHECK(device_index_for_local_rank(3, 1) == 0);
  CHECK(device_index_for_local_rank(3, 0) == 0);
}

TEST_CASE("without mpirun make_communicator gives the single communicator", "[dist]") {
  ScopedEnvironment env;
  for (const char* name : kLaunchVariables) env.set(name, nullptr);
  auto backend = make_backend("cpu");
  auto comm = make_communicator(*backend);
  CHECK(comm->name() == "single");
  CHECK(comm->rank() == 0);
  CHECK(comm->world_size() == 1);
  CHECK(comm->local_rank() == 0);
  CHECK(comm->is_root());
  CHECK(comm->device() == Device::CPU);
}

TEST_CASE("single communicator collectives are identities", "[dist]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);

  std::vector<float> values = {1.5f, -2.0f, 3.25f};
  Tensor t(values.data(), DType::F32, Device::CPU, Shape{3});
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
    comm->all_reduce(t, op);
    CHECK(values == std::vector<float>({1.5f, -2.0f, 3.25f}));
  }
  comm->broadcast(t, 0);
  CHECK(values == std::vector<float>({1.5f, -2.0f, 3.25f}));

  std::vector<float> gathered(3, 0.0f), scattered(3, 0.0f);
  comm->all_gather(Tensor(gathered.data(), DType::F32, Device::CPU, Shape{3}), t);
  CHECK(gathered == values);
  comm->reduce_scatter(Tensor(scattered.data(), DType::F32, Device::CPU, Shape{3}), t, ReduceOp::Avg);
  CHECK(scattered == values);
  comm->all_gather(t, t);  // in place
  CHECK(values == std::vector<float>({1.5f, -2.0f, 3.25f}));

  CHECK(comm->all_reduce_host(2.5, ReduceOp::Sum) == 2.5);
  CHECK(comm->all_reduce_host(2.5, ReduceOp::Avg) == 2.5);
  std::vector<uint8_t> bytes = {1, 2, 3};
  comm->broadcast_bytes(bytes, 0);
  CHECK(bytes == std::vector<uint8_t>({1, 2, 3}));
  CHECK(comm->broadcast_string("config", 0) == "config");
  comm->barrier();
}

TEST_CASE("single communicator checks arguments like the others", "[dist]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  std::vector<float> four(4), three(3);
  Tensor t4(four.data(), DType::F32, Device::CPU, Shape{4});
  Tensor t3(three.data(), DType::F32, Device::CPU, Shape{3});
  CHECK_THROWS_WITH(comm->all_gather(t4, t3), Catch::Contains("all_gather") && Catch::Contains("[4]"));
  CHECK_THROWS_WITH(comm->reduce_scatter(t3, t4, ReduceOp::Sum), Catch::Contains("reduce_scatter"));
  CHECK_THROWS_WITH(comm->broadcast(t3, 1), Catch::Contains("root 1"));
  std::vector<int32_t> ints(2);
  CHECK_THROWS_WITH(comm->all_reduce(Tensor(ints.data(), DType::I32, Device::CPU, Shape{2}), ReduceOp::Avg),
                    Catch::Contains("avg of I32"));
  CHECK_THROWS_WITH(comm->all_reduce(Tensor(four.data(), DType::F32, Device::CUDA, Shape{4}), ReduceOp::Sum),
                    Catch::Contains("is on cuda"));
}

TEST_CASE("run_or_abort returns the body's result when nothing fails", "[dist]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  CHECK(run_or_abort(*comm, [] { return 0; }) == 0);
  CHECK(run_or_abort(*comm, [] { return 3; }) == 3);
}

TEST_CASE("reduce ops have names for messages", "[dist]") {
  CHECK(std::string(reduce_op_name(ReduceOp::Sum)) == "sum");
  CHECK(std::string(reduce_op_name(ReduceOp::Avg)) == "avg");
  CHECK(std::string(reduce_op_name(ReduceOp::Max)) == "max");
  CHECK(std::string(reduce_op_name(ReduceOp::Min)) == "min");
}

TEST_CASE("single communicator reduce and async buckets are identities with ordered handles", "[dist]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  std::vector<float> values = {1.5f, -2.0f, 3.25f}, other = {4.0f};
  Tensor t(values.data(), DType::F32, Device::CPU, Shape{3});
  Tensor u(other.data(), DType::F32, Device::CPU, Shape{1});
  comm->reduce(t, ReduceOp::Avg, 0);
  CHECK(values == std::vector<float>({1.5f, -2.0f, 3.25f}));

  CollectiveHandle first = comm->all_reduce_async({t, u}, ReduceOp::Sum);
  CollectiveHandle second = comm->reduce_async({t, u}, {0, 0}, ReduceOp::Max);
  CollectiveHandle empty = comm->all_reduce_async({}, ReduceOp::Sum);
  CHECK(first.id > 0);
  CHECK(second.id == first.id + 1);
  CHECK(empty.id == second.id + 1);
  comm->wait(second);
  comm->wait_all();
  comm->wait(CollectiveHandle{});
  CHECK(values == std::vector<float>({1.5f, -2.0f, 3.25f}));
  CHECK(other == std::vector<float>({4.0f}));
}

TEST_CASE("async buckets and reduce check their arguments before starting, naming the problem", "[dist]") {
  auto backend = make_backend("cpu");
  auto comm = make_single_communicator(*backend);
  std::vector<float> values(4);
  Tensor t(values.data(), DType::F32, Device::CPU, Shape{4});
  std::vector<uint8_t> bytes(2);
  Tensor u8(bytes.data(), DType::U8, Device::CPU, Shape{2});
  CHECK_THROWS_WITH(comm->reduce(t, ReduceOp::Sum, 1), Catch::Contains("reduce: root 1"));
  CHECK_THROWS_WITH(comm->reduce_async({t, t}, {0}, ReduceOp::Sum),
                    Catch::Contains("1 roots for a bucket of 2 tensors"));
  CHECK_THROWS_WITH(comm->all_reduce_async({t, u8}, ReduceOp::Sum), Catch::Contains("cannot reduce U8"));
  CHECK_THROWS_WITH(comm->all_reduce_async({Tensor(values.data(), DType::F32, Device::CUDA, Shape{4})}, ReduceOp::Sum),
                    Catch::Contains("bucket tensor 0") && Catch::Contains("is on cuda"));
}
