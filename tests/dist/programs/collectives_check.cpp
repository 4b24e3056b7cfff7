// A program CTest runs under mpirun (tests/CMakeLists.txt) to check the communicators with
// real processes:
//   collectives_check collectives [--backend cpu|cuda]   every collective against expected values
//   collectives_check fail-on-rank R                      rank R throws while the others wait in a
//                                                         collective: the job must end, non-zero
//   collectives_check stall-on-rank R [--timeout S]       rank R never joins: the others time out
//   collectives_check stall-in-bucket-on-rank R [--timeout S]
//                                                         the same while the others wait for an
//                                                         async bucket (all_reduce_async)
// Without mpirun it runs the single communicator (world size 1). A failed check throws, and
// run_or_abort turns that into a non-zero exit of the whole job naming the rank.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/skip.h"
#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/dist/communicator.h"
#include "gum/dist/sharding.h"

using namespace gum;

namespace {

// A tensor in the backend's memory, filled from and read back to host vectors.
class DeviceTensor {
 public:
  DeviceTensor(Backend& backend, DType dtype, int64_t numel) : backend_(backend) {
    void* data = backend.allocate(static_cast<size_t>(numel) * dtype_size(dtype));
    tensor_ = Tensor(data, dtype, backend.device(), Shape{numel});
  }
  ~DeviceTensor() { backend_.release(tensor_.data); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  template <typename T>
  void upload(const std::vector<T>& values) {
    GUM_CHECK(static_cast<int64_t>(values.size()) == tensor_.numel() && sizeof(T) == dtype_size(tensor_.dtype));
    backend_.copy_from_host(tensor_, values.data());
  }
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> values(static_cast<size_t>(tensor_.numel()));
    backend_.copy_to_host(values.data(), tensor_);
    return values;
  }
  Tensor view() const { return tensor_; }
  // Elements [begin, begin + count) as a tensor of their own.
  Tensor chunk(int64_t begin, int64_t count) const { return tensor_.flat_slice(begin, Shape{count}); }

 private:
  Backend& backend_;
  Tensor tensor_;
};

struct Checker {
  Communicator& comm;
  int checks = 0;

  template <typename T>
  void expect_equal(const std::string& what, const std::vector<T>& got, const std::vector<T>& want,
                    double tolerance = 0) {
    ++checks;
    if (got.size() != want.size()) runtime_error(what, ": got ", got.size(), " values, want ", want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
      if (!(std::abs(g - w) <= tolerance)) runtime_error(what, ": element ", i, " is ", g, ", want ", w);
    }
  }
  void expect_error(const std::string& what, const std::function<void()>& call) {
    ++checks;
    try {
      call();
    } catch (const Error&) {
      return;
    }
    runtime_error(what, ": expected a gum::Error, got none");
  }
};

// Rank r's value at element i: distinct per rank and element, exact in bf16 and f16 for the
// sizes used with those types.
double value_of(int rank, int64_t i) { return (rank + 1) * 0.5 + static_cast<double>(i % 13); }

template <typename T>
std::vector<T> rank_values(int rank, int64_t n) {
  std::vector<T> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<T>(value_of(rank, i) * 2);
  return values;
}

// op over ranks of value_of(r, i) * 2, element i.
double reduced_value(int world_size, int64_t i, ReduceOp op) {
  double sum = 0, max = -1e300, min = 1e300;
  for (int r = 0; r < world_size; ++r) {
    double v = value_of(r, i) * 2;
    sum += v;
    max = std::max(max, v);
    min = std::min(min, v);
  }
  switch (op) {
    case ReduceOp::Sum:
      return sum;
    case ReduceOp::Avg:
      return sum / world_size;
    case ReduceOp::Max:
      return max;
    case ReduceOp::Min:
      return min;
  }
  return 0;
}

template <typename T>
std::vector<T> reduced_values(int world_size, int64_t begin, int64_t n, ReduceOp op) {
  std::vector<T> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    values[static_cast<size_t>(i)] = static_cast<T>(reduced_value(world_size, begin + i, op));
  return values;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& values) {
  std::vector<uint16_t> out;
  for (float v : values) out.push_back(f32_to_bf16(v));
  return out;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& values) {
  std::vector<float> out;
  for (uint16_t v : values) out.push_back(bf16_to_f32(v));
  return out;
}

template <typename T>
void check_all_reduce(Checker& c, Backend& backend, DType dtype, ReduceOp op, int64_t n, double tolerance = 0) {
  Communicator& comm = c.comm;
  DeviceTensor t(backend, dtype, n);
  t.upload(rank_values<T>(comm.rank(), n));
  comm.all_reduce(t.view(), op);
  c.expect_equal(std::string("all_reduce ") + dtype_name(dtype) + " " + reduce_op_name(op) + " n=" + std::to_string(n),
                 t.download<T>(), reduced_values<T>(comm.world_size(), 0, n, op), tolerance);
}

void check_reductions(Checker& c, Backend& backend) {
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
    check_all_reduce<float>(c, backend, DType::F32, op, 1000, 1e-5);
    check_all_reduce<double>(c, backend, DType::F64, op, 37);
  }
  check_all_reduce<int32_t>(c, backend, DType::I32, ReduceOp::Sum, 100);
  check_all_reduce<int64_t>(c, backend, DType::I64, ReduceOp::Max, 100);
  check_all_reduce<float>(c, backend, DType::F32, ReduceOp::Sum, int64_t{1} << 20, 1e-4);  // a real transfer
  check_all_reduce<float>(c, backend, DType::F32, ReduceOp::Sum, 0);                       // nothing to do

  // BF16: sums of small halves are exact in bf16's 8-bit mantissa.
  Communicator& comm = c.comm;
  DeviceTensor bf(backend, DType::BF16, 64);
  std::vector<float> mine;
  for (int64_t i = 0; i < 64; ++i) mine.push_back(static_cast<float>(value_of(comm.rank(), i)));
  bf.upload(to_bf16(mine));
  comm.all_reduce(bf.view(), ReduceOp::Sum);
  std::vector<float> want;
  for (int64_t i = 0; i < 64; ++i)
    want.push_back(static_cast<float>(reduced_value(comm.world_size(), i, ReduceOp::Sum) / 2));
  c.expect_equal("all_reduce BF16 sum", from_bf16(bf.download<uint16_t>()), want);
}

void check_reduce_scatter(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  const int world = comm.world_size();
  const int64_t per_rank = 7;
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
    DeviceTensor in(backend, DType::F32, per_rank * world), out(backend, DType::F32, per_rank);
    in.upload(rank_values<float>(comm.rank(), per_rank * world));
    comm.reduce_scatter(out.view(), in.view(), op);
    c.expect_equal(std::string("reduce_scatter ") + reduce_op_name(op), out.download<float>(),
                   reduced_values<float>(world, comm.rank() * per_rank, per_rank, op), 1e-5);
  }
  // In place: out is this rank's chunk of in.
  DeviceTensor in(backend, DType::F32, per_rank * world);
  in.upload(rank_values<float>(comm.rank(), per_rank * world));
  comm.reduce_scatter(in.chunk(comm.rank() * per_rank, per_rank), in.view(), ReduceOp::Sum);
  std::vector<float> all = in.download<float>();
  c.expect_equal("reduce_scatter in place",
                 std::vector<float>(all.begin() + comm.rank() * per_rank, all.begin() + (comm.rank() + 1) * per_rank),
                 reduced_values<float>(world, comm.rank() * per_rank, per_rank, ReduceOp::Sum), 1e-5);
}

void check_all_gather(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  const int world = comm.world_size();
  const int64_t per_rank = 5;
  std::vector<int64_t> want;
  for (int r = 0; r < world; ++r)
    for (int64_t i = 0; i < per_rank; ++i) want.push_back(r * 1000 + i);
  std::vector<int64_t> mine(want.begin() + comm.rank() * per_rank, want.begin() + (comm.rank() + 1) * per_rank);

  DeviceTensor in(backend, DType::I64, per_rank), out(backend, DType::I64, per_rank * world);
  in.upload(mine);
  comm.all_gather(out.view(), in.view());
  c.expect_equal("all_gather I64", out.download<int64_t>(), want);

  DeviceTensor gathered(backend, DType::I64, per_rank * world);
  std::vector<int64_t> start(static_cast<size_t>(per_rank * world), -1);
  std::copy(mine.begin(), mine.end(), start.begin() + comm.rank() * per_rank);
  gathered.upload(start);
  comm.all_gather(gathered.view(), gathered.chunk(comm.rank() * per_rank, per_rank));
  c.expect_equal("all_gather in place", gathered.download<int64_t>(), want);

  // One byte per rank: movement is dtype-agnostic.
  DeviceTensor byte(backend, DType::U8, 1), bytes(backend, DType::U8, world);
  byte.upload(std::vector<uint8_t>{static_cast<uint8_t>(200 + comm.rank())});
  comm.all_gather(bytes.view(), byte.view());
  std::vector<uint8_t> want_bytes;
  for (int r = 0; r < world; ++r) want_bytes.push_back(static_cast<uint8_t>(200 + r));
  c.expect_equal("all_gather U8", bytes.download<uint8_t>(), want_bytes);
}

void check_broadcasts(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  for (int root = 0; root < comm.world_size(); ++root) {
    DeviceTensor t(backend, DType::F32, 33);
    t.upload(rank_values<float>(comm.rank(), 33));
    comm.broadcast(t.view(), root);
    c.expect_equal("broadcast from root " + std::to_string(root), t.download<float>(), rank_values<float>(root, 33));
  }
  const int last = comm.world_size() - 1;
  std::vector<uint8_t> bytes(static_cast<size_t>(comm.rank() + 1), static_cast<uint8_t>(comm.rank()));
  comm.broadcast_bytes(bytes, last);
  c.expect_equal("broadcast_bytes from the last rank", bytes,
                 std::vector<uint8_t>(static_cast<size_t>(last + 1), static_cast<uint8_t>(last)));
  std::string text = comm.is_root() ? R"({"lr": 0.003, "seed": 42})" : "";
  std::string received = comm.broadcast_string(text, 0);
  c.expect_equal("broadcast_string", std::vector<char>(received.begin(), received.end()),
                 std::vector<char>({'{', '"', 'l', 'r', '"', ':', ' ', '0', '.', '0', '0', '3', ',',
                                    ' ', '"', 's', 'e', 'e', 'd', '"', ':', ' ', '4', '2', '}'}));
  std::vector<uint8_t> empty_everywhere;
  comm.broadcast_bytes(empty_everywhere, 0);
  c.expect_equal("broadcast_bytes of nothing", empty_everywhere, std::vector<uint8_t>{});
}

void check_host_values(Checker& c) {
  Communicator& comm = c.comm;
  const int world = comm.world_size();
  double mine = comm.rank() + 1.5;
  double sum = world * (world + 2) / 2.0;  // sum over r of r + 1.5
  c.expect_equal("all_reduce_host sum", std::vector<double>{comm.all_reduce_host(mine, ReduceOp::Sum)}, {sum});
  c.expect_equal("all_reduce_host avg", std::vector<double>{comm.all_reduce_host(mine, ReduceOp::Avg)}, {sum / world});
  c.expect_equal("all_reduce_host max", std::vector<double>{comm.all_reduce_host(mine, ReduceOp::Max)}, {world + 0.5});
  c.expect_equal("all_reduce_host min", std::vector<double>{comm.all_reduce_host(mine, ReduceOp::Min)}, {1.5});
  comm.barrier();
}

// reduce to every root in turn; the root's result is then broadcast so that every rank checks it
// (the other ranks' tensors are unspecified after a reduce), which is also the trainer's pattern
// under sharded state: reduce the gradient to its owner, broadcast the owner's new weights.
void check_reduce(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  const int world = comm.world_size();
  for (int root = 0; root < world; ++root) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
      DeviceTensor t(backend, DType::F32, 100);
      t.upload(rank_values<float>(comm.rank(), 100));
      comm.reduce(t.view(), op, root);
      comm.broadcast(t.view(), root);
      c.expect_equal(std::string("reduce F32 ") + reduce_op_name(op) + " to root " + std::to_string(root),
                     t.download<float>(), reduced_values<float>(world, 0, 100, op), 1e-5);
    }
  }
  DeviceTensor bf(backend, DType::BF16, 64);
  std::vector<float> mine, want;
  for (int64_t i = 0; i < 64; ++i) {
    mine.push_back(static_cast<float>(value_of(comm.rank(), i)));
    want.push_back(static_cast<float>(reduced_value(world, i, ReduceOp::Sum) / 2));
  }
  bf.upload(to_bf16(mine));
  comm.reduce(bf.view(), ReduceOp::Sum, world - 1);
  comm.broadcast(bf.view(), world - 1);
  c.expect_equal("reduce BF16 sum to the last rank", from_bf16(bf.download<uint16_t>()), want);
}

// Buckets in flight: two async buckets of mixed dtypes and roots are outstanding at once, a
// blocking collective runs while a third is, and waiting for a later handle completes the
// earlier ones (collectives complete in start order).
void check_async_buckets(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  const int world = comm.world_size();
  DeviceTensor a(backend, DType::F32, 1000), b(backend, DType::F64, 37), halves(backend, DType::BF16, 64);
  a.upload(rank_values<float>(comm.rank(), 1000));
  b.upload(rank_values<double>(comm.rank(), 37));
  std::vector<float> mine, want_halves;
  for (int64_t i = 0; i < 64; ++i) {
    mine.push_back(static_cast<float>(value_of(comm.rank(), i)));
    want_halves.push_back(static_cast<float>(reduced_value(world, i, ReduceOp::Avg) / 2));
  }
  halves.upload(to_bf16(mine));
  CollectiveHandle first = comm.all_reduce_async({a.view(), b.view(), halves.view()}, ReduceOp::Avg);

  // Under sharding a bucket holds several owners' tensors: one root each.
  DeviceTensor to_last(backend, DType::F32, 50), to_first(backend, DType::F32, 7);
  to_last.upload(rank_values<float>(comm.rank(), 50));
  to_first.upload(rank_values<float>(comm.rank(), 7));
  CollectiveHandle second = comm.reduce_async({to_last.view(), to_first.view()}, {world - 1, 0}, ReduceOp::Sum);
  c.expect_equal("handles count up in start order", std::vector<uint64_t>{second.id > first.id ? 1u : 0u},
                 std::vector<uint64_t>{1});
  comm.wait(second);  // completes `first` too
  c.expect_equal("async all_reduce F32 avg", a.download<float>(), reduced_values<float>(world, 0, 1000, ReduceOp::Avg),
                 1e-5);
  c.expect_equal("async all_reduce F64 avg", b.download<double>(), reduced_values<double>(world, 0, 37, ReduceOp::Avg),
                 1e-12);
  c.expect_equal("async all_reduce BF16 avg", from_bf16(halves.download<uint16_t>()), want_halves, 1e-2);
  comm.wait(first);  // already complete: returns at once
  comm.broadcast(to_last.view(), world - 1);
  comm.broadcast(to_first.view(), 0);
  c.expect_equal("async reduce to the last rank", to_last.download<float>(),
                 reduced_values<float>(world, 0, 50, ReduceOp::Sum), 1e-5);
  c.expect_equal("async reduce to rank 0", to_first.download<float>(),
                 reduced_values<float>(world, 0, 7, ReduceOp::Sum), 1e-5);

  // A blocking collective while a bucket is in flight, then everything drained. The bucket's
  // input comes from a backend op queued just before the start and its result feeds one queued
  // just after the wait: on a GPU this checks the stream ordering (no host synchronisation on
  // start), on the CPU it is plain arithmetic. Doubling and halving are exact.
  DeviceTensor third(backend, DType::F32, int64_t{1} << 18);
  third.upload(rank_values<float>(comm.rank(), int64_t{1} << 18));
  backend.scale(third.view(), 2.0f);
  comm.all_reduce_async({third.view()}, ReduceOp::Max);
  const double world_sum = comm.all_reduce_host(1.0, ReduceOp::Sum);
  CollectiveHandle nothing = comm.all_reduce_async({}, ReduceOp::Sum);
  comm.wait_all();
  backend.scale(third.view(), 0.5f);
  comm.wait(nothing);
  c.expect_equal("all_reduce_host while a bucket is in flight", std::vector<double>{world_sum},
                 std::vector<double>{static_cast<double>(world)});
  c.expect_equal("async all_reduce max of a large bucket", third.download<float>(),
                 reduced_values<float>(world, 0, int64_t{1} << 18, ReduceOp::Max));
}

// Sharded optimizer state: each owner "updates" its matrices, then everyone gets them.
void check_sharded_broadcast(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  std::vector<ShardItem> items;
  for (int i = 0; i < 7; ++i) items.push_back({"w" + std::to_string(i), static_cast<double>((i * 5) % 7 + 1)});
  ShardPlan plan = plan_shards(items, comm.world_size());
  std::vector<std::unique_ptr<DeviceTensor>> storage;
  std::vector<Tensor> tensors;
  for (size_t i = 0; i < items.size(); ++i) {
    storage.push_back(std::make_unique<DeviceTensor>(backend, DType::F32, static_cast<int64_t>(i) + 1));
    float value = plan.owns(comm.rank(), i) ? static_cast<float>(comm.rank() * 100 + i) : -1.0f;
    storage.back()->upload(std::vector<float>(i + 1, value));
    tensors.push_back(storage.back()->view());
  }
  broadcast_from_owners(comm, plan, tensors);
  for (size_t i = 0; i < items.size(); ++i)
    c.expect_equal("broadcast_from_owners item " + std::to_string(i), storage[i]->download<float>(),
                   std::vector<float>(i + 1, static_cast<float>(plan.owner[i] * 100 + i)));
}

// Bad arguments are caught on every rank before any message is sent, so no rank blocks.
void check_argument_errors(Checker& c, Backend& backend) {
  Communicator& comm = c.comm;
  DeviceTensor small(backend, DType::F32, 3), large(backend, DType::F32, 3 * comm.world_size() + 1);
  c.expect_error("reduce_scatter with a wrong size",
                 [&] { comm.reduce_scatter(small.view(), large.view(), ReduceOp::Sum); });
  c.expect_error("all_gather with a wrong size", [&] { comm.all_gather(large.view(), small.view()); });
  DeviceTensor ints(backend, DType::I32, 4);
  c.expect_error("avg of I32", [&] { comm.all_reduce(ints.view(), ReduceOp::Avg); });
  DeviceTensor bytes(backend, DType::U8, 4);
  c.expect_error("sum of U8", [&] { comm.all_reduce(bytes.view(), ReduceOp::Sum); });
  c.expect_error("broadcast from a rank that does not exist", [&] { comm.broadcast(small.view(), comm.world_size()); });
  c.expect_error("reduce to a rank that does not exist", [&] { comm.reduce(small.view(), ReduceOp::Sum, -1); });
  c.expect_error("async reduce with fewer roots than tensors", [&] {
    comm.reduce_async({small.view(), large.view()}, {0}, ReduceOp::Sum);
  });
  c.expect_error("async bucket with a U8 tensor", [&] {
    comm.all_reduce_async({small.view(), bytes.view()}, ReduceOp::Sum);
  });
  Device other = comm.device() == Device::CPU ? Device::CUDA : Device::CPU;
  float host_value = 0;
  Tensor wrong_device(&host_value, DType::F32, other, Shape{1});
  c.expect_error("tensor on the wrong device", [&] { comm.all_reduce(wrong_device, ReduceOp::Sum); });
  // Partial overlap of in and out is refused.
  c.expect_error("overlapping buffers",
                 [&] { comm.all_gather(large.chunk(0, 3 * comm.world_size()), large.chunk(1, 3)); });
}

int run_collectives(Communicator& comm, Backend& backend) {
  LaunchInfo launch = launch_info_from_environment();
  Checker c{comm};
  c.expect_equal("rank matches the launcher", std::vector<int>{comm.rank(), comm.world_size(), comm.local_rank()},
                 std::vector<int>{launch.rank, launch.world_size, launch.local_rank});
  check_reductions(c, backend);
  check_reduce_scatter(c, backend);
  check_all_gather(c, backend);
  check_broadcasts(c, backend);
  check_reduce(c, backend);
  check_async_buckets(c, backend);
  check_host_values(c);
  check_sharded_broadcast(c, backend);
  check_argument_errors(c, backend);
  // Every rank ran every check: agree on the count before reporting success.
  double total_checks = comm.all_reduce_host(c.checks, ReduceOp::Sum);
  if (total_checks != static_cast<double>(c.checks) * comm.world_size())
    runtime_error("ranks ran different numbers of checks");
  if (comm.is_root())
    std::printf("%s communicator: %d checks passed on each of %d ranks\n", comm.name().c_str(), c.checks,
                comm.world_size());
  return 0;
}

int run_failure(Communicator& comm, int failing_rank) {
  if (comm.rank() == failing_rank) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the others are inside all_reduce by now
    runtime_error("deliberate failure while the other ranks wait in all_reduce");
  }
  double never = comm.all_reduce_host(1.0, ReduceOp::Sum);
  std::printf("rank %d: all_reduce returned %g although a rank failed\n", comm.rank(), never);
  return 0;
}

int run_stall(Communicator& comm, Backend& backend, int stalled_rank, bool in_bucket) {
  if (comm.rank() == stalled_rank) {
    std::this_thread::sleep_for(std::chrono::seconds(120));  // never joins; the job is aborted under it
    return 0;
  }
  if (in_bucket) {
    DeviceTensor weights(backend, DType::F32, 300), bias(backend, DType::F32, 20);
    comm.all_reduce_async({weights.view(), bias.view()}, ReduceOp::Sum);
    comm.wait_all();
  } else {
    comm.all_reduce_host(1.0, ReduceOp::Sum);
  }
  std::printf("rank %d: all_reduce returned although a rank never joined\n", comm.rank());
  return 0;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: collectives_check collectives [--backend cpu|cuda]\n"
               "       collectives_check fail-on-rank R\n"
               "       collectives_check stall-on-rank R [--timeout SECONDS]\n"
               "       collectives_check stall-in-bucket-on-rank R [--timeout SECONDS]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  std::string mode = argv[1];
  std::string backend_name = "cpu";
  int target_rank = 0;
  CommunicatorOptions options;
  int next = 2;
  if (mode == "fail-on-rank" || mode == "stall-on-rank" || mode == "stall-in-bucket-on-rank") {
    if (argc < 3) usage();
    target_rank = std::atoi(argv[2]);
    next = 3;
  } else if (mode != "collectives") {
    usage();
  }
  for (; next < argc; ++next) {
    std::string flag = argv[next];
    if (flag == "--backend" && next + 1 < argc)
      backend_name = argv[++next];
    else if (flag == "--timeout" && next + 1 < argc)
      options.timeout_s = std::atof(argv[++next]);
    else
      usage();
  }
  // Decided identically on every rank, before any MPI call.
  LaunchInfo launch = launch_info_from_environment();
  if (backend_name == "cuda" && !cuda_available()) GUM_SKIP_TEST("no usable GPU for the nccl communicator");
  // NCCL refuses two ranks of one communicator on the same GPU.
  if (backend_name == "cuda" && launch.world_size > cuda_device_count())
    GUM_SKIP_TEST("fewer GPUs than ranks: NCCL needs one GPU per rank");

  std::unique_ptr<Backend> backend =
      make_backend(backend_name, device_index_for_local_rank(launch.local_rank, cuda_device_count()));
  std::unique_ptr<Communicator> comm = make_communicator(*backend, options);
  return run_or_abort(*comm, [&] {
    if (mode == "fail-on-rank") return run_failure(*comm, target_rank);
    if (mode == "stall-on-rank" || mode == "stall-in-bucket-on-rank")
      return run_stall(*comm, *backend, target_rank, mode == "stall-in-bucket-on-rank");
    return run_collectives(*comm, *backend);
  });
}
