#pragma once
// Private: the CPU backend — plain, obviously correct loops that every GPU result is checked
// against. Same semantics as the CUDA backend; any B, T, D.

#include "core/params.hpp"

namespace tokemb::detail::cpu {

/// out[b, t] = token[id] + pos[position], summed in f32 (f64 for f64 tables) and rounded once to
/// the table dtype.
/// Rows with an out-of-range id or position are written as zeros.
void forward(const ForwardParams& p);

/// grad_token[id] += sum of dout rows with that id; grad_pos[position] += sum of dout rows at
/// that position. Each sum is taken in double over the rows in increasing b * T + t order, added
/// to the gradient element in double and rounded once to the gradient's dtype (f32, or dout's). padding_idx rows give no token gradient; rows with an
/// out-of-range id or position give no gradient at all.
void backward(const BackwardParams& p);

}  // namespace tokemb::detail::cpu
