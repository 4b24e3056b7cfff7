// The emulated NCCL (tools/cuda_emu/src/nccl.cpp) under `mpirun -np 2`: every collective the nccl
// communicator uses, for each type and reduction it uses, in and out of place, inside groups,
// BF16 rounding, the non-blocking path (ncclInProgress until the peer joins), isolation from the
// program's own MPI traffic, and the argument and initialisation checks.
#define CATCH_CONFIG_RUNNER
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gum/core/dtype.h"

namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// Rank 0's unique id, broadcast over MPI as the nccl communicator does.
ncclUniqueId shared_id() {
  ncclUniqueId id{};
  if (world_rank() == 0) REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  return id;
}

struct Comm {
  ncclComm_t comm = nullptr;
  explicit Comm(bool blocking = true) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = blocking ? 1 : 0;
    REQUIRE(ncclCommInitRankConfig(&comm, world_size(), shared_id(), world_rank(), &config) == ncclSuccess);
    ncclResult_t state = ncclInProgress;
    REQUIRE(ncclCommGetAsyncError(comm, &state) == ncclSuccess);
    REQUIRE(state == ncclSuccess);
  }
  ~Comm() {
    if (ncclCommFinalize(comm) == ncclSuccess) ncclCommDestroy(comm);
  }
};

// Polls a non-blocking communicator until it leaves ncclInProgress, which must be for success.
void poll_until_done(ncclComm_t comm) {
  ncclResult_t state = ncclInProgress;
  while (true) {
    REQUIRE(ncclCommGetAsyncError(comm, &state) == ncclSuccess);
    if (state != ncclInProgress) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE(state == ncclSuccess);
}

// Element i of rank r's input: small integers (and halves), so every sum, min and max over two
// ranks is exact in every type and the expected value does not depend on summation order.
double input(int rank, size_t i) { return double((int(i) * 7 + rank * 5) % 23) - 11.0 + (i % 2 ? 0.5 : 0.0); }

// Stored bits of `v` in NCCL type `type`.
void store(ncclDataType_t type, double v, void* p) {
  switch (type) {
    case ncclFloat32: {
      const float f = float(v);
      std::memcpy(p, &f, 4);
      return;
    }
    case ncclFloat64:
      std::memcpy(p, &v, 8);
      return;
    case ncclBfloat16: {
      const uint16_t h = gum::f32_to_bf16(float(v));
      std::memcpy(p, &h, 2);
      return;
    }
    case ncclFloat16: {
      const uint16_t h = gum::f32_to_f16(float(v));
      std::memcpy(p, &h, 2);
      return;
    }
    case ncclInt32: {
      const int32_t x = int32_t(v);
      std::memcpy(p, &x, 4);
      return;
    }
    case ncclInt64: {
      const int64_t x = int64_t(v);
      std::memcpy(p, &x, 8);
      return;
    }
    default:
      FAIL("type not covered by this test");
  }
}

double load(ncclDataType_t type, const void* p) {
  switch (type) {
    case ncclFloat32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case ncclFloat64: {
      double d;
      std::memcpy(&d, p, 8);
      return d;
    }
    case ncclBfloat16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return gum::bf16_to_f32(h);
    }
    case ncclFloat16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return gum::f16_to_f32(h);
    }
    case ncclInt32: {
      int32_t x;
      std::memcpy(&x, p, 4);
      return x;
    }
    case ncclInt64: {
      int64_t x;
      std::memcpy(&x, p, 8);
      return double(x);
    }
    default:
      FAIL("type not covered by this test");
  }
  return 0.0;
}

size_t size_of(ncclDataType_t type) {
  switch (type) {
    case ncclBfloat16:
    case ncclFloat16:
      return 2;
    case ncclFloat32:
    case ncclInt32:
      return 4;
    default:
      return 8;
  }
}

// The data types the nccl communicator reduces (nccl_arithmetic_type) and the reductions it uses.
const ncclDataType_t kArithmeticTypes[] = {ncclFloat32, ncclFloat64, ncclBfloat16, ncclFloat16, ncclInt32, ncclInt64};
const ncclRedOp_t kOps[] = {ncclSum, ncclAvg, ncclMin, ncclMax};

// This rank's inputs as stored values (integers drop the .5 of odd elements).
std::vector<uint8_t> inputs(ncclDataType_t type, size_t count, int rank) {
  std::vector<uint8_t> bytes(count * size_of(type));
  for (size_t i = 0; i < count; ++i) store(type, input(rank, i), bytes.data() + i * size_of(type));
  return bytes;
}

// Rank r's element i as type `type` holds it.
double stored_input(ncclDataType_t type, int rank, size_t i) {
  uint8_t bytes[8];
  store(type, input(rank, i), bytes);
  return load(type, bytes);
}

// The reduction over all ranks of element i; integer averages truncate toward zero, as NCCL's.
double expected(ncclRedOp_t op, ncclDataType_t type, size_t i) {
  double sum = 0.0, lo = stored_input(type, 0, i), hi = lo;
  for (int r = 0; r < world_size(); ++r) {
    const double v = stored_input(type, r, i);
    sum += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  switch (op) {
    case ncclSum:
      return sum;
    case ncclAvg:
      return type == ncclInt32 || type == ncclInt64 ? double(int64_t(sum) / world_size()) : sum / world_size();
    case ncclMin:
      return lo;
    default:
      return hi;
  }
}

}  // namespace

TEST_CASE("all-reduce, in place and out of place, for every arithmetic type and reduction") {
  Comm comm;
  const size_t count = 37;
  for (ncclDataType_t type : kArithmeticTypes)
    for (ncclRedOp_t op : kOps) {
      INFO("type " << type << ", op " << op);
      std::vector<uint8_t> in_place = inputs(type, count, world_rank());
      const std::vector<uint8_t> send = in_place;
      std::vector<uint8_t> out(send.size(), 0xEE);
      REQUIRE(ncclAllReduce(in_place.data(), in_place.data(), count, type, op, comm.comm, nullptr) == ncclSuccess);
      REQUIRE(ncclAllReduce(send.data(), out.data(), count, type, op, comm.comm, nullptr) == ncclSuccess);
      for (size_t i = 0; i < count; ++i) {
        INFO("element " << i);
        REQUIRE(load(type, in_place.data() + i * size_of(type)) == expected(op, type, i));
        REQUIRE(load(type, out.data() + i * size_of(type)) == expected(op, type, i));
      }
    }
}

TEST_CASE("reduce in place to a root: the root gets the reduction, the others keep their input") {
  Comm comm;
  const size_t count = 19;
  const int root = world_size() - 1;
  for (ncclDataType_t type : kArithmeticTypes)
    for (ncclRedOp_t op : kOps) {
      INFO("type " << type << ", op " << op);
      std::vector<uint8_t> buffer = inputs(type, count, world_rank());
      const std::vector<uint8_t> before = buffer;
      REQUIRE(ncclReduce(buffer.data(), buffer.data(), count, type, op, root, comm.comm, nullptr) == ncclSuccess);
      if (world_rank() != root) {
        REQUIRE(buffer == before);
        continue;
      }
      for (size_t i = 0; i < count; ++i)
        REQUIRE(load(type, buffer.data() + i * size_of(type)) == expected(op, type, i));
    }
}

TEST_CASE("reduce-scatter: rank r gets the reduction of chunk r, in place and out of place") {
  Comm comm;
  const size_t chunk = 6, n = size_t(world_size());
  for (ncclDataType_t type : kArithmeticTypes)
    for (ncclRedOp_t op : kOps) {
      INFO("type " << type << ", op " << op);
      const size_t bytes = chunk * size_of(type);
      std::vector<uint8_t> buffer = inputs(type, chunk * n, world_rank());
      const std::vector<uint8_t> send = buffer;
      std::vector<uint8_t> out(bytes, 0xEE);
      // In place: recvbuff is chunk `rank` of sendbuff.
      uint8_t* own_chunk = buffer.data() + world_rank() * bytes;
      REQUIRE(ncclReduceScatter(buffer.data(), own_chunk, chunk, type, op, comm.comm, nullptr) == ncclSuccess);
      REQUIRE(ncclReduceScatter(send.data(), out.data(), chunk, type, op, comm.comm, nullptr) == ncclSuccess);
      for (size_t i = 0; i < chunk; ++i) {
        const double want = expected(op, type, world_rank() * chunk + i);
        REQUIRE(load(type, own_chunk + i * size_of(type)) == want);
        REQUIRE(load(type, out.data() + i * size_of(type)) == want);
      }
    }
}

TEST_CASE("all-gather and broadcast move bytes (ncclUint8), in place and out of place") {
  Comm comm;
  const size_t bytes = 13, n = size_t(world_size());
  auto byte_of = [](int rank, size_t i) { return uint8_t(rank * 40 + i * 3 + 1); };
  std::vector<uint8_t> gathered(bytes * n, 0), own(bytes);
  for (size_t i = 0; i < bytes; ++i) {
    own[i] = byte_of(world_rank(), i);
    gathered[world_rank() * bytes + i] = own[i];
  }
  std::vector<uint8_t> out(bytes * n, 0);
  REQUIRE(ncclAllGather(gathered.data() + world_rank() * bytes, gathered.data(), bytes, ncclUint8, comm.comm,
                        nullptr) == ncclSuccess);
  REQUIRE(ncclAllGather(own.data(), out.data(), bytes, ncclUint8, comm.comm, nullptr) == ncclSuccess);
  for (size_t r = 0; r < n; ++r)
    for (size_t i = 0; i < bytes; ++i) {
      REQUIRE(gathered[r * bytes + i] == byte_of(int(r), i));
      REQUIRE(out[r * bytes + i] == byte_of(int(r), i));
    }

  const int root = world_size() - 1;
  std::vector<uint8_t> buffer(bytes), received(bytes, 0);
  for (size_t i = 0; i < bytes; ++i) buffer[i] = byte_of(world_rank(), i);
  REQUIRE(ncclBroadcast(buffer.data(), buffer.data(), bytes, ncclUint8, root, comm.comm, nullptr) == ncclSuccess);
  REQUIRE(ncclBroadcast(buffer.data(), received.data(), bytes, ncclUint8, root, comm.comm, nullptr) == ncclSuccess);
  for (size_t i = 0; i < bytes; ++i) {
    REQUIRE(buffer[i] == byte_of(root, i));
    REQUIRE(received[i] == byte_of(root, i));
  }
}

TEST_CASE("BF16 and F16 sums are combined in float and rounded once to nearest even") {
  Comm comm;
  REQUIRE(world_size() == 2);
  // 1 + 2^-7 (odd last BF16 bit) plus 2^-8 is halfway between two BF16 values: ties go to even,
  // 1 + 2^-6. 1 plus 2^-8 is halfway too and rounds down to 1 (even). F16 (10 bits): 1 + 2^-10
  // plus 2^-11 rounds up to 1 + 2^-9; 1 plus 2^-11 stays 1.
  const float bf16_inputs[2][2] = {{1.0f + 0x1p-7f, 1.0f}, {0x1p-8f, 0x1p-8f}};
  const float f16_inputs[2][2] = {{1.0f + 0x1p-10f, 1.0f}, {0x1p-11f, 0x1p-11f}};
  uint16_t bf16[2], f16[2];
  for (int i = 0; i < 2; ++i) {
    bf16[i] = gum::f32_to_bf16(bf16_inputs[world_rank()][i]);
    f16[i] = gum::f32_to_f16(f16_inputs[world_rank()][i]);
  }
  REQUIRE(ncclAllReduce(bf16, bf16, 2, ncclBfloat16, ncclSum, comm.comm, nullptr) == ncclSuccess);
  REQUIRE(ncclAllReduce(f16, f16, 2, ncclFloat16, ncclSum, comm.comm, nullptr) == ncclSuccess);
  REQUIRE(gum::bf16_to_f32(bf16[0]) == 1.0f + 0x1p-6f);
  REQUIRE(gum::bf16_to_f32(bf16[1]) == 1.0f);
  REQUIRE(gum::f16_to_f32(f16[0]) == 1.0f + 0x1p-9f);
  REQUIRE(gum::f16_to_f32(f16[1]) == 1.0f);
}

TEST_CASE("a group runs its collectives at the outermost ncclGroupEnd") {
  Comm comm;
  const size_t count = 5;
  std::vector<float> a(count), b(count);
  std::vector<double> c(count);
  for (size_t i = 0; i < count; ++i) {
    a[i] = float(input(world_rank(), i));
    b[i] = float(input(world_rank(), i + 1));
    c[i] = input(world_rank(), i + 2);
  }
  const std::vector<float> a_before = a;
  REQUIRE(ncclGroupStart() == ncclSuccess);
  REQUIRE(ncclAllReduce(a.data(), a.data(), count, ncclFloat32, ncclSum, comm.comm, nullptr) == ncclSuccess);
  REQUIRE(ncclGroupStart() == ncclSuccess);  // nested: only the outer end starts the group
  REQUIRE(ncclAllReduce(b.data(), b.data(), count, ncclFloat32, ncclMax, comm.comm, nullptr) == ncclSuccess);
  REQUIRE(ncclGroupEnd() == ncclSuccess);
  REQUIRE(a == a_before);
  REQUIRE(ncclAllReduce(c.data(), c.data(), count, ncclFloat64, ncclMin, comm.comm, nullptr) == ncclSuccess);
  REQUIRE(ncclGroupEnd() == ncclSuccess);
  for (size_t i = 0; i < count; ++i) {
    REQUIRE(a[i] == float(expected(ncclSum, ncclFloat32, i)));
    REQUIRE(b[i] == float(expected(ncclMax, ncclFloat32, i + 1)));
    REQUIRE(c[i] == expected(ncclMin, ncclFloat64, i + 2));
  }
  REQUIRE(ncclGroupEnd() == ncclInvalidUsage);
  REQUIRE(std::string(ncclGetLastError(nullptr)).find("ncclGroupStart") != std::string::npos);
}

TEST_CASE("non-blocking: ncclInProgress until the peer joins, then the result, no new call meanwhile") {
  Comm comm(false);
  REQUIRE(world_size() == 2);
  // Rank 1 joins only once rank 0 has started and checked (a go message on MPI_COMM_WORLD).
  float value = world_rank() == 0 ? 1.5f : 2.25f;
  int go = 1;
  if (world_rank() == 0) {
    REQUIRE(ncclAllReduce(&value, &value, 1, ncclFloat32, ncclSum, comm.comm, nullptr) == ncclInProgress);
    ncclResult_t state = ncclSuccess;
    REQUIRE(ncclCommGetAsyncError(comm.comm, &state) == ncclSuccess);
    REQUIRE(state == ncclInProgress);
    REQUIRE(value == 1.5f);  // the result is written when the collective finishes
    float other = 0.0f;
    REQUIRE(ncclAllReduce(&other, &other, 1, ncclFloat32, ncclSum, comm.comm, nullptr) == ncclInvalidUsage);
    MPI_Send(&go, 1, MPI_INT, 1, 0, MPI_COMM_WORLD);
  } else {
    MPI_Recv(&go, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    const ncclResult_t started = ncclAllReduce(&value, &value, 1, ncclFloat32, ncclSum, comm.comm, nullptr);
    REQUIRE((started == ncclSuccess || started == ncclInProgress));
  }
  poll_until_done(comm.comm);
  REQUIRE(value == 3.75f);
}

TEST_CASE("the communicator's MPI traffic is its own: a world barrier between start and finish") {
  Comm comm(false);
  REQUIRE(world_size() == 2);
  // Rank 0 starts the all-reduce before a barrier on MPI_COMM_WORLD, rank 1 after it: on a shared
  // MPI communicator the two collectives would be matched against each other.
  int64_t value = world_rank() + 10;
  if (world_rank() == 0) {
    REQUIRE(ncclAllReduce(&value, &value, 1, ncclInt64, ncclSum, comm.comm, nullptr) == ncclInProgress);
    MPI_Barrier(MPI_COMM_WORLD);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    const ncclResult_t started = ncclAllReduce(&value, &value, 1, ncclInt64, ncclSum, comm.comm, nullptr);
    REQUIRE((started == ncclSuccess || started == ncclInProgress));
  }
  poll_until_done(comm.comm);
  REQUIRE(value == 21);
}

TEST_CASE("argument checks: ncclInvalidArgument / ncclInvalidUsage, with a message") {
  Comm comm;
  float x = 1.0f;
  REQUIRE(ncclAllReduce(&x, &x, 1, ncclFloat32, ncclSum, nullptr, nullptr) == ncclInvalidArgument);
  REQUIRE(ncclAllReduce(&x, &x, 1, ncclDataType_t(42), ncclSum, comm.comm, nullptr) == ncclInvalidArgument);
  REQUIRE(std::string(ncclGetLastError(comm.comm)).find("data type") != std::string::npos);
  REQUIRE(ncclAllReduce(&x, &x, 1, ncclFloat32, ncclRedOp_t(9), comm.comm, nullptr) == ncclInvalidArgument);
  REQUIRE(ncclBroadcast(&x, &x, 1, ncclFloat32, world_size(), comm.comm, nullptr) == ncclInvalidArgument);
  REQUIRE(ncclReduce(&x, &x, 1, ncclFloat32, ncclSum, -1, comm.comm, nullptr) == ncclInvalidArgument);
  REQUIRE(ncclAllReduce(nullptr, &x, 1, ncclFloat32, ncclSum, comm.comm, nullptr) == ncclInvalidArgument);
  REQUIRE(ncclAllReduce(nullptr, nullptr, 0, ncclFloat32, ncclSum, comm.comm, nullptr) == ncclSuccess);
  int count = 0, rank = -1;
  REQUIRE(ncclCommCount(comm.comm, &count) == ncclSuccess);
  REQUIRE(ncclCommUserRank(comm.comm, &rank) == ncclSuccess);
  REQUIRE(count == world_size());
  REQUIRE(rank == world_rank());
  REQUIRE(std::string(ncclGetErrorString(ncclInvalidUsage)) == "invalid usage");
  REQUIRE(std::string(ncclGetErrorString(ncclInProgress)) == "NCCL operation in progress");
}

TEST_CASE("initialisation checks: different ids, or a wrong nranks, fail on every rank") {
  ncclComm_t comm = nullptr;
  ncclUniqueId own{};
  REQUIRE(ncclGetUniqueId(&own) == ncclSuccess);  // each rank its own id
  REQUIRE(ncclCommInitRank(&comm, world_size(), own, world_rank()) == ncclInvalidArgument);
  REQUIRE(comm == nullptr);
  REQUIRE(std::string(ncclGetLastError(nullptr)).find("different unique ids") != std::string::npos);
  REQUIRE(ncclCommInitRank(&comm, world_size() + 1, shared_id(), world_rank()) == ncclInvalidArgument);
  REQUIRE(ncclCommInitRank(&comm, world_size(), shared_id(), world_size() - 1 - world_rank() + 5) ==
          ncclInvalidArgument);
  ncclUniqueId garbage{};
  REQUIRE(ncclCommInitRank(&comm, world_size(), garbage, world_rank()) == ncclInvalidArgument);
  ncclConfig_t config{};  // not from NCCL_CONFIG_INITIALIZER
  REQUIRE(ncclCommInitRankConfig(&comm, world_size(), shared_id(), world_rank(), &config) == ncclInvalidArgument);
  // A reversed rank order is valid: NCCL rank r is whichever process passed r.
  REQUIRE(ncclCommInitRank(&comm, world_size(), shared_id(), world_size() - 1 - world_rank()) == ncclSuccess);
  int rank = -1;
  REQUIRE(ncclCommUserRank(comm, &rank) == ncclSuccess);
  REQUIRE(rank == world_size() - 1 - world_rank());
  int32_t value = world_rank() == 0 ? 7 : 0;  // world rank 0 is NCCL rank 1: broadcast from it
  REQUIRE(ncclBroadcast(&value, &value, 1, ncclInt32, world_size() - 1, comm, nullptr) == ncclSuccess);
  REQUIRE(value == 7);
  REQUIRE(ncclCommFinalize(comm) == ncclSuccess);
  REQUIRE(ncclCommDestroy(comm) == ncclSuccess);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int result = Catch::Session().run(argc, argv);
  // A failure on one rank may leave the other inside a collective: end the whole job.
  if (result != 0) MPI_Abort(MPI_COMM_WORLD, result);
  MPI_Finalize();
  return result;
}
