"""tokemb for PyTorch: the book's ``tok_emb(ids) + pos_emb(arange(T))`` as one fused op with
autograd, on CPU tensors (tokemb's CPU backend) and CUDA tensors (tokemb's kernels).

- :class:`TokenPositionEmbedding`, an ``nn.Module`` holding the two ``nn.Embedding``s under the
  book's names (``tok_emb``, ``pos_emb``): same initialisation under ``torch.manual_seed``, same
  ``padding_idx`` semantics, same ``state_dict`` keys.
- :func:`token_position_embedding`, the functional form on two weight tensors (use it to swap
  the input layer of an existing model without touching its parameters or checkpoints).

With a ``process_group`` the module is vocabulary-parallel (Megatron's VocabParallelEmbedding):
each rank holds its shard of the token table and the collectives run on that group through
``torch.distributed`` (NCCL for CUDA tensors, gloo for CPU tensors); ``sequence_parallel=True``
leaves each rank its slice of the sequence.

Gradients are computed in each parameter's dtype: tokemb sums in float32 (float64 for float64
tables) and rounds each gradient element once, so a bf16 table's backward allocates no float32
[V, D] copy. ids, position_ids and the incoming gradient are read with their strides (a slice
such as ``batch[:, :-1]``, a transpose, the expanded gradient of ``out.sum()``), never copied.
ids may have any number of leading dimensions ([T], [B, T], [A, B, T], ...; positions run along
the last); empty batches give empty outputs. The backward is itself differentiable (double
backward, ``gradgradcheck``), except across the collectives of a ``process_group``. The
backward is tokemb's overwriting pass (every gradient row written once, no zeroing pass); it is
the deterministic one when the module asks for it or ``torch.use_deterministic_algorithms(True)``
is on. With torch >= 2.4 the ops are registered with ``torch.library.custom_op`` (fake
implementations included), so ``torch.compile`` traces through them without graph breaks; older
torch uses ``torch.autograd.Function``.
"""

from typing import Optional, Tuple

import torch
from torch import nn

import tokemb as _tk

__all__ = ["TokenPositionEmbedding", "token_position_embedding", "draw_seed_offset",
           "vocab_shard", "nest_book_state_dict", "USES_CUSTOM_OP"]

# ---- the two ops, on plain (non-differentiable) tensors ----------------------------------------
#
# Dropout's (seed, offset) travel as a 2-element int64 tensor on the op's device (``seed_offset``),
# drawn from PyTorch's generator for that device and read by the kernel when it runs: no host
# synchronisation, graph-safe, and saved for backward so that it regenerates forward's mask.


def _forward_impl(ids, token_weight, pos_weight, position_offset, position_ids, cu_seqlens,
                  padding_idx, dropout_p, dropout_mode, seed_offset):
    return _tk.forward(ids, token_weight, pos_weight, position_offset=position_offset,
                       position_ids=position_ids, cu_seqlens=cu_seqlens, padding_idx=padding_idx,
                       dropout_p=dropout_p, dropout_mode=dropout_mode, seed_offset=seed_offset)


def _backward_impl(ids, dout, vocab_size, context_length, position_offset, position_ids,
                   cu_seqlens, padding_idx, deterministic, dropout_p, dropout_mode, seed_offset):
    dim = dout.shape[-1]
    # The gradients in dout's dtype, which the callers make the tables' dtype: tokemb sums in f32
    # (f64 for f64) and rounds each element once, so a bf16 table's gradient needs no f32 [V, D]
    # copy. accumulate=False overwrites every row, so uninitialised memory is fine. dout is read
    # with its strides (an expanded gradient of out.sum() included): no copy.
    gt = torch.empty((vocab_size, dim), dtype=dout.dtype, device=dout.device)
    gp = torch.empty((context_length, dim), dtype=dout.dtype, device=dout.device)
    _tk.backward(ids, dout, gt, gp if context_length > 0 else None,
                 position_offset=position_offset, position_ids=position_ids,
                 cu_seqlens=cu_seqlens, padding_idx=padding_idx, dropout_p=dropout_p,
                 dropout_mode=dropout_mode, seed_offset=seed_offset, accumulate=False,
                 deterministic=deterministic)
    return gt, gp


def _dout_grad(ids, grad_gt, grad_gp, vocab_size, context_length, dim, dtype, position_offset,
               position_ids, cu_seqlens, padding_idx, deterministic, dropout_p, dropout_mode,
               seed_offset):
    """The backward of the backward: backward is linear in dout,
    grad_token[ids[r]] += mask[r] * dout[r] (not for padding_idx) and grad_pos[pos(r)] +=
    mask[r] * dout[r], so the gradient of dout is mask[r] * (grad_gt[ids[r]] + grad_gp[pos(r)])
    with no token term for padding_idx: the forward op on the incoming gradients as tables, with
    the same positions and dropout (seed, offset), its padding row zeroed. It is itself the
    differentiable forward op, so every higher order follows."""
    if grad_gt is None:
        grad_gt = torch.zeros((vocab_size, dim), dtype=dtype, device=ids.device)
    # Tables are read as row-major memory (an incoming gradient may be an expanded view).
    grad_gt = grad_gt.contiguous()
    if padding_idx is not None:
        row = torch.tensor([padding_idx % vocab_size], dtype=torch.int64, device=grad_gt.device)
        grad_gt = grad_gt.index_fill(0, row, 0)
    if context_length == 0:
        grad_gp = None
    elif grad_gp is None:
        grad_gp = torch.zeros((context_length, dim), dtype=dtype, device=ids.device)
    else:
        grad_gp = grad_gp.contiguous()
    return _apply(ids, grad_gt, grad_gp, position_offset, position_ids, cu_seqlens, padding_idx,
                  dropout_p, dropout_mode, seed_offset, deterministic)


def _use_deterministic(flag):
    return bool(flag) or torch.are_deterministic_algorithms_enabled()


def draw_seed_offset(device, generator=None):
    """A fresh dropout (seed, offset) as an int64 [2] tensor on ``device``, drawn from
    ``generator`` (None: PyTorch's default generator for that device), so that
    ``torch.manual_seed`` makes the masks reproducible and consecutive draws differ. A device
    op: nothing synchronises."""
    return torch.empty(2, dtype=torch.int64, device=device).random_(generator=generator)


_OPTIONAL = ("position_ids", "cu_seqlens", "seed_offset")


def _grads(ctx, grad_out):
    ids = ctx.saved_tensors[0]
    opt = {name: (None if none else t) for name, none, t in
           zip(_OPTIONAL, ctx.none, ctx.saved_tensors[1:])}
    # Gradients in the tables' dtype (PyTorch's rule for a parameter's gradient), computed by
    # tokemb in that dtype: a dout of another dtype is converted, never the [V, D] gradient.
    dout = grad_out if grad_out.dtype == ctx.token_dtype else grad_out.to(ctx.token_dtype)
    gt, gp = _backward(ids, dout, ctx.vocab_size, ctx.context_length, ctx.position_offset,
                       opt["position_ids"], opt["cu_seqlens"], ctx.padding_idx,
                       _use_deterministic(ctx.deterministic), ctx.dropout_p, ctx.dropout_mode,
                       opt["seed_offset"])
    return gt, (gp if ctx.context_length > 0 else None)


def _save(ctx, ids, token_weight, pos_weight, position_offset, position_ids, cu_seqlens,
          padding_idx, dropout_p, dropout_mode, seed_offset, deterministic):
    optional = (position_ids, cu_seqlens, seed_offset)
    ctx.none = tuple(t is None for t in optional)
    # save_for_backward takes tensors only: ids stands in for the absent ones.
    ctx.save_for_backward(ids, *(ids if t is None else t for t in optional))
    ctx.vocab_size = token_weight.shape[0]
    ctx.context_length = 0 if pos_weight is None else pos_weight.shape[0]
    ctx.position_offset = position_offset
    ctx.padding_idx = padding_idx
    ctx.dropout_p = dropout_p
    ctx.dropout_mode = dropout_mode
    ctx.deterministic = deterministic
    ctx.token_dtype = token_weight.dtype
    ctx.pos_dtype = None if pos_weight is None else pos_weight.dtype


_NONE_GRADS = (None,) * 8  # position_offset ... deterministic: not differentiable


def _save_backward(ctx, ids, dout, vocab_size, context_length, position_offset, position_ids,
                   cu_seqlens, padding_idx, deterministic, dropout_p, dropout_mode, seed_offset):
    """What the backward op's own backward (_dout_grad) needs: the forward's row arguments."""
    optional = (position_ids, cu_seqlens, seed_offset)
    ctx.none = tuple(t is None for t in optional)
    ctx.save_for_backward(ids, *(ids if t is None else t for t in optional))
    ctx.args = (vocab_size, context_length, dout.shape[-1], dout.dtype, position_offset)
    ctx.rest = (padding_idx, deterministic, dropout_p, dropout_mode)


def _backward_grads(ctx, grad_gt, grad_gp):
    ids = ctx.saved_tensors[0]
    position_ids, cu_seqlens, seed_offset = (None if none else t for none, t in
                                             zip(ctx.none, ctx.saved_tensors[1:]))
    padding_idx, deterministic, dropout_p, dropout_mode = ctx.rest
    return _dout_grad(ids, grad_gt, grad_gp, *ctx.args, position_ids, cu_seqlens, padding_idx,
                      deterministic, dropout_p, dropout_mode, seed_offset)


_NONE_BACKWARD_GRADS = (None,) * 10  # vocab_size ... seed_offset

USES_CUSTOM_OP = hasattr(torch, "library") and hasattr(torch.library, "custom_op")

if USES_CUSTOM_OP:  # torch >= 2.4: visible to torch.compile, no graph breaks

    @torch.library.custom_op("tokemb::forward", mutates_args=())
    def _forward_op(ids: torch.Tensor, token_weight: torch.Tensor,
                    pos_weight: Optional[torch.Tensor], position_offset: int,
                    position_ids: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor],
                    padding_idx: Optional[int], dropout_p: float, dropout_mode: str,
                    seed_offset: Optional[torch.Tensor], deterministic: bool) -> torch.Tensor:
        return _forward_impl(ids, token_weight, pos_weight, position_offset, position_ids,
                             cu_seqlens, padding_idx, dropout_p, dropout_mode, seed_offset)

    @_forward_op.register_fake
    def _(ids, token_weight, pos_weight, position_offset, position_ids, cu_seqlens, padding_idx,
          dropout_p, dropout_mode, seed_offset, deterministic):
        return token_weight.new_empty((*ids.shape, token_weight.shape[1]))

    @torch.library.custom_op("tokemb::backward", mutates_args=())
    def _backward_op(ids: torch.Tensor, dout: torch.Tensor, vocab_size: int,
                     context_length: int, position_offset: int,
                     position_ids: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor],
                     padding_idx: Optional[int], deterministic: bool, dropout_p: float,
                     dropout_mode: str,
                     seed_offset: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        return _backward_impl(ids, dout, vocab_size, context_length, position_offset,
                              position_ids, cu_seqlens, padding_idx, deterministic, dropout_p,
                              dropout_mode, seed_offset)

    @_backward_op.register_fake
    def _(ids, dout, vocab_size, context_length, position_offset, position_ids, cu_seqlens,
          padding_idx, deterministic, dropout_p, dropout_mode, seed_offset):
        d = dout.shape[-1]
        return (dout.new_empty((vocab_size, d)), dout.new_empty((context_length, d)))

    def _setup_context(ctx, inputs, output):
        _save(ctx, *inputs)

    def _autograd_backward(ctx, grad_out):
        gt, gp = _grads(ctx, grad_out)
        return (None, gt, gp) + _NONE_GRADS

    def _setup_backward_context(ctx, inputs, output):
        _save_backward(ctx, *inputs)

    def _autograd_backward_backward(ctx, grad_gt, grad_gp):
        return (None, _backward_grads(ctx, grad_gt, grad_gp)) + _NONE_BACKWARD_GRADS

    _forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)
    # The backward is differentiable too (double backward, gradgradcheck, Hessian-vector
    # products): its gradient is the forward op on the incoming gradients (_dout_grad).
    _backward_op.register_autograd(_autograd_backward_backward,
                                   setup_context=_setup_backward_context)
    _backward = _backward_op

    def _apply(*args):
        return _forward_op(*args)

else:  # older torch: an autograd.Function (torch.compile, where present, breaks the graph here)

    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            _save(ctx, *args)
            return _forward_impl(*args[:-1])

        @staticmethod
        def backward(ctx, grad_out):
            gt, gp = _grads(ctx, grad_out)
            return (None, gt, gp) + _NONE_GRADS

    class _BackwardFunction(torch.autograd.Function):
        """The backward as a differentiable function of dout (see _dout_grad)."""

        @staticmethod
        def forward(ctx, *args):
            ctx.set_materialize_grads(False)  # an unused gradient stays None: no [V, D] zeros
            _save_backward(ctx, *args)
            return _backward_impl(*args)

        @staticmethod
        def backward(ctx, grad_gt, grad_gp):
            return (None, _backward_grads(ctx, grad_gt, grad_gp)) + _NONE_BACKWARD_GRADS

    def _backward(*args):
        return _BackwardFunction.apply(*args)

    def _apply(*args):
        return _Function.apply(*args)


# ---- vocabulary-parallel (tensor-parallel) forward and backward over torch.distributed ----------


def vocab_shard(rows, rank, world):
    """(start, rows) of the token table that ``rank`` of ``world`` holds: an even split, the
    first ``rows % world`` ranks one row more (tokemb::nccl::vocab_shard's split)."""
    rows, rank, world = int(rows), int(rank), int(world)
    if not 0 <= rank < world:
        raise _tk.InvalidArgument(f"vocab_shard: rank {rank} is outside [0, {world})")
    if rows < world:
        raise _tk.InvalidArgument(f"vocab_shard: {rows} table rows cannot be split over {world} "
                                  "ranks")
    base, extra = divmod(rows, world)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


class _Parallel:
    """What the parallel autograd function needs to know about the module's group."""

    def __init__(self, group, rank, world, start, vocab_size, padding_idx, sequence_parallel,
                 deterministic):
        self.group, self.rank, self.world = group, rank, world
        self.start, self.vocab_size = start, vocab_size
        self.padding_idx = padding_idx
        self.sequence_parallel = sequence_parallel
        self.deterministic = deterministic
        self.zeros = None

    def pos_for_rank(self, pos_weight):
        """Rank 0 adds the positional term; the others pass a zero table of the same shape, so
        that every rank validates the positions identically (a bad position raises on every
        rank before any collective, never on rank 0 alone) and adds exact zeros."""
        if pos_weight is None or self.rank == 0:
            return pos_weight
        z = self.zeros
        if z is None or z.shape != pos_weight.shape or z.dtype != pos_weight.dtype or \
                z.device != pos_weight.device:
            z = self.zeros = torch.zeros_like(pos_weight, memory_format=torch.contiguous_format)
        return z

    def backend(self):
        import torch.distributed as dist
        return str(dist.get_backend(self.group)).lower()


def _dropout_rows(x, p, mode, seed_offset):
    """tokemb's dropout mask applied to a full contiguous [..., T, D] tensor: a forward with
    identity ids (row r of x viewed as a [rows, D] table), so element (r, d) gets exactly the mask
    the fused one-process forward gives it (the mask depends on the element's flat index only)."""
    D = x.shape[-1]
    rows = torch.arange(x.numel() // D, device=x.device, dtype=torch.int64).view(x.shape[:-1])
    return _tk.forward(rows, x.reshape(-1, D), None, dropout_p=p, dropout_mode=mode,
                       seed_offset=seed_offset)


class _ParallelFunction(torch.autograd.Function):
    """Megatron's VocabParallelEmbedding with tokemb's sharded lookup: each rank looks up the ids
    in its shard (other shards' ids give zeros), rank 0 adds the positions, the partial outputs
    are summed over the group (all_reduce; sequence parallel: a reduce-scatter over the
    sequence), then dropout with the one-process mask. Every rank must call it with the same
    ids, positions and shapes (the collectives' rule)."""

    @staticmethod
    def forward(ctx, ids, token_weight, pos_weight, par, position_offset, position_ids,
                cu_seqlens, dropout_p, dropout_mode, seed_offset):
        import torch.distributed as dist
        if ids.dim() < 1:
            raise _tk.InvalidArgument("TokenPositionEmbedding: ids is a 0-d tensor; expected "
                                      "[..., T] (positions run along the last dimension)")
        T = ids.shape[-1]
        if par.sequence_parallel and T % par.world:
            raise _tk.InvalidArgument(
                f"TokenPositionEmbedding: sequence_parallel needs T divisible by the group size; "
                f"T is {T}, the group has {par.world} ranks")
        # The local lookup runs (and raises for a bad id or position, on every rank alike)
        # before any collective: a failing rank never leaves the others waiting in one.
        local = _tk.forward(ids, token_weight, par.pos_for_rank(pos_weight),
                            position_offset=position_offset, position_ids=position_ids,
                            cu_seqlens=cu_seqlens, padding_idx=par.padding_idx,
                            vocab_start=par.start, vocab_size=par.vocab_size)
        if dropout_p > 0.0:
            # Every rank applies rank 0's draw: the mask must be the same on all of them.
            if par.rank != 0:
                seed_offset = torch.zeros_like(seed_offset)
            dist.all_reduce(seed_offset, group=par.group)
        c = T // par.world
        if par.sequence_parallel and dropout_p == 0.0 and par.backend() == "nccl":
            # Rank r receives the sum of everyone's tokens [r*c, (r+1)*c) of every sequence.
            out = local.new_empty((*ids.shape[:-1], c, local.shape[-1]))
            dist.reduce_scatter(out, [local[..., r * c:(r + 1) * c, :].contiguous()
                                      for r in range(par.world)], group=par.group)
        else:
            # gloo has no reduce_scatter (torch 1.13); with dropout the mask is applied to the
            # full sum (it is a function of the element's place in [B, T, D]) before slicing.
            if local.dtype != torch.float32 and par.backend() == "gloo":
                # gloo cannot sum bf16 (torch 1.13). In f32 each element's nonzero partials
                # (the token row on one rank, the positional row on rank 0) add as the fused
                # kernel adds them and round once: without dropout, the one-process bits. With
                # dropout, rank 0's own rows were already rounded once before the scaling, so
                # those may differ from the fused kernel by one rounding (as over NCCL, which
                # sums bf16 itself).
                out = local.float()
                dist.all_reduce(out, group=par.group)
            else:
                dist.all_reduce(local, group=par.group)
                out = local
            if dropout_p > 0.0:
                out = _dropout_rows(out, dropout_p, dropout_mode, seed_offset)
            if par.sequence_parallel:
                out = out[..., par.rank * c:(par.rank + 1) * c, :]
            out = out.to(local.dtype).contiguous()
        ctx.par = par
        ctx.none = (position_ids is None, cu_seqlens is None, seed_offset is None)
        ctx.save_for_backward(ids, *(ids if t is None else t
                                     for t in (position_ids, cu_seqlens, seed_offset)))
        ctx.shapes = (token_weight.shape, None if pos_weight is None else pos_weight.shape)
        ctx.dtypes = (token_weight.dtype, None if pos_weight is None else pos_weight.dtype)
        ctx.position_offset = position_offset
        ctx.dropout = (dropout_p, dropout_mode)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # no double backward across the collectives
    def backward(ctx, grad_out):
        import torch.distributed as dist
        par = ctx.par
        ids = ctx.saved_tensors[0]
        position_ids, cu_seqlens, seed_offset = (None if none else t for none, t in
                                                 zip(ctx.none, ctx.saved_tensors[1:]))
        (rows, dim), pshape = ctx.shapes
        tdt, _ = ctx.dtypes
        # Gradients in the tables' dtype (tokemb sums in f32 and rounds once); dout converted to
        # it when it differs, read with its strides otherwise.
        dout = grad_out if grad_out.dtype == tdt else grad_out.to(tdt)
        if par.sequence_parallel:
            # The collective needs contiguous buffers; gloo cannot move bf16 (torch 1.13):
            # gather the bytes instead.
            dout = dout.contiguous()
            bits = dout.view(torch.uint8) if dout.element_size() == 2 else dout
            parts = [torch.empty_like(bits) for _ in range(par.world)]
            dist.all_gather(parts, bits, group=par.group)
            dout = torch.cat(parts, dim=-2).view(dout.dtype)
        gt = torch.empty((rows, dim), dtype=tdt, device=dout.device)
        # Only rank 0 computes the position gradient; the others contribute zeros to the
        # all_reduce below and pass no grad_pos (nor the positions, which then select nothing),
        # so no work is done only to be discarded.
        gp = None
        if pshape is not None and par.rank == 0:
            gp = torch.empty(pshape, dtype=tdt, device=dout.device)
        if gp is None:
            position_ids = cu_seqlens = None
        _tk.backward(ids, dout, gt, gp, position_offset=ctx.position_offset,
                     position_ids=position_ids, cu_seqlens=cu_seqlens,
                     padding_idx=par.padding_idx, dropout_p=ctx.dropout[0],
                     dropout_mode=ctx.dropout[1], seed_offset=seed_offset,
                     vocab_start=par.start, vocab_size=par.vocab_size, accumulate=False,
                     deterministic=_use_deterministic(par.deterministic))
        if pshape is not None:
            # Rank 0's position gradient, the same bits on every rank (x + 0 + ... is x).
            if gp is None:
                gp = torch.zeros(pshape, dtype=tdt, device=dout.device)
            if gp.element_size() == 2 and par.backend() == "gloo":
                # gloo cannot sum 16-bit floats (torch 1.13): in f32, exact (one nonzero term).
                wide = gp.float()
                dist.all_reduce(wide, group=par.group)
                gp = wide.to(tdt)
            else:
                dist.all_reduce(gp, group=par.group)
        return None, gt, gp, None, None, None, None, None, None, None


# ---- public API --------------------------------------------------------------------------------


_BOOK_KEYS = ("tok_emb.weight", "pos_emb.weight")


def _module_prefix(fn, prefix):
    """A module path as state_dict keys spell it: "emb" and "emb." both give "emb.", "" stays "";
    every dot-separated name must be non-empty ("." and "emb.." are refused)."""
    if not isinstance(prefix, str):
        raise _tk.InvalidArgument(f"{fn}: prefix must be a str (the module's name in the model, "
                                  f"e.g. 'emb'); got {type(prefix).__name__}")
    if not prefix:
        return prefix
    path = prefix[:-1] if prefix.endswith(".") else prefix
    if any(not part for part in path.split(".")):
        raise _tk.InvalidArgument(f"{fn}: prefix {prefix!r} has an empty name in it; expected a "
                                  "module path such as 'emb' or 'model.emb'")
    return path + "."


def nest_book_state_dict(state_dict, prefix):
    """A book checkpoint's ``state_dict`` (GPTModel's top-level ``tok_emb.weight`` and
    ``pos_emb.weight``) with those two keys renamed for a model that holds a
    :class:`TokenPositionEmbedding` under the name ``prefix`` (e.g. ``"emb"`` or ``"emb."``:
    ``emb.tok_emb.weight``, ``emb.pos_emb.weight``), so that
    ``model.load_state_dict(nest_book_state_dict(torch.load(path), "emb"))`` loads it, strict
    key checking included. Every other key (the transformer blocks, ``out_head``, ...) is kept
    as it is, in its order; the tensors are not copied. ``pos_emb.weight`` may be absent (a
    model without a positional table). Raises InvalidArgument when ``tok_emb.weight`` is missing
    or a renamed key is already in the dict."""
    fn = "nest_book_state_dict"
    prefix = _module_prefix(fn, prefix)
    if _BOOK_KEYS[0] not in state_dict:
        raise _tk.InvalidArgument(f"{fn}: no '{_BOOK_KEYS[0]}' in the state_dict (keys: "
                                  f"{list(state_dict)[:8]}{' ...' if len(state_dict) > 8 else ''}"
                                  "); expected a checkpoint of the book's GPTModel")
    rename = {k: prefix + k for k in _BOOK_KEYS if k in state_dict}
    for old, new_key in rename.items():
        if new_key != old and new_key in state_dict:
            raise _tk.InvalidArgument(f"{fn}: the state_dict has both '{old}' and '{new_key}'; "
                                      "it is already nested (or holds two tables)")
    import collections
    out = collections.OrderedDict((rename.get(k, k), v) for k, v in state_dict.items())
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        # load_state_dict reads per-module versions from here, keyed by the module's path.
        out._metadata = collections.OrderedDict(
            (prefix + k if k in ("tok_emb", "pos_emb") else k, v) for k, v in meta.items())
    return out


def token_position_embedding(ids, token_weight, pos_weight=None, *, position_offset=0,
                             position_ids=None, cu_seqlens=None, padding_idx=None,
                             deterministic=False, dropout_p=0.0, dropout_mode="element",
                             generator=None):
    """``F.dropout(F.embedding(ids, token_weight, padding_idx) + pos_weight[position_offset +
    arange(T)], dropout_p)`` (or ``pos_weight[position_ids]``, or positions restarting at each
    packed sequence of ``cu_seqlens``) in one fused call, differentiable in both weights.

    ids: [..., T] int32/int64 on the weights' device, any strides (a slice such as
    ``batch[:, :-1]`` is read in place); any number of leading dimensions, positions running
    along the last; the result is [..., T, dim]. Weights: float32, bfloat16, float16 or float64
    (one dtype); their gradients come in that dtype. ``padding_idx`` as in ``nn.Embedding``
    (negative counts from the end): that row's forward value is the table row and it receives
    no gradient. ``dropout_p > 0`` draws the
    mask's seed from ``generator`` (None: PyTorch's default generator for the weights' device,
    so ``torch.manual_seed`` makes it reproducible); the backward applies the same mask.
    ``dropout_mode='token'`` drops whole token vectors. On a CUDA device an out-of-range id
    yields a zero row and is raised by :func:`tokemb.check_errors`; on the CPU it raises
    IndexOutOfRange at once.
    """
    fn = "token_position_embedding"
    # padding_idx goes to the library as given: it takes negative indices (counting from the end)
    # and its error names the valid range.
    padding_idx = _tk._index(padding_idx, fn, "padding_idx")
    position_offset = _tk._index(position_offset, fn, "position_offset", optional=False)
    dropout_p = _tk._probability(dropout_p, fn)
    seed_offset = None
    if dropout_p > 0.0:
        seed_offset = draw_seed_offset(token_weight.device, generator)
    return _apply(ids, token_weight, pos_weight, position_offset, position_ids, cu_seqlens,
                  padding_idx, dropout_p, str(dropout_mode), seed_offset, bool(deterministic))


class TokenPositionEmbedding(nn.Module):
    """``tok_emb(ids) + pos_emb(position_offset + arange(T))`` in one tokemb call.

    Holds ``tok_emb = nn.Embedding(vocab_size, dim, padding_idx)`` and
    ``pos_emb = nn.Embedding(context_length, dim)``, created in that order, so under the same
    ``torch.manual_seed`` its weights equal the book's pair and its ``state_dict`` keys are the
    book's (``tok_emb.weight``, ``pos_emb.weight``). ``context_length=0`` means no positional
    table. ``deterministic=True`` (or ``torch.use_deterministic_algorithms(True)``) selects
    tokemb's bitwise-reproducible backward.

    ``dropout`` (the book's ``drop_emb``) is fused into the call in training mode
    (``module.train()``, the default) and off after ``module.eval()``. Each training forward
    draws a new mask seed from PyTorch's generator for the weights' device (``torch.manual_seed``
    makes a run reproducible) and its backward applies the same mask. ``dropout_mode='token'``
    drops whole token vectors instead of elements.

    ``process_group`` (a ``torch.distributed`` group): vocabulary-parallel. ``tok_emb`` holds
    this rank's rows ``shard`` = :func:`vocab_shard` (vocab_size, rank, world) of the table the
    unsharded module would draw under the same generator state (every rank must seed alike);
    ``pos_emb`` is replicated. Forward sums the ranks' partial outputs over the group (and
    applies dropout with rank 0's seed: the one-process mask); ``sequence_parallel=True`` leaves
    rank r the tokens [r*T/w, (r+1)*T/w) of every sequence, [B, T/w, dim]. Backward gathers the
    dout slices (sequence parallel), writes this shard's token gradient and all-reduces the
    position gradient (computed on rank 0), so it is the same bits on every rank.
    """

    def __init__(self, vocab_size, dim, context_length, *, padding_idx=None,
                 deterministic=False, dropout=0.0, dropout_mode="element", device=None,
                 dtype=None, process_group=None, sequence_parallel=False):
        super().__init__()
        fn = "TokenPositionEmbedding"
        # Checked here, with tokemb's errors, rather than by nn.Embedding's allocation (a negative
        # size is torch's RuntimeError there, a float a TypeError, dim = 0 only fails at forward).
        vocab_size = _tk._int(vocab_size, fn, "vocab_size")
        dim = _tk._int(dim, fn, "dim")
        context_length = _tk._int(context_length, fn, "context_length")
        for name, value, least in (("vocab_size", vocab_size, 1), ("dim", dim, 1),
                                   ("context_length", context_length, 0)):
            if value < least:
                raise _tk.InvalidArgument(f"{fn}: {name} is {value}; valid range [{least}, 2**63)")
        factory = {"device": device, "dtype": dtype}
        self.process_group = process_group
        self.sequence_parallel = bool(sequence_parallel)
        if process_group is None:
            if self.sequence_parallel:
                raise _tk.InvalidArgument("TokenPositionEmbedding: sequence_parallel=True needs "
                                          "a process_group")
            self.tok_emb = nn.Embedding(vocab_size, dim, padding_idx=padding_idx, **factory)
        else:
            self._init_shard(vocab_size, dim, padding_idx, process_group, factory)
        self.pos_emb = nn.Embedding(context_length, dim, **factory) if context_length else None
        self.deterministic = deterministic
        self._set_dropout(dropout, dropout_mode)

    def _init_shard(self, vocab_size, dim, padding_idx, group, factory):
        """This rank's rows of the table nn.Embedding(vocab_size, dim) would draw under the same
        generator state: the whole table is drawn (transiently, on the module's device) exactly
        as nn.Embedding draws it, so the union of the shards is the unsharded module's table and
        the position table that follows gets the same draws too."""
        import torch.distributed as dist
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        if rank < 0:
            raise _tk.InvalidArgument("TokenPositionEmbedding: this process is not a member of "
                                      "process_group")
        vocab_size = int(vocab_size)
        start, rows = vocab_shard(vocab_size, rank, world)
        if padding_idx is not None:
            padding_idx = _tk._index(padding_idx, "TokenPositionEmbedding", "padding_idx")
            if not -vocab_size <= padding_idx < vocab_size:
                raise _tk.InvalidArgument(f"TokenPositionEmbedding: padding_idx {padding_idx} is "
                                          f"outside [{-vocab_size}, {vocab_size})")
            padding_idx %= vocab_size
        with torch.no_grad():
            full = torch.empty((vocab_size, dim), **factory)
            nn.init.normal_(full)
            if padding_idx is not None:
                full[padding_idx].fill_(0)
            shard = full[start:start + rows].clone()
            del full
        self.tok_emb = nn.Embedding.from_pretrained(shard, freeze=False)
        self.vocab_start, self.vocab_size, self.rank, self.world = start, vocab_size, rank, world
        self._padding_idx = padding_idx

    def _set_dropout(self, p, mode):
        p = _tk._probability(p, "TokenPositionEmbedding", "dropout")
        if not 0.0 <= p <= 1.0:
            raise _tk.InvalidArgument(f"TokenPositionEmbedding: dropout is {p}; valid range "
                                      "[0, 1]")
        if mode not in ("element", "token"):
            raise _tk.InvalidArgument(f"TokenPositionEmbedding: dropout_mode is {mode!r}; "
                                      "expected 'element' or 'token'")
        self.dropout = p
        self.dropout_mode = mode

    @classmethod
    def from_embeddings(cls, tok_emb, pos_emb=None, *, deterministic=False, dropout=0.0,
                        dropout_mode="element", copy=False):
        """A module over existing ``nn.Embedding``s (e.g. a trained GPTModel's ``tok_emb`` and
        ``pos_emb``). By default it shares them -- the same Parameter objects, so nothing is
        copied or retrained; ``copy=True`` gives an independent module with equal weights."""
        for name, e in (("tok_emb", tok_emb), ("pos_emb", pos_emb)):
            if e is None:
                continue
            if not isinstance(e, nn.Embedding):
                raise _tk.InvalidArgument(f"from_embeddings: {name} is a {type(e).__name__}; "
                                          "expected torch.nn.Embedding")
            if e.max_norm is not None or e.scale_grad_by_freq or e.sparse:
                raise _tk.Unsupported(f"from_embeddings: {name} uses max_norm, "
                                      "scale_grad_by_freq or sparse, which tokemb does not "
                                      "implement")
        if pos_emb is not None and pos_emb.padding_idx is not None:
            raise _tk.Unsupported("from_embeddings: pos_emb has a padding_idx; tokemb's "
                                  "padding_idx applies to the token table only")
        if pos_emb is not None and pos_emb.embedding_dim != tok_emb.embedding_dim:
            raise _tk.InvalidArgument(
                f"from_embeddings: tok_emb has dim {tok_emb.embedding_dim} but pos_emb has "
                f"dim {pos_emb.embedding_dim}")
        if copy:
            import copy as _copy
            tok_emb = _copy.deepcopy(tok_emb)
            pos_emb = _copy.deepcopy(pos_emb)
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.tok_emb = tok_emb
        m.pos_emb = pos_emb
        m.process_group = None
        m.sequence_parallel = False
        m.deterministic = deterministic
        m._set_dropout(dropout, dropout_mode)
        return m

    @classmethod
    def from_model(cls, model, *, tok="tok_emb", pos="pos_emb", deterministic=False,
                   dropout=0.0, dropout_mode="element", copy=False):
        """:meth:`from_embeddings` on ``model.tok_emb`` and ``model.pos_emb`` (the book's
        GPTModel names; others via ``tok=``/``pos=``). Pass ``dropout=model.drop_emb.p`` to
        fuse the book's ``drop_emb`` too."""
        return cls.from_embeddings(getattr(model, tok), getattr(model, pos) if pos else None,
                                   deterministic=deterministic, dropout=dropout,
                                   dropout_mode=dropout_mode, copy=copy)

    @classmethod
    def from_state_dict(cls, state_dict, *, prefix="", padding_idx=None, deterministic=False,
                        dropout=0.0, dropout_mode="element", device=None):
        """A module built from (a model's) state_dict holding ``{prefix}tok_emb.weight`` and
        ``{prefix}pos_emb.weight`` -- e.g. a checkpoint of the book's GPTModel; other keys
        are ignored. Sizes and dtype come from the tensors. To load a book checkpoint into a
        model that holds this module as a submodule (``model.emb``), see
        :func:`nest_book_state_dict`. ``prefix`` is a module path, "emb" or "emb." alike (as
        nest_book_state_dict takes it)."""
        prefix = _module_prefix("from_state_dict", prefix)
        try:
            tw = state_dict[prefix + "tok_emb.weight"]
        except KeyError:
            raise _tk.InvalidArgument(f"from_state_dict: no '{prefix}tok_emb.weight' in the "
                                      "state_dict") from None
        pw = state_dict.get(prefix + "pos_emb.weight")
        for key, w in ((prefix + "tok_emb.weight", tw), (prefix + "pos_emb.weight", pw)):
            if w is not None and (not isinstance(w, torch.Tensor) or w.dim() != 2):
                raise _tk.InvalidArgument(
                    f"from_state_dict: state_dict['{key}'] is "
                    f"{list(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}; "
                    "expected a 2-D tensor")
            if w is not None and w.dtype not in (torch.float32, torch.bfloat16, torch.float16,
                                                 torch.float64):
                raise _tk.InvalidArgument(
                    f"from_state_dict: state_dict['{key}'] has dtype "
                    f"{str(w.dtype).replace('torch.', '')}; expected float32, bfloat16, "
                    "float16 or float64 (an embedding table)")
        padding_idx = _tk._index(padding_idx, "from_state_dict", "padding_idx")
        if device is None:
            device = tw.device

        def table(w):
            # An independent copy on the module's device in tw's dtype, wrapped without drawing
            # an init (nn.Embedding's own init would advance the global RNG for nothing).
            w = w.detach().to(device=device, dtype=tw.dtype, copy=True)
            return nn.Embedding.from_pretrained(w, freeze=False)

        tok = table(tw)
        if padding_idx is not None:
            if not -tok.num_embeddings <= padding_idx < tok.num_embeddings:
                raise _tk.InvalidArgument(
                    f"from_state_dict: padding_idx {padding_idx} is outside "
                    f"[{-tok.num_embeddings}, {tok.num_embeddings})")
            # What nn.Embedding(padding_idx=...) stores: the index counted from the start.
            tok.padding_idx = padding_idx % tok.num_embeddings
        return cls.from_embeddings(tok, None if pw is None else table(pw),
                                   deterministic=deterministic, dropout=dropout,
                                   dropout_mode=dropout_mode)

    @property
    def padding_idx(self):
        """The padding token id (global: with a process_group, tok_emb holds a shard)."""
        if self.process_group is not None:
            return self._padding_idx
        return self.tok_emb.padding_idx

    @property
    def shard(self):
        """(vocab_start, rows): the global token ids this module's tok_emb holds."""
        if self.process_group is not None:
            return self.vocab_start, self.tok_emb.num_embeddings
        return 0, self.tok_emb.num_embeddings

    def forward(self, ids, position_offset=0, position_ids=None, cu_seqlens=None):
        """ids [..., T] -> [..., T, dim] in the weights' dtype (dropout applied in training
        mode): [T] gives [T, dim], [B, T] gives [B, T, dim], [A, B, T] gives [A, B, T, dim].
        Positions: ``position_offset + t`` (t along the last dimension), or ``position_ids``
        (the ids' shape), or packed sequences (``cu_seqlens``, int32 [S + 1] over the flattened
        rows). ids and position_ids may have any strides.

        With a process_group: ids (and positions) must be the same on every rank; the result is
        the full [B, T, dim] on every rank, or with sequence_parallel this rank's tokens
        [rank*T/w, (rank+1)*T/w) of every sequence, [B, T/w, dim]."""
        if self.process_group is not None:
            return self._parallel_forward(ids, position_offset, position_ids, cu_seqlens)
        return token_position_embedding(
            ids, self.tok_emb.weight, None if self.pos_emb is None else self.pos_emb.weight,
            position_offset=position_offset, position_ids=position_ids, cu_seqlens=cu_seqlens,
            padding_idx=self.tok_emb.padding_idx, deterministic=self.deterministic,
            dropout_p=self.dropout if self.training else 0.0, dropout_mode=self.dropout_mode)

    def _parallel_forward(self, ids, position_offset, position_ids, cu_seqlens):
        p = self.dropout if self.training else 0.0
        w = self.tok_emb.weight
        par = _Parallel(self.process_group, self.rank, self.world, self.vocab_start,
                        self.vocab_size, self._padding_idx, self.sequence_parallel,
                        self.deterministic)
        cache = getattr(self, "_zeros_cache", None)
        if cache is not None:
            par.zeros = cache
        seed_offset = draw_seed_offset(w.device) if p > 0.0 else None
        out = _ParallelFunction.apply(ids, w, None if self.pos_emb is None else
                                      self.pos_emb.weight, par,
                                      _tk._index(position_offset, "TokenPositionEmbedding",
                                                 "position_offset", optional=False),
                                      position_ids, cu_seqlens, p, self.dropout_mode,
                                      seed_offset)
        self._zeros_cache = par.zeros
        return out

    def check_errors(self):
        """Raises IndexOutOfRange for an out-of-range id or position that a CUDA call recorded
        (synchronises the current stream; a no-op on the CPU, where calls raise at once)."""
        _tk.check_errors(self.tok_emb.weight.detach())

    def extra_repr(self):
        ctx = 0 if self.pos_emb is None else self.pos_emb.num_embeddings
        vocab = self.vocab_size if self.process_group is not None else self.tok_emb.num_embeddings
        s = (f"vocab_size={vocab}, dim={self.tok_emb.embedding_dim}, context_length={ctx}")
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.deterministic:
            s += ", deterministic=True"
        if self.process_group is not None:
            s += (f", shard=[{self.vocab_start}, {self.vocab_start + self.tok_emb.num_embeddings})"
                  f" of {self.vocab_size}, rank={self.rank}/{self.world}")
            if self.sequence_parallel:
                s += ", sequence_parallel=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
            if self.dropout_mode != "element":
                s += f", dropout_mode={self.dropout_mode!r}"
        return s

