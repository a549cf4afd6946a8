// The CPU reference backend (see cpu_reference.hpp).
#include "host/cpu_reference.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/dispatch.hpp"
#include "core/dropout.hpp"
#include "core/rows.hpp"

namespace tokemb::detail::cpu {

namespace {

template <class T>
acc_t<T> to_acc(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return to_float(x);
  }
}

template <class T>
T from_acc(acc_t<T> x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return from_float<T>(x);
  }
}

// Adds the rows of each group (rows sharing a key; key < 0 means "skip") to grad[key, :],
// summing value(r, d) in double in increasing row order, then adding the sum to the gradient
// element (read in double) and rounding once to its dtype GT.
template <class GT, class Value>
void accumulate_groups(const std::vector<std::int64_t>& keys, std::int64_t D, GT* grad,
                       const Value& value) {
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
      const std::int64_t r = order[j];
      for (std::int64_t d = 0; d < D; ++d)
        acc[static_cast<std::size_t>(d)] += static_cast<double>(value(r, d));
    }
    if (key >= 0) {
      GT* g = grad + key * D;
      for (std::int64_t d = 0; d < D; ++d) {
        const double sum = static_cast<double>(to_acc(g[d])) + acc[static_cast<std::size_t>(d)];
        if constexpr (std::is_same_v<GT, double>) {
          g[d] = sum;
        } else {
          g[d] = from_float<GT>(static_cast<float>(sum));
        }
      }
    }
    i = j;
  }
}

}  // namespace

void forward(const ForwardParams& p) {
  dispatch_float<HostTypes>(p.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
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
        for (std::int64_t d = 0; d < D; ++d) o[d] = from_acc<T>(A(0));
        continue;
      }
      const T* t_row = info.has_token() ? tok + info.token * D : nullptr;  // null: another shard
      const T* p_row = info.position >= 0 ? pos + info.position * D : nullptr;
      if (p.dropout.enabled() || t_row == nullptr) {
        // The general path, as the kernel's: the sum of the terms present (in A), the mask, one
        // rounding.
        for (std::int64_t d = 0; d < D; ++d) {
          A x = t_row != nullptr ? to_acc(t_row[d]) : A(0);
          if (p_row != nullptr) x = t_row != nullptr ? x + to_acc(p_row[d]) : to_acc(p_row[d]);
          if (p.dropout.enabled())
            x = dropout_apply(
                x,
                dropout_factor_at(p.dropout, seed, offset,
                                  static_cast<std::uint64_t>(p.dropout.per_token ? r : r * D + d)));
          o[d] = from_acc<T>(x);
        }
      } else if (p_row != nullptr) {
        for (std::int64_t d = 0; d < D; ++d) o[d] = from_acc<T>(to_acc(t_row[d]) + to_acc(p_row[d]));
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
  dispatch_float<HostTypes>(p.grad_type, [&](auto gtag) {
    using GT = typename decltype(gtag)::type;
    GT* grad_token = static_cast<GT*>(p.grad_token);
    GT* grad_pos = static_cast<GT*>(p.grad_pos);
    if (!p.accumulate) {  // overwrite: exactly zeroing first, then accumulating
      std::fill(grad_token, grad_token + p.V * p.D, from_acc<GT>(acc_t<GT>(0)));
      if (grad_pos != nullptr) std::fill(grad_pos, grad_pos + p.P * p.D, from_acc<GT>(acc_t<GT>(0)));
    }
    dispatch_float<HostTypes>(p.dout_type, [&](auto tag) {
      using G = typename decltype(tag)::type;
      using A = acc_t<G>;
      const G* dout = static_cast<const G*>(p.dout);
      // Element (r, d) of dout, wherever its strides put it.
      auto at = [&](std::int64_t r, std::int64_t d) -> A {
        return to_acc(dout[p.dout_layout.offset(r) + d * p.dout_col_stride]);
      };
      if (p.dropout.enabled()) {  // forward's mask applied to dout (in A), then the same sums
        std::uint64_t seed = 0, offset = 0;
        dropout_seed_offset(p.dropout, &seed, &offset);
        std::vector<A> masked(static_cast<std::size_t>(n * p.D));
        for (std::int64_t r = 0; r < n; ++r)
          for (std::int64_t d = 0; d < p.D; ++d) {
            const std::int64_t e = r * p.D + d;
            const float f = dropout_factor_at(
                p.dropout, seed, offset, static_cast<std::uint64_t>(p.dropout.per_token ? r : e));
            masked[static_cast<std::size_t>(e)] = dropout_apply(at(r, d), f);
          }
        auto value = [&](std::int64_t r, std::int64_t d) {
          return masked[static_cast<std::size_t>(r * p.D + d)];
        };
        accumulate_groups(token_keys, p.D, grad_token, value);
        if (grad_pos != nullptr) accumulate_groups(pos_keys, p.D, grad_pos, value);
        return;
      }
      accumulate_groups(token_keys, p.D, grad_token, at);
      if (grad_pos != nullptr) accumulate_groups(pos_keys, p.D, grad_pos, at);
    });
  });
}

}  // namespace tokemb::detail::cpu
