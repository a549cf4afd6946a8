// The CPU reference backend (see cpu_reference.hpp).
#include "host/cpu_reference.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/dispatch.hpp"
#include "core/dropout.hpp"
#include "core/rows.hpp"

namespace tokemb::detail::cpu {

namespace {

// Adds the dout rows of each group (rows sharing a key; key < 0 means "skip") to
// grad[key, :], summing in double in increasing row order.
template <class G>
void accumulate_groups(const std::vector<std::int64_t>& keys, const G* dout, std::int64_t D,
                       float* grad) {
  std::vector<std::int64_t> order(keys.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return keys[a] < keys[b]; });
  std::vector<double> acc(static_cast<std::size_t>(D));
  std::size_t i = 0;
  while (i < order.size()) {
    const std::int64_t key = keys[static_cast<std::size_t>(order[i])];
    std::size_t j = i;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (; j < order.size() && keys[static_cast<std::size_t>(order[j])] == key; ++j) {
      const G* row = dout + order[j] * D;
      for (std::int64_t d = 0; d < D; ++d) acc[static_cast<std::size_t>(d)] += to_float(row[d]);
    }
    if (key >= 0) {
      float* g = grad + key * D;
      for (std::int64_t d = 0; d < D; ++d)
        g[d] = static_cast<float>(static_cast<double>(g[d]) + acc[static_cast<std::size_t>(d)]);
    }
    i = j;
  }
}

}  // namespace

void forward(const ForwardParams& p) {
  dispatch_float<HostTypes>(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* tok = static_cast<const T*>(p.token_table);
    const T* pos = static_cast<const T*>(p.pos_table);
    T* out = static_cast<T*>(p.out);
    const std::int64_t D = p.D;
    std::uint64_t seed = 0, offset = 0;
    dropout_seed_offset(p.dropout, &seed, &offset);
    for (std::int64_t r = 0; r < p.rows(); ++r) {
      const Row info = resolve_row_any(p, r);
      T* o = out + r * D;
      if (!info.ok()) {
        for (std::int64_t d = 0; d < D; ++d) o[d] = from_float<T>(0.0f);
        continue;
      }
      const T* t_row = info.has_token() ? tok + info.token * D : nullptr;  // null: another shard
      const T* p_row = info.position >= 0 ? pos + info.position * D : nullptr;
      if (p.dropout.enabled() || t_row == nullptr) {
        // The general path, as the kernel's: the f32 sum of the terms present, the mask, one
        // rounding.
        for (std::int64_t d = 0; d < D; ++d) {
          float x = t_row != nullptr ? to_float(t_row[d]) : 0.0f;
          if (p_row != nullptr) x = t_row != nullptr ? x + to_float(p_row[d]) : to_float(p_row[d]);
          if (p.dropout.enabled())
            x = dropout_apply(
                x,
                dropout_factor_at(p.dropout, seed, offset,
                                  static_cast<std::uint64_t>(p.dropout.per_token ? r : r * D + d)));
          o[d] = from_float<T>(x);
        }
      } else if (p_row != nullptr) {
        for (std::int64_t d = 0; d < D; ++d)
          o[d] = from_float<T>(to_float(t_row[d]) + to_float(p_row[d]));
      } else {
        for (std::int64_t d = 0; d < D; ++d) o[d] = t_row[d];
      }
    }
  });
}

void backward(const BackwardParams& p) {
  const std::int64_t n = p.rows();
  std::vector<std::int64_t> token_keys(static_cast<std::size_t>(n), -1);
  std::vector<std::int64_t> pos_keys(static_cast<std::size_t>(n), -1);
  for (std::int64_t r = 0; r < n; ++r) {
    const Row info = resolve_row_any(p, r);
    if (!info.ok()) continue;
    if (info.has_token() && info.token != p.padding_idx)
      token_keys[static_cast<std::size_t>(r)] = info.token;
    pos_keys[static_cast<std::size_t>(r)] = info.position;
  }
  if (!p.accumulate) {  // overwrite: exactly zeroing first, then accumulating
    std::fill(p.grad_token, p.grad_token + p.V * p.D, 0.0f);
    if (p.grad_pos != nullptr) std::fill(p.grad_pos, p.grad_pos + p.P * p.D, 0.0f);
  }
  dispatch_float<HostTypes>(p.dout_type, [&](auto tag) {
    using G = typename decltype(tag)::type;
    const G* dout = static_cast<const G*>(p.dout);
    if (p.dropout.enabled()) {  // forward's mask applied to dout in f32, then the same sums
      std::uint64_t seed = 0, offset = 0;
      dropout_seed_offset(p.dropout, &seed, &offset);
      std::vector<float> masked(static_cast<std::size_t>(n * p.D));
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t d = 0; d < p.D; ++d) {
          const std::int64_t e = r * p.D + d;
          const float f = dropout_factor_at(
              p.dropout, seed, offset, static_cast<std::uint64_t>(p.dropout.per_token ? r : e));
          masked[static_cast<std::size_t>(e)] = dropout_apply(to_float(dout[e]), f);
        }
      accumulate_groups(token_keys, masked.data(), p.D, p.grad_token);
      if (p.grad_pos != nullptr) accumulate_groups(pos_keys, masked.data(), p.D, p.grad_pos);
      return;
    }
    accumulate_groups(token_keys, dout, p.D, p.grad_token);
    if (p.grad_pos != nullptr) accumulate_groups(pos_keys, dout, p.D, p.grad_pos);
  });
}

}  // namespace tokemb::detail::cpu
