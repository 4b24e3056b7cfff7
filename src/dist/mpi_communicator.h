#pragma once
// The MPI communicator (internal to src/dist): CPU buffers through MPI-3 non-blocking
// collectives, each waited for with a deadline so that a rank that never joins makes the job
// abort instead of hang. The nccl communicator keeps one for its host values and bootstrap.
#include <mpi.h>

#include <deque>
#include <string>
#include <vector>

#include "gum/dist/communicator.h"

namespace gum::dist_detail {

// MPI_Init_thread once per process (MPI_Finalize is registered with atexit).
void ensure_mpi_initialized();

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommunicatorOptions& options);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int local_rank() const override { return local_rank_; }
  Device device() const override { return Device::CPU; }

  void all_reduce(Tensor t, ReduceOp op) override;
  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override;
  void all_gather(Tensor out, const Tensor& in) override;
  void broadcast(Tensor t, int root) override;
  CollectiveHandle all_reduce_async(const std::vector<Tensor>& bucket, ReduceOp op) override;
  CollectiveHandle reduce_async(const std::vector<Tensor>& bucket, const std::vector<int>& roots, ReduceOp op) override;
  void wait(CollectiveHandle handle) override;
  void barrier() override;
  double all_reduce_host(double value, ReduceOp op) override;
  void broadcast_bytes(std::vector<uint8_t>& bytes, int root) override;
  [[noreturn]] void abort(const std::string& message, int exit_code) override;

 private:
  // One tensor of a started reduction and what remains to do once its requests complete.
  struct ReductionPart {
    Tensor tensor;               // the caller's tensor
    std::vector<float> staging;  // the f32 copy reduced in place of a BF16/F16 tensor (empty: none)
    bool holds_result = false;   // every rank for all_reduce, only the root for reduce
  };
  // A started bucket: nonblocking MPI requests (MPI-3), completed in start order by wait().
  struct PendingReduction {
    CollectiveHandle handle;
    std::string description;  // for the timeout message
    ReduceOp op = ReduceOp::Sum;
    std::vector<ReductionPart> parts;
    std::vector<MPI_Request> requests;
  };
  // all_reduce (roots empty) or reduce of every tensor of the bucket, started with MPI_Iallreduce
  // or MPI_Ireduce; arguments were checked by the caller.
  CollectiveHandle start_reduction(const char* collective, const std::vector<Tensor>& bucket,
                                   const std::vector<int>& roots, ReduceOp op);
  // Waits for `request` until the deadline; on timeout aborts the job naming `collective`.
  void wait_request(MPI_Request& request, const char* collective, int64_t count, DType dtype);
  // Raw broadcast of `count` elements of `dtype` at `data`, split into MPI-sized pieces.
  void broadcast_raw(void* data, int64_t count, DType dtype, int root, const char* collective);

  MPI_Comm comm_ = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD: our messages never mix with others'
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  double timeout_s_ = 0;
  std::deque<PendingReduction> pending_;  // started, not yet waited for, in start order
};

}  // namespace gum::dist_detail
