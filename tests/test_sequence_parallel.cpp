// The sequence-parallel kernels (kernels/sequence_parallel.cu) on their own, without NCCL: the
// tensor-parallel module (host/nccl/) is their only caller, and its tests need NCCL and several
// GPUs, so these run the kernels wherever a device (or the simulator) is.
//   permute_rows: [B, T, D] <-> the chunked buffer of w ranks' slices, checked against the
//     layout written out on the host, both directions, both layouts, vector and scalar paths;
//   slice_dropout: each rank's slice dropped with the mask of its place in the whole output
//     equals the fused forward's dropout (CPU reference) of the same rows, bitwise for f32.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "tests/test_helpers.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime.h>

#include "core/dropout.hpp"
#include "kernels/launch.hpp"
#endif

namespace tokemb::test {
namespace {

class GpuSequenceParallel : public GpuTest {};

#if TOKEMB_WITH_CUDA
detail::DeviceInfo device_info() {
  detail::DeviceInfo d;
  cudaDeviceGetAttribute(&d.multiprocessors, cudaDevAttrMultiProcessorCount, 0);
  return d;
}

// Row of the chunked buffer that row (b, t) of [B, T, D] goes to, from the layouts' definition:
// batch_first [w][B][Tl], sequence_first [w][Tl][B] = [T][B].
std::int64_t chunked_row_ref(std::int64_t b, std::int64_t t, std::int64_t B, std::int64_t T,
                             int world, bool sequence_first) {
  const std::int64_t Tl = T / world, r = t / Tl, tl = t % Tl;
  return sequence_first ? t * B + b : r * B * Tl + b * Tl + tl;
}
#endif

TEST_F(GpuSequenceParallel, PermuteRowsMovesEachRowToItsRanksSliceAndBack) {
#if TOKEMB_WITH_CUDA
  const StreamView s = stream();
  std::mt19937_64 rng(fresh_seed());
  struct Shape3 {
    std::int64_t B, T, D;
  };
  // D = 24 takes the 16-byte path for f32 and bf16; D = 7 the scalar path.
  for (const Shape3 sh : {Shape3{3, 12, 24}, Shape3{2, 6, 7}}) {
    for (const int world : {1, 2, 3}) {
      for (const bool sequence_first : {false, true}) {
        for (const DType dt : {DType::f32, DType::bf16}) {
          SCOPED_TRACE(::testing::Message() << "B=" << sh.B << " T=" << sh.T << " D=" << sh.D
                                            << " world=" << world << " sequence_first="
                                            << sequence_first << " " << dtype_name(dt));
          const std::int64_t rows = sh.B * sh.T, n = rows * sh.D;
          const std::size_t es = dt == DType::f32 ? 4 : 2;
          std::vector<unsigned char> src(static_cast<std::size_t>(n) * es);
          for (auto& x : src) x = static_cast<unsigned char>(rng());
          const Shape shape{sh.B, sh.T, sh.D};
          Buffer full(dt, shape, Device::cuda(0)), chunked(dt, shape, Device::cuda(0)),
              back(dt, shape, Device::cuda(0));
          ASSERT_EQ(cudaMemcpy(full.data(), src.data(), src.size(), cudaMemcpyHostToDevice),
                    cudaSuccess);
          poison_device(chunked, s);
          poison_device(back, s);
          detail::SliceLayout l;
          l.B = sh.B;
          l.T = sh.T;
          l.D = sh.D;
          l.world = world;
          l.sequence_first = sequence_first;
          detail::cuda::permute_rows(full.data(), chunked.data(), dt, l, true, device_info(),
                                     s.value());
          detail::cuda::permute_rows(chunked.data(), back.data(), dt, l, false, device_info(),
                                     s.value());
          ASSERT_EQ(cudaStreamSynchronize(s.value()), cudaSuccess);
          std::vector<unsigned char> got_chunked(src.size()), got_back(src.size());
          ASSERT_EQ(cudaMemcpy(got_chunked.data(), chunked.data(), src.size(),
                               cudaMemcpyDeviceToHost),
                    cudaSuccess);
          ASSERT_EQ(cudaMemcpy(got_back.data(), back.data(), src.size(), cudaMemcpyDeviceToHost),
                    cudaSuccess);
          const std::size_t row_bytes = static_cast<std::size_t>(sh.D) * es;
          for (std::int64_t b = 0; b < sh.B; ++b)
            for (std::int64_t t = 0; t < sh.T; ++t) {
              const std::int64_t to = chunked_row_ref(b, t, sh.B, sh.T, world, sequence_first);
              ASSERT_EQ(std::memcmp(got_chunked.data() + to * row_bytes,
                                    src.data() + (b * sh.T + t) * row_bytes, row_bytes),
                        0)
                  << "row (" << b << ", " << t << ") is not at chunked row " << to;
            }
          ASSERT_EQ(got_back, src) << "to_chunked then back is not the identity";
        }
      }
    }
  }
#endif
}

TEST_F(GpuSequenceParallel, SliceDropoutDrawsTheMaskOfTheWholeOutput) {
#if TOKEMB_WITH_CUDA
  const StreamView s = stream();
  constexpr std::int64_t B = 2, T = 6, D = 10, V = 30, P = 8;
  std::mt19937_64 rng(fresh_seed());
  auto ids = random_ids<std::int64_t>(B * T, V, IdDistribution::uniform, rng);
  auto tok = random_values<float>(V * D, rng), pos = random_values<float>(P * D, rng);
  const StreamView host_stream = StreamView::legacy_default();
  const Shape ids_s{B, T}, out_s{B, T, D};
  for (const DropoutMode mode : {DropoutMode::element, DropoutMode::token}) {
    Options o;
    o.dropout.p = 0.3f;
    o.dropout.seed = rng();
    o.dropout.offset = rng() % 1000;
    o.dropout.mode = mode;
    // The CPU reference: plain forward, and forward with the fused dropout.
    std::vector<float> plain(B * T * D), want(B * T * D);
    forward(host_view(ids, DType::i64, ids_s), host_view(tok, DType::f32, {V, D}),
            host_view(pos, DType::f32, {P, D}), host_view(plain, DType::f32, out_s), Options{},
            host_stream);
    forward(host_view(ids, DType::i64, ids_s), host_view(tok, DType::f32, {V, D}),
            host_view(pos, DType::f32, {P, D}), host_view(want, DType::f32, out_s), o,
            host_stream);
    const detail::DropoutParams d = detail::dropout_params(o.dropout);
    for (const int world : {1, 2, 3}) {
      for (const bool sequence_first : {false, true}) {
        SCOPED_TRACE(::testing::Message() << (mode == DropoutMode::token ? "token" : "element")
                                          << " world=" << world
                                          << " sequence_first=" << sequence_first);
        const std::int64_t Tl = T / world;
        for (int rank = 0; rank < world; ++rank) {
          // This rank's slice of the plain output, in its layout.
          std::vector<float> slice, slice_want;
          auto take = [&](std::int64_t b, std::int64_t t) {
            for (std::int64_t c = 0; c < D; ++c) {
              slice.push_back(plain[(b * T + t) * D + c]);
              slice_want.push_back(want[(b * T + t) * D + c]);
            }
          };
          if (sequence_first) {
            for (std::int64_t tl = 0; tl < Tl; ++tl)
              for (std::int64_t b = 0; b < B; ++b) take(b, rank * Tl + tl);
          } else {
            for (std::int64_t b = 0; b < B; ++b)
              for (std::int64_t tl = 0; tl < Tl; ++tl) take(b, rank * Tl + tl);
          }
          Buffer buf = to_device(slice, DType::f32, Shape{static_cast<std::int64_t>(slice.size())},
                                 s);
          detail::SliceLayout l;
          l.B = B;
          l.T = T;
          l.D = D;
          l.rank = rank;
          l.world = world;
          l.slice = true;
          l.sequence_first = sequence_first;
          detail::cuda::slice_dropout(buf.data(), DType::f32, l, d, device_info(), s.value());
          const auto got = to_host<float>(buf, s);
          ASSERT_TRUE(same_bits(got.data(), slice_want.data(), got.size() * 4))
              << "rank " << rank << ": the slice's mask is not the whole output's";
        }
      }
    }
  }
#endif
}

}  // namespace
}  // namespace tokemb::test
