"""tokemb for PyTorch: the book's ``tok_emb(ids) + pos_emb(arange(T))`` as one fused op with
autograd, on CPU tensors (tokemb's CPU backend) and CUDA tensors (tokemb's kernels).

- :class:`TokenPositionEmbedding`, an ``nn.Module`` holding the two ``nn.Embedding``s under the
  book's names (``tok_emb``, ``pos_emb``): same initialisation under ``torch.manual_seed``, same
  ``padding_idx`` semantics, same ``state_dict`` keys.
- :func:`token_position_embedding`, the functional form on two weight tensors (use it to swap
  the input layer of an existing model without touching its parameters or checkpoints).

Gradients are accumulated in float32 by tokemb and returned in each parameter's dtype. The
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
           "USES_CUSTOM_OP"]

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
    # accumulate=False overwrites every row, so uninitialised memory is fine.
    gt = torch.empty((vocab_size, dim), dtype=torch.float32, device=dout.device)
    gp = torch.empty((context_length, dim), dtype=torch.float32, device=dout.device)
    _tk.backward(ids, dout.contiguous(), gt, gp if context_length > 0 else None,
                 position_offset=position_offset, position_ids=position_ids,
                 cu_seqlens=cu_seqlens, padding_idx=padding_idx, dropout_p=dropout_p,
                 dropout_mode=dropout_mode, seed_offset=seed_offset, accumulate=False,
                 deterministic=deterministic)
    return gt, gp


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
    gt, gp = _backward(ids, grad_out, ctx.vocab_size, ctx.context_length, ctx.position_offset,
                       opt["position_ids"], opt["cu_seqlens"], ctx.padding_idx,
                       _use_deterministic(ctx.deterministic), ctx.dropout_p, ctx.dropout_mode,
                       opt["seed_offset"])
    # PyTorch wants gradients in the parameter's dtype; tokemb accumulates in f32.
    gt = gt if ctx.token_dtype == torch.float32 else gt.to(ctx.token_dtype)
    if ctx.context_length > 0:
        gp = gp if ctx.pos_dtype == torch.float32 else gp.to(ctx.pos_dtype)
    else:
        gp = None
    return gt, gp


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
        return (dout.new_empty((vocab_size, d), dtype=torch.float32),
                dout.new_empty((context_length, d), dtype=torch.float32))

    def _setup_context(ctx, inputs, output):
        _save(ctx, *inputs)

    def _autograd_backward(ctx, grad_out):
        gt, gp = _grads(ctx, grad_out)
        return (None, gt, gp) + _NONE_GRADS

    _forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)
    _backward = _backward_op

    def _apply(*args):
        return _forward_op(*args)

else:  # older torch: an autograd.Function (torch.compile, where present, breaks the graph here)

    _backward = _backward_impl

    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            _save(ctx, *args)
            return _forward_impl(*args[:-1])

        @staticmethod
        def backward(ctx, grad_out):
            gt, gp = _grads(ctx, grad_out)
            return (None, gt, gp) + _NONE_GRADS

    def _apply(*args):
        return _Function.apply(*args)


# ---- public API --------------------------------------------------------------------------------


def token_position_embedding(ids, token_weight, pos_weight=None, *, position_offset=0,
                             position_ids=None, cu_seqlens=None, padding_idx=None,
                             deterministic=False, dropout_p=0.0, dropout_mode="element",
                             generator=None):
    """``F.dropout(F.embedding(ids, token_weight, padding_idx) + pos_weight[position_offset +
    arange(T)], dropout_p)`` (or ``pos_weight[position_ids]``, or positions restarting at each
    packed sequence of ``cu_seqlens``) in one fused call, differentiable in both weights.

    ids: [B, T] int32/int64 on the weights' device. Weights: float32, bfloat16 or float16 (one
    dtype). ``padding_idx`` as in ``nn.Embedding`` (negative counts from the end): that row's
    forward value is the table row and it receives no gradient. ``dropout_p > 0`` draws the
    mask's seed from ``generator`` (None: PyTorch's default generator for the weights' device,
    so ``torch.manual_seed`` makes it reproducible); the backward applies the same mask.
    ``dropout_mode='token'`` drops whole token vectors. On a CUDA device an out-of-range id
    yields a zero row and is raised by :func:`tokemb.check_errors`; on the CPU it raises
    IndexOutOfRange at once.
    """
    if padding_idx is not None:
        padding_idx = int(padding_idx)
        if padding_idx < 0:
            padding_idx += token_weight.shape[0]
    dropout_p = float(dropout_p)
    seed_offset = None
    if dropout_p > 0.0:
        seed_offset = draw_seed_offset(token_weight.device, generator)
    return _apply(ids, token_weight, pos_weight, int(position_offset), position_ids, cu_seqlens,
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
    """

    def __init__(self, vocab_size, dim, context_length, *, padding_idx=None,
                 deterministic=False, dropout=0.0, dropout_mode="element", device=None,
                 dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.tok_emb = nn.Embedding(vocab_size, dim, padding_idx=padding_idx, **factory)
        self.pos_emb = nn.Embedding(context_length, dim, **factory) if context_length else None
        self.deterministic = deterministic
        self._set_dropout(dropout, dropout_mode)

    def _set_dropout(self, p, mode):
        p = float(p)
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
        are ignored. Sizes and dtype come from the tensors."""
        try:
            tw = state_dict[prefix + "tok_emb.weight"]
        except KeyError:
            raise _tk.InvalidArgument(f"from_state_dict: no '{prefix}tok_emb.weight' in the "
                                      "state_dict") from None
        pw = state_dict.get(prefix + "pos_emb.weight")
        m = cls(tw.shape[0], tw.shape[1], 0 if pw is None else pw.shape[0],
                padding_idx=padding_idx, deterministic=deterministic, dropout=dropout,
                dropout_mode=dropout_mode, device=device if device is not None else tw.device, dtype=tw.dtype)
        sd = {"tok_emb.weight": tw}
        if pw is not None:
            sd["pos_emb.weight"] = pw
        m.load_state_dict(sd)
        return m

    @property
    def padding_idx(self):
        return self.tok_emb.padding_idx

    def forward(self, ids, position_offset=0, position_ids=None, cu_seqlens=None):
        """ids [B, T] -> [B, T, dim] in the weights' dtype (dropout applied in training mode).
        Positions: ``position_offset + t``, or ``position_ids`` [B, T], or packed sequences
        (``cu_seqlens``, int32 [S + 1] over the B*T flattened rows)."""
        return token_position_embedding(
            ids, self.tok_emb.weight, None if self.pos_emb is None else self.pos_emb.weight,
            position_offset=position_offset, position_ids=position_ids, cu_seqlens=cu_seqlens,
            padding_idx=self.tok_emb.padding_idx, deterministic=self.deterministic,
            dropout_p=self.dropout if self.training else 0.0, dropout_mode=self.dropout_mode)

    def check_errors(self):
        """Raises IndexOutOfRange for an out-of-range id or position that a CUDA call recorded
        (synchronises the current stream; a no-op on the CPU, where calls raise at once)."""
        _tk.check_errors(self.tok_emb.weight.detach())

    def extra_repr(self):
        ctx = 0 if self.pos_emb is None else self.pos_emb.num_embeddings
        s = (f"vocab_size={self.tok_emb.num_embeddings}, dim={self.tok_emb.embedding_dim}, "
             f"context_length={ctx}")
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.deterministic:
            s += ", deterministic=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
            if self.dropout_mode != "element":
                s += f", dropout_mode={self.dropout_mode!r}"
        return s

