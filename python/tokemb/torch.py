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

__all__ = ["TokenPositionEmbedding", "token_position_embedding", "USES_CUSTOM_OP"]

# ---- the two ops, on plain (non-differentiable) tensors ----------------------------------------


def _forward_impl(ids, token_weight, pos_weight, position_offset, position_ids, padding_idx):
    return _tk.forward(ids, token_weight, pos_weight, position_offset=position_offset,
                       position_ids=position_ids, padding_idx=padding_idx)


def _backward_impl(ids, dout, vocab_size, context_length, position_offset, position_ids,
                   padding_idx, deterministic):
    dim = dout.shape[-1]
    # accumulate=False overwrites every row, so uninitialised memory is fine.
    gt = torch.empty((vocab_size, dim), dtype=torch.float32, device=dout.device)
    gp = torch.empty((context_length, dim), dtype=torch.float32, device=dout.device)
    _tk.backward(ids, dout.contiguous(), gt, gp if context_length > 0 else None,
                 position_offset=position_offset, position_ids=position_ids,
                 padding_idx=padding_idx, accumulate=False, deterministic=deterministic)
    return gt, gp


def _use_deterministic(flag):
    return bool(flag) or torch.are_deterministic_algorithms_enabled()


def _grads(ctx, grad_out):
    ids, position_ids = ctx.saved_tensors[0], ctx.saved_tensors[1]
    if ctx.position_ids_is_none:
        position_ids = None
    gt, gp = _backward(ids, grad_out, ctx.vocab_size, ctx.context_length, ctx.position_offset,
                       position_ids, ctx.padding_idx, _use_deterministic(ctx.deterministic))
    # PyTorch wants gradients in the parameter's dtype; tokemb accumulates in f32.
    gt = gt if ctx.token_dtype == torch.float32 else gt.to(ctx.token_dtype)
    if ctx.context_length > 0:
        gp = gp if ctx.pos_dtype == torch.float32 else gp.to(ctx.pos_dtype)
    else:
        gp = None
    return gt, gp


def _save(ctx, ids, token_weight, pos_weight, position_offset, position_ids, padding_idx,
          deterministic):
    ctx.position_ids_is_none = position_ids is None
    ctx.save_for_backward(ids, ids if position_ids is None else position_ids)
    ctx.vocab_size = token_weight.shape[0]
    ctx.context_length = 0 if pos_weight is None else pos_weight.shape[0]
    ctx.position_offset = position_offset
    ctx.padding_idx = padding_idx
    ctx.deterministic = deterministic
    ctx.token_dtype = token_weight.dtype
    ctx.pos_dtype = None if pos_weight is None else pos_weight.dtype


USES_CUSTOM_OP = hasattr(torch, "library") and hasattr(torch.library, "custom_op")

if USES_CUSTOM_OP:  # torch >= 2.4: visible to torch.compile, no graph breaks

    @torch.library.custom_op("tokemb::forward", mutates_args=())
    def _forward_op(ids: torch.Tensor, token_weight: torch.Tensor,
                    pos_weight: Optional[torch.Tensor], position_offset: int,
                    position_ids: Optional[torch.Tensor], padding_idx: Optional[int],
                    deterministic: bool) -> torch.Tensor:
        return _forward_impl(ids, token_weight, pos_weight, position_offset, position_ids,
                             padding_idx)

    @_forward_op.register_fake
    def _(ids, token_weight, pos_weight, position_offset, position_ids, padding_idx,
          deterministic):
        return token_weight.new_empty((*ids.shape, token_weight.shape[1]))

    @torch.library.custom_op("tokemb::backward", mutates_args=())
    def _backward_op(ids: torch.Tensor, dout: torch.Tensor, vocab_size: int,
                     context_length: int, position_offset: int,
                     position_ids: Optional[torch.Tensor], padding_idx: Optional[int],
                     deterministic: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        return _backward_impl(ids, dout, vocab_size, context_length, position_offset,
                              position_ids, padding_idx, deterministic)

    @_backward_op.register_fake
    def _(ids, dout, vocab_size, context_length, position_offset, position_ids, padding_idx,
          deterministic):
        d = dout.shape[-1]
        return (dout.new_empty((vocab_size, d), dtype=torch.float32),
                dout.new_empty((context_length, d), dtype=torch.float32))

    def _setup_context(ctx, inputs, output):
        _save(ctx, *inputs)

    def _autograd_backward(ctx, grad_out):
        gt, gp = _grads(ctx, grad_out)
        return None, gt, gp, None, None, None, None

    _forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)
    _backward = _backward_op

    def _apply(ids, token_weight, pos_weight, position_offset, position_ids, padding_idx,
               deterministic):
        return _forward_op(ids, token_weight, pos_weight, position_offset, position_ids,
                           padding_idx, deterministic)

else:  # older torch: an autograd.Function (torch.compile, where present, breaks the graph here)

    _backward = _backward_impl

    class _Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, ids, token_weight, pos_weight, position_offset, position_ids,
                    padding_idx, deterministic):
            _save(ctx, ids, token_weight, pos_weight, position_offset, position_ids,
                  padding_idx, deterministic)
            return _forward_impl(ids, token_weight, pos_weight, position_offset, position_ids,
                                 padding_idx)

        @staticmethod
        def backward(ctx, grad_out):
            gt, gp = _grads(ctx, grad_out)
            return None, gt, gp, None, None, None, None

    def _apply(ids, token_weight, pos_weight, position_offset, position_ids, padding_idx,
               deterministic):
        return _Function.apply(ids, token_weight, pos_weight, position_offset, position_ids,
                               padding_idx, deterministic)


# ---- public API --------------------------------------------------------------------------------


def token_position_embedding(ids, token_weight, pos_weight=None, *, position_offset=0,
                             position_ids=None, padding_idx=None, deterministic=False):
    """``F.embedding(ids, token_weight, padding_idx) + pos_weight[position_offset + arange(T)]``
    (or ``pos_weight[position_ids]``) in one fused call, differentiable in both weights.

    ids: [B, T] int32/int64 on the weights' device. Weights: float32, bfloat16 or float16 (one
    dtype). ``padding_idx`` as in ``nn.Embedding`` (negative counts from the end): that row's
    forward value is the table row and it receives no gradient. On a CUDA device an
    out-of-range id yields a zero row and is raised by :func:`tokemb.check_errors`; on the CPU it
    raises IndexOutOfRange at once.
    """
    if padding_idx is not None:
        padding_idx = int(padding_idx)
        if padding_idx < 0:
            padding_idx += token_weight.shape[0]
    return _apply(ids, token_weight, pos_weight, int(position_offset), position_ids,
                  padding_idx, bool(deterministic))


class TokenPositionEmbedding(nn.Module):
    """``tok_emb(ids) + pos_emb(position_offset + arange(T))`` in one tokemb call.

    Holds ``tok_emb = nn.Embedding(vocab_size, dim, padding_idx)`` and
    ``pos_emb = nn.Embedding(context_length, dim)``, created in that order, so under the same
    ``torch.manual_seed`` its weights equal the book's pair and its ``state_dict`` keys are the
    book's (``tok_emb.weight``, ``pos_emb.weight``). ``context_length=0`` means no positional
    table. ``deterministic=True`` (or ``torch.use_deterministic_algorithms(True)``) selects
    tokemb's bitwise-reproducible backward.
    """

    def __init__(self, vocab_size, dim, context_length, *, padding_idx=None,
                 deterministic=False, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.tok_emb = nn.Embedding(vocab_size, dim, padding_idx=padding_idx, **factory)
        self.pos_emb = nn.Embedding(context_length, dim, **factory) if context_length else None
        self.deterministic = deterministic

    @classmethod
    def from_embeddings(cls, tok_emb, pos_emb=None, *, deterministic=False, copy=False):
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
        return m

    @classmethod
    def from_model(cls, model, *, tok="tok_emb", pos="pos_emb", deterministic=False,
                   copy=False):
        """:meth:`from_embeddings` on ``model.tok_emb`` and ``model.pos_emb`` (the book's
        GPTModel names; others via ``tok=``/``pos=``)."""
        return cls.from_embeddings(getattr(model, tok), getattr(model, pos) if pos else None,
                                   deterministic=deterministic, copy=copy)

    @classmethod
    def from_state_dict(cls, state_dict, *, prefix="", padding_idx=None, deterministic=False,
                        device=None):
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
                padding_idx=padding_idx, deterministic=deterministic,
                device=device if device is not None else tw.device, dtype=tw.dtype)
        sd = {"tok_emb.weight": tw}
        if pw is not None:
            sd["pos_emb.weight"] = pw
        m.load_state_dict(sd)
        return m

    @property
    def padding_idx(self):
        return self.tok_emb.padding_idx

    def forward(self, ids, position_offset=0, position_ids=None):
        """ids [B, T] -> [B, T, dim] in the weights' dtype."""
        return token_position_embedding(
            ids, self.tok_emb.weight, None if self.pos_emb is None else self.pos_emb.weight,
            position_offset=position_offset, position_ids=position_ids,
            padding_idx=self.tok_emb.padding_idx, deterministic=self.deterministic)

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
        return s

