#pragma once
// Private: the Dropout a module call draws with (Embedding, nccl::TensorParallelEmbedding): the
// config's probability, mode and seed at one offset, or, in graph-safe mode, {seed, offset} read
// from memory when the call runs.

#include <cstdint>

#include <tokemb/embedding.hpp>
#include <tokemb/ops.hpp>

namespace tokemb::detail {

inline Dropout module_dropout(const EmbeddingConfig& c, std::uint64_t offset,
                              const std::uint64_t* seed_offset = nullptr) {
  Dropout d;
  d.p = c.dropout;
  d.mode = c.dropout_mode;
  d.seed = c.dropout_seed;
  d.offset = offset;
  d.seed_offset = seed_offset;
  return d;
}

}  // namespace tokemb::detail
