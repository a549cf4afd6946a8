// Atomic backward: scatter-add of dout rows into the f32 (f64 for f64 dout) gradient tables, with
// duplicate ids combined on chip before they reach global memory, and the positional gradient fused
// into the same pass over dout.
//
// Why this shape:
//  * Real text is Zipf-distributed and a batch of identical ids must not serialise on one row.
//    Each block takes up to 512 rows at a time, sorts their ids in shared memory
//    (cub::BlockRadixSort, stable), and walks the sorted rows: equal ids are adjacent, so a run
//    of k equal ids costs one atomic per column instead of k.
//  * Threads own column packs (16 bytes of dout each on the vector path) and all walk the same
//    sorted rows, so each row's dout is read with fully coalesced 128-bit loads, kBatch rows at
//    a time to keep loads in flight, and run sums live in registers.
//  * Positions are offset + t (the common case): a block covers a tile of positions and a chunk
//    of the batch, so it owns its positional gradient rows. It sums them in shared memory (each
//    thread touches only its own columns: no shared atomics) and adds them to grad_pos once at
//    the end: plainly when one block covers the whole batch, with one atomic per element
//    otherwise. dout is read exactly once.
//  * Explicit position ids: positions are a second scatter, run as a second launch keyed by
//    position (dout is then read twice).
//  * sm_90 adds float4 atomically in one instruction (atomic_add_pack).
// Rows with an out-of-range id or position contribute nothing and are recorded (once, by the
// blocks of the first column chunk). padding_idx rows feed the positional gradient only.

#include "core/check.hpp"
#include "kernels/backward.hpp"

namespace tokemb::detail::cuda {

namespace atomic {
// backward_atomic_<dtype>.cu
void run_f32(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device);
void run_bf16(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device);
void run_f16(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device);
void run_f64(const BackwardParams& p, cudaStream_t stream, const DeviceInfo& device);
}  // namespace atomic

void launch_backward_atomic(const BackwardParams& p, cudaStream_t stream,
                            const DeviceInfo& device) {
  switch (p.dout_type) {  // one translation unit per dtype
    case DType::f32:
      atomic::run_f32(p, stream, device);
      return;
    case DType::bf16:
      atomic::run_bf16(p, stream, device);
      return;
    case DType::f16:
      atomic::run_f16(p, stream, device);
      return;
    case DType::f64:
      atomic::run_f64(p, stream, device);
      return;
    default:
      break;
  }
  TOKEMB_FAIL(InvalidArgument, "tokemb::backward: dout has dtype ", dtype_name(p.dout_type),
              ", expected f32, bf16, f16 or f64");
}

}  // namespace tokemb::detail::cuda
