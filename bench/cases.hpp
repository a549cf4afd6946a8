#pragma once
// The benchmark cases (shapes x dtypes x id types x id distributions) and the minimum number of
// bytes each operation must move, from which every bandwidth figure is computed.

#include <cstdint>
#include <string>
#include <vector>

#include <tokemb/types.hpp>

#include "bench/id_distributions.hpp"

namespace bench {

struct ShapeSpec {
  const char* name;
  std::int64_t V;       // vocabulary (token-table rows)
  std::int64_t D;       // embedding width
  std::int64_t P;       // context length (position-table rows)
  std::int64_t B, T;    // ids are [B, T]
  std::int64_t offset;  // position of time step t is offset + t
};

// GPT-2 small: vocab 50257, width 768, context 1024, full-context training batches.
inline constexpr ShapeSpec kGpt2B8{"gpt2_b8", 50257, 768, 1024, 8, 1024, 0};
inline constexpr ShapeSpec kGpt2B64{"gpt2_b64", 50257, 768, 1024, 64, 1024, 0};
// Llama-3-8B-like vocabulary and width, with a learned 4096-row position table.
inline constexpr ShapeSpec kLlama{"llama3_8b", 128256, 4096, 4096, 4, 4096, 0};
// Decoding with a KV cache: 64 sequences, one new token each, at position 1000.
inline constexpr ShapeSpec kDecode{"decode_b64", 50257, 768, 1024, 64, 1, 1000};
// Decoding a wide batch: 4096 sequences of one token. The deterministic positional gradient has
// 4096 rows for one position, summed in chunks of 64 (kernels/backward_sorted.cu, pos_reduce).
inline constexpr ShapeSpec kDecodeWide{"decode_b4096", 50257, 768, 1024, 4096, 1, 1000};
// The book's example: GPT-2 vocabulary, width 256, batch 8 of 4 tokens, context length 4.
inline constexpr ShapeSpec kBook{"book", 50257, 256, 4, 8, 4, 0};

struct Case {
  ShapeSpec shape;
  tokemb::DType dtype;    // tables, out and dout
  tokemb::DType id_type;  // i32 or i64
  Dist dist;

  std::int64_t rows() const { return shape.B * shape.T; }
  std::size_t elt() const { return tokemb::dtype_size(dtype); }
  // "gpt2_b64/f32/i64/uniform": the part of every benchmark name after the op.
  std::string key() const {
    return std::string(shape.name) + "/" + tokemb::dtype_name(dtype) + "/" +
           tokemb::dtype_name(id_type) + "/" + dist_name(dist);
  }
};

// The matrix. Every case gets a CPU-reference forward and backward (at the same shape: none was
// too slow to run once, see bench/README.md) and, with a GPU, our forward, atomic backward and
// deterministic backward, each with its baseline and copy ceiling.
inline std::vector<Case> all_cases() {
  using tokemb::DType;
  std::vector<Case> cases;
  // The target matrix: GPT-2 small B=64, three distributions, f32 and bf16, int64 ids (PyTorch's
  // id type), first so that a short run still covers it.
  for (DType dt : {DType::f32, DType::bf16})
    for (Dist d : {Dist::uniform, Dist::zipf, Dist::same})
      cases.push_back({kGpt2B64, dt, DType::i64, d});
  cases.push_back({kGpt2B64, DType::f16, DType::i64, Dist::uniform});
  for (DType dt : {DType::f32, DType::bf16})
    cases.push_back({kGpt2B64, dt, DType::i32, Dist::uniform});
  for (DType dt : {DType::f32, DType::bf16})
    cases.push_back({kGpt2B8, dt, DType::i64, Dist::uniform});
  for (Dist d : {Dist::uniform, Dist::zipf}) cases.push_back({kLlama, DType::bf16, DType::i64, d});
  for (DType dt : {DType::f32, DType::bf16})
    cases.push_back({kDecode, dt, DType::i64, Dist::uniform});
  cases.push_back({kDecodeWide, DType::f32, DType::i64, Dist::uniform});
  cases.push_back({kBook, DType::f32, DType::i64, Dist::uniform});
  return cases;
}

// ---- Minimum bytes ---------------------------------------------------------------------------
// What any implementation must read or write at least once (DRAM traffic with a perfect cache of
// unlimited size for reuse within one call, none across calls: we flush L2 between iterations).
// distinct = number of distinct token ids in the batch (counted on the host); the positions of
// a batch are offset .. offset + T - 1, so T distinct position rows.

// Forward: read ids, read each distinct token row once, read the T position rows once, write out.
//   ids*idsize + distinct*D*elt + T*D*elt + B*T*D*elt
inline double forward_min_bytes(const Case& c, std::int64_t distinct) {
  const double D = static_cast<double>(c.shape.D), elt = static_cast<double>(c.elt());
  return static_cast<double>(c.rows()) * tokemb::dtype_size(c.id_type) +
         static_cast<double>(distinct) * D * elt + static_cast<double>(c.shape.T) * D * elt +
         static_cast<double>(c.rows()) * D * elt;
}

// Backward alone (Options::accumulate = true: grad += ...): read ids, read dout, read-modify-write
// each distinct f32 token-gradient row and each of the T f32 position-gradient rows.
//   ids*idsize + B*T*D*elt + 2*distinct*D*4 + 2*T*D*4
inline double backward_accumulate_min_bytes(const Case& c, std::int64_t distinct) {
  const double D = static_cast<double>(c.shape.D);
  return static_cast<double>(c.rows()) * tokemb::dtype_size(c.id_type) +
         static_cast<double>(c.rows()) * D * static_cast<double>(c.elt()) +
         2.0 * static_cast<double>(distinct) * D * 4.0 +
         2.0 * static_cast<double>(c.shape.T) * D * 4.0;
}

// Zeroing plus backward (what the backward rows time, and what PyTorch's backward produces: fresh
// gradients). The gradients' final contents are fully determined by the inputs, so the minimum
// is: write both whole f32 gradient tables once, read ids and dout once. (The rows that get a
// contribution need not be read back after zeroing, so no read-modify-write is counted: this is
// the smaller, stricter figure.)
//   (V + P)*D*4 + ids*idsize + B*T*D*elt
inline double zero_backward_min_bytes(const Case& c) {
  const double D = static_cast<double>(c.shape.D);
  return static_cast<double>(c.shape.V + c.shape.P) * D * 4.0 +
         static_cast<double>(c.rows()) * tokemb::dtype_size(c.id_type) +
         static_cast<double>(c.rows()) * D * static_cast<double>(c.elt());
}

// ---- Table contents ----------------------------------------------------------------------------
// Deterministic values in [-scale, scale), the same on the host and the device, so CPU and GPU
// cases read identical tables (no NaNs or subnormals that could slow down either side).
#if defined(__CUDACC__)
#define BENCH_HD __host__ __device__
#else
#define BENCH_HD
#endif

BENCH_HD inline float hash_value(std::uint64_t seed, std::uint64_t i, float scale) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  // 24 random bits -> [-1, 1), exactly representable in f32.
  const float u =
      static_cast<float>(static_cast<std::uint32_t>(z >> 40)) * (1.0f / 8388608.0f) - 1.0f;
  return u * scale;
}

inline constexpr std::uint64_t kSeedTokenTable = 11;
inline constexpr std::uint64_t kSeedPositionTable = 12;
inline constexpr std::uint64_t kSeedDout = 13;
inline constexpr float kTableScale = 0.02f;  // GPT-2's init std
inline constexpr float kDoutScale = 1.0f;

}  // namespace bench
