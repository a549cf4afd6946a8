#pragma once
// The check shared by the one-rank GPU test (test_nccl.cpp) and the multi-GPU runner
// (nccl_multi_rank.cpp): run the tensor-parallel module on `world` ranks (one thread each, NCCL
// communicators from ncclCommInitAll) and compare every rank's output slice and gradient rows
// with one unsharded GPU run. Returns an empty string on success, else what differed.
#include <nccl.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <tokemb/nccl.hpp>
#include <tokemb/tokemb.hpp>

namespace tokemb::test {

struct NcclCase {
  std::int64_t V = 1000, padded = 1024, D = 64, P = 64, B = 3, T = 8;
  bool sequence_parallel = false;
  nccl::SequenceLayout layout = nccl::SequenceLayout::batch_first;
  float dropout = 0.0f;
};

inline std::string run_nccl_check(const NcclCase& c, int world, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> tok(static_cast<std::size_t>(c.padded * c.D)), pos(static_cast<std::size_t>(c.P * c.D)),
      dout_full(static_cast<std::size_t>(c.B * c.T * c.D));
  for (auto* v : {&tok, &pos, &dout_full})
    for (float& x : *v) x = u(rng);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(c.B * c.T));
  for (auto& x : ids) x = std::uniform_int_distribution<std::int64_t>(0, c.V - 1)(rng);

  // The unsharded reference on device 0.
  Stream s0(0);
  auto dev = [&](auto& v, DType dt, Shape sh) {
    Buffer b(dt, sh, Device::cuda(0));
    copy(b, TensorView(v.data(), dt, sh, Device::cpu()), s0);
    return b;
  };
  Buffer ids_d = dev(ids, DType::i64, Shape{c.B, c.T});
  Buffer tok_d = dev(tok, DType::f32, Shape{c.padded, c.D});
  Buffer pos_d = dev(pos, DType::f32, Shape{c.P, c.D});
  Buffer dout_d = dev(dout_full, DType::f32, Shape{c.B, c.T, c.D});
  Buffer out_d(DType::f32, Shape{c.B, c.T, c.D}, Device::cuda(0));
  Buffer gt_d(DType::f32, Shape{c.padded, c.D}, Device::cuda(0));
  Buffer gp_d(DType::f32, Shape{c.P, c.D}, Device::cuda(0));
  Options o;
  o.vocab_size = c.V;
  o.backward_mode = BackwardMode::deterministic;
  o.accumulate = false;
  o.dropout.p = c.dropout;
  o.dropout.seed = seed;
  o.dropout.offset = 0;
  forward(ids_d, tok_d, pos_d, out_d, o, s0);
  const std::size_t ws_bytes = backward_workspace_size(ids_d, dout_d, gt_d, gp_d, o);
  Buffer ws(DType::i64, Shape{static_cast<std::int64_t>(ws_bytes / 8 + 1)}, Device::cuda(0));
  fill_zero(gt_d, s0);
  backward(ids_d, dout_d, gt_d, gp_d, o, Workspace{ws.data(), ws_bytes}, s0);
  std::vector<float> ref_out(dout_full.size()), ref_gt(tok.size()), ref_gp(pos.size());
  copy(TensorView(ref_out.data(), DType::f32, Shape{c.B, c.T, c.D}, Device::cpu()), out_d, s0);
  copy(TensorView(ref_gt.data(), DType::f32, Shape{c.padded, c.D}, Device::cpu()), gt_d, s0);
  copy(TensorView(ref_gp.data(), DType::f32, Shape{c.P, c.D}, Device::cpu()), gp_d, s0);
  synchronize(s0);

  std::vector<ncclComm_t> comms(static_cast<std::size_t>(world));
  std::vector<int> devs(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) devs[static_cast<std::size_t>(r)] = r;
  if (ncclCommInitAll(comms.data(), world, devs.data()) != ncclSuccess)
    return "ncclCommInitAll failed";
  std::vector<std::string> errors(static_cast<std::size_t>(world));
  const std::int64_t Tl = c.T / world;
  auto rank_main = [&](int r) {
    std::ostringstream err;
    try {
      cudaSetDevice(r);
      Stream st(r);
      nccl::ParallelConfig pc;
      pc.embedding.vocab_size = c.V;
      pc.embedding.dim = c.D;
      pc.embedding.context_length = c.P;
      pc.embedding.device = Device::cuda(r);
      pc.embedding.backward_mode = BackwardMode::deterministic;
      pc.embedding.dropout = c.dropout;
      pc.embedding.dropout_seed = seed;
      pc.padded_vocab = c.padded;
      pc.sequence_parallel = c.sequence_parallel;
      pc.layout = c.layout;
      nccl::TensorParallelEmbedding m(pc, comms[static_cast<std::size_t>(r)], st);
      const nccl::Shard sh = m.shard();
      m.local().load_token_table(tok.data() + sh.start * c.D,
                                 static_cast<std::size_t>(sh.rows * c.D) * 4);
      m.local().load_position_table(pos.data(), pos.size() * 4);
      Buffer ids_r(DType::i64, Shape{c.B, c.T}, Device::cuda(r));
      copy(ids_r, TensorView(ids.data(), DType::i64, Shape{c.B, c.T}, Device::cpu()), st);
      // This rank's slice of the reference (and of dout), in the configured layout.
      const bool sf = c.layout == nccl::SequenceLayout::sequence_first;
      const Shape out_shape = !c.sequence_parallel ? Shape{c.B, c.T, c.D}
                              : sf                 ? Shape{Tl, c.B, c.D}
                                                   : Shape{c.B, Tl, c.D};
      auto slice_of = [&](const std::vector<float>& full) {
        if (!c.sequence_parallel) return full;
        std::vector<float> v;
        for (std::int64_t i = 0; i < c.B * Tl; ++i) {
          const std::int64_t b = sf ? i % c.B : i / Tl, tl = sf ? i / c.B : i % Tl;
          const std::int64_t row = b * c.T + r * Tl + tl;
          v.insert(v.end(), full.begin() + row * c.D, full.begin() + (row + 1) * c.D);
        }
        return v;
      };
      const std::vector<float> want_out = slice_of(ref_out);
      std::vector<float> dout_slice = slice_of(dout_full);
      Buffer out_r(DType::f32, out_shape, Device::cuda(r));
      Buffer dout_r(DType::f32, out_shape, Device::cuda(r));
      copy(dout_r, TensorView(dout_slice.data(), DType::f32, out_shape, Device::cpu()), st);
      m.forward(ids_r, out_r);
      m.zero_grad_and_backward(ids_r, dout_r);
      std::vector<float> got(want_out.size());
      copy(TensorView(got.data(), DType::f32, out_shape, Device::cpu()), out_r, st);
      const std::vector<float> gt = m.local().token_grad_to_host();
      const std::vector<float> gp = m.local().position_grad_to_host();
      m.synchronize();
      for (std::size_t i = 0; i < got.size(); ++i)
        if (std::memcmp(&got[i], &want_out[i], 4) != 0) {
          err << "rank " << r << ": output element " << i << " is " << got[i] << ", want "
              << want_out[i] << "; ";
          break;
        }
      for (std::int64_t row = 0; row < sh.rows && sh.start + row < c.V; ++row)
        for (std::int64_t d = 0; d < c.D; ++d) {
          const float a = gt[static_cast<std::size_t>(row * c.D + d)];
          const float b = ref_gt[static_cast<std::size_t>((sh.start + row) * c.D + d)];
          if (std::memcmp(&a, &b, 4) != 0) {
            err << "rank " << r << ": token gradient row " << sh.start + row << " differs; ";
            row = sh.rows;
            break;
          }
        }
      for (std::size_t i = 0; i < gp.size(); ++i)
        if (std::fabs(gp[i] - ref_gp[i]) > 1e-5f * (1.0f + std::fabs(ref_gp[i]))) {
          err << "rank " << r << ": position gradient element " << i << " is " << gp[i]
              << ", want " << ref_gp[i] << "; ";
          break;
        }
    } catch (const std::exception& e) {
      err << "rank " << r << ": " << e.what();
    }
    errors[static_cast<std::size_t>(r)] = err.str();
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  for (ncclComm_t comm : comms) ncclCommDestroy(comm);
  std::string all;
  for (const auto& e : errors) all += e;
  return all;
}

}  // namespace tokemb::test
