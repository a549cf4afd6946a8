#pragma once
// Private: argument validation for forward and backward. Everything that can be checked on the
// host is checked here, before any memory is touched; the result is the normalised params the
// backends consume. Messages name the operation, the argument, its value and the valid range.

#include <tokemb/ops.hpp>

#include "core/params.hpp"

namespace tokemb::detail {

ForwardParams validate_forward(const TensorView& ids, const TensorView& token_table,
                               const TensorView& pos_table, const TensorView& out,
                               const Options& options);

BackwardParams validate_backward(const TensorView& ids, const TensorView& dout,
                                 const TensorView& grad_token, const TensorView& grad_pos,
                                 const Options& options);

}  // namespace tokemb::detail
