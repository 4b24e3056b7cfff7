#pragma once
// Shared by the communicators (internal to src/dist): argument checks with messages that name
// the collective and the offending tensor, f32 staging for dtypes a library cannot reduce,
// and the private factories make_communicator() chooses from.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gum/dist/communicator.h"

namespace gum::dist_detail {

// t is contiguous on `device` and not empty (numel 0 is allowed: nothing to do).
void check_tensor_device(const Communicator& comm, const char* collective, const char* argument, const Tensor& t,
                         Device device);
// Avg needs a floating dtype; reductions need an arithmetic dtype.
void check_reducible(const Communicator& comm, const char* collective, DType dtype, ReduceOp op);
void check_root(const Communicator& comm, const char* collective, int root);
// Every tensor of an async bucket: on `comm`'s device and reducible with `op`.
void check_reduce_bucket(const Communicator& comm, const char* collective, const std::vector<Tensor>& bucket,
                         ReduceOp op);
// One valid root per tensor of the bucket.
void check_bucket_roots(const Communicator& comm, const char* collective, const std::vector<Tensor>& bucket,
                        const std::vector<int>& roots);
// in.numel() == world_size * out.numel(), same dtype, and out is either chunk `rank` of in or
// disjoint from it. Returns true when out is chunk `rank` of in (in place).
bool check_reduce_scatter(const Communicator& comm, const Tensor& out, const Tensor& in);
// out.numel() == world_size * in.numel(), same dtype, `in` is chunk `rank` of out or disjoint
// from it. Returns true in place.
bool check_all_gather(const Communicator& comm, const Tensor& out, const Tensor& in);

// BF16/F16 values widened to f32 and back (MPI has no 16-bit float arithmetic).
bool needs_f32_staging(DType dtype);
std::vector<float> widen_to_f32(const Tensor& host_tensor);
void narrow_from_f32(Tensor host_tensor, const std::vector<float>& values);
// Avg = Sum / world_size, in place on host values of a floating dtype.
void divide_host(void* data, DType dtype, int64_t count, int world_size);

// Calls `done` until it returns true and returns true; returns false once timeout_s (> 0; 0 waits
// forever) has passed first. Yields between calls during the first second, then sleeps 1 ms:
// a reply is likely soon at first, later the peer is busy elsewhere and wants its core.
bool poll_until(double timeout_s, const std::function<bool()>& done);
// "all_reduce of 1024 F32 elements did not complete within 2 s: ..." (count 0: no element part).
std::string timeout_message(const char* collective, int64_t count, DType dtype, double timeout_s);
// The same for any description of what did not complete (describe_bucket's).
std::string timeout_message(const std::string& what, double timeout_s);
// "all_reduce of 1024 F32 elements" for a bucket of one tensor, "reduce of a bucket of 3 tensors
// (1536 elements, F32)" for several: what a timeout message names.
std::string describe_bucket(const char* collective, const std::vector<Tensor>& bucket);

std::string rank_prefix(const Communicator& comm);  // "rank 1 of 4"
// Prints "gum_train: rank R of W: message" to stderr and flushes every stream.
void report_fatal(const Communicator& comm, const std::string& message);

#ifdef GUM_HAVE_MPI
std::unique_ptr<Communicator> make_mpi_communicator(const CommunicatorOptions& options);
#if defined(GUM_HAVE_NCCL)
std::unique_ptr<Communicator> make_nccl_communicator(Backend& backend, const CommunicatorOptions& options);
#endif
#endif

}  // namespace gum::dist_detail
