"""tokemb.torch with issue 21's inputs, against the book's nn.Embedding pair / F.embedding: strided
ids, position_ids and incoming gradients (read in place), any number of leading dimensions, empty
batches, float64 tables with gradcheck and gradgradcheck (the backward is differentiable),
gradients in the table's dtype (no float32 [V, D] copy), and loading a book checkpoint into a
model that nests the module.

Tolerances: forward values are compared exactly (one rounding of tok + pos, as the book's f32
sum). f32 gradients are sums in another order than PyTorch's: within 1e-5 * sum|dout| + 1e-6 per
element (conftest.assert_grads_close's bound). Gradients in bf16/f16 are compared exactly on
inputs whose sums are exact in that dtype (small integers), and within one rounding (2^-8 bf16,
2^-11 f16, relative, plus the f32 bound) of a float64 reference on random inputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import tokemb  # noqa: E402
import tokemb.torch as tt  # noqa: E402


def seed_from(rng):
    return int(rng.integers(0, 2**31))


def book(ids, tw, pw, padding_idx=None, position_ids=None, offset=0):
    """The book's tok_emb(ids) + pos_emb(arange(T)) on any leading dimensions."""
    out = F.embedding(ids, tw, padding_idx=padding_idx)
    if pw is None:
        return out
    if position_ids is None:
        T = ids.shape[-1]
        return out + pw[offset:offset + T]
    return out + F.embedding(position_ids, pw)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def close_grads(got, want, dout_abs_sum):
    """|got - want| <= 1e-5 * sum|dout| + 1e-6 per element (want: PyTorch's f32 sums; the
    bound holds for any summation order of f32 sums against each other with this margin)."""
    err = (got.double() - want.double()).abs()
    bound = 2e-5 * dout_abs_sum.double() + 1e-6
    assert bool((err <= bound).all()), f"gradient off by up to {err.max().item()}"


def compare(ids, dout_fn, V=40, D=8, P=16, padding_idx=None, position_ids=None,
            dtype=torch.float32):
    """Forward and both gradients of the functional op against F.embedding (same inputs, same
    layouts). dout_fn(out) gives the incoming gradient (any layout) or None for out.sum()."""
    gen = torch.Generator().manual_seed(1234)
    tw0 = torch.randn(V, D, generator=gen, dtype=dtype)
    pw0 = torch.randn(P, D, generator=gen, dtype=dtype)
    tw, pw, rtw, rpw = leaf(tw0), leaf(pw0), leaf(tw0), leaf(pw0)
    out = tt.token_position_embedding(ids, tw, pw, padding_idx=padding_idx,
                                      position_ids=position_ids)
    want = book(ids, rtw, rpw, padding_idx=padding_idx, position_ids=position_ids)
    assert out.shape == want.shape and out.dtype == want.dtype
    assert torch.equal(out, want)
    dout = dout_fn(out)
    if dout is None:
        out.sum().backward()
        want.sum().backward()
        dabs = torch.ones_like(want)
    else:
        out.backward(dout)
        want.backward(dout)
        dabs = dout.abs()
    # Bound per element: the same scatter applied to |dout|.
    abs_t = torch.zeros(V, D, dtype=torch.float64).index_add_(
        0, ids.reshape(-1), dabs.double().reshape(-1, D))
    pos = position_ids if position_ids is not None else \
        torch.arange(ids.shape[-1]).expand(ids.shape)
    abs_p = torch.zeros(P, D, dtype=torch.float64).index_add_(
        0, pos.reshape(-1), dabs.double().reshape(-1, D))
    close_grads(tw.grad, rtw.grad, abs_t)
    close_grads(pw.grad, rpw.grad, abs_p)
    return out


# ---- 1. strides: ids, position_ids, dout -------------------------------------------------------


def test_the_books_input_target_split_is_read_in_place(rng):
    """x = batch[:, :-1] (the book's inputs), y = batch[:, 1:]: non-contiguous slices."""
    batch = torch.from_numpy(rng.integers(0, 40, (4, 9)))
    x, y = batch[:, :-1], batch[:, 1:]
    assert not x.is_contiguous() and not y.is_contiguous()
    for ids in (x, y):
        compare(ids, lambda out: torch.randn(out.shape, dtype=out.dtype))
        compare(ids, lambda out: None)  # out.sum(): an expanded, stride-0 gradient


def test_module_on_a_sliced_batch_equals_the_book_pair(rng):
    torch.manual_seed(seed_from(rng))
    m = tt.TokenPositionEmbedding(50, 6, 12)
    batch = torch.from_numpy(rng.integers(0, 50, (3, 11)))
    x = batch[:, :-1]
    out = m(x)
    assert torch.equal(out, m.tok_emb(x) + m.pos_emb(torch.arange(10)))


@pytest.mark.parametrize("kind", ["transposed", "expanded", "every_other", "int32_slice"])
def test_strided_ids(rng, kind):
    if kind == "transposed":
        ids = torch.from_numpy(rng.integers(0, 40, (5, 3))).t()  # [3, 5], strides (1, 3)
    elif kind == "expanded":
        ids = torch.from_numpy(rng.integers(0, 40, (1, 6))).expand(4, 6)  # stride 0 over B
        assert ids.stride(0) == 0
    elif kind == "every_other":
        ids = torch.from_numpy(rng.integers(0, 40, (6, 14)))[::2, ::2]
    else:
        ids = torch.from_numpy(rng.integers(0, 40, (3, 8)).astype(np.int32))[:, 2:]
    assert not ids.is_contiguous()
    compare(ids, lambda out: torch.randn(out.shape))
    compare(ids, lambda out: None)


def test_strided_position_ids(rng):
    ids = torch.from_numpy(rng.integers(0, 40, (3, 5)))
    pids = torch.from_numpy(rng.integers(0, 16, (5, 3))).t()
    assert not pids.is_contiguous()
    compare(ids, lambda out: torch.randn(out.shape), position_ids=pids)
    pids = torch.from_numpy(rng.integers(0, 16, (1, 5))).expand(3, 5)  # one row for the batch
    compare(ids[:, :], lambda out: None, position_ids=pids)


@pytest.mark.parametrize("kind", ["transposed", "column_stride", "expanded_row"])
def test_strided_dout(rng, kind):
    B, T, D = 3, 5, 8
    ids = torch.from_numpy(rng.integers(0, 40, (B, T)))
    if kind == "transposed":
        make = lambda out: torch.randn(T, B, D).transpose(0, 1)  # noqa: E731
    elif kind == "column_stride":
        make = lambda out: torch.randn(B, T, 2 * D)[..., ::2]  # noqa: E731
    else:
        make = lambda out: torch.randn(1, T, D).expand(B, T, D)  # noqa: E731
    dout = make(None)
    assert dout.shape == (B, T, D) and not dout.is_contiguous()
    compare(ids, make)


def test_an_expanded_gradient_reaches_the_library_without_a_copy(rng, monkeypatch):
    """out.sum().backward()'s gradient is a stride-0 expansion: passed as it is."""
    seen = []
    real = tokemb.backward

    def spy(ids, dout, *a, **kw):
        seen.append((tuple(ids.stride()), tuple(dout.stride()), dout.data_ptr()))
        return real(ids, dout, *a, **kw)

    monkeypatch.setattr(tokemb, "backward", spy)
    m = tt.TokenPositionEmbedding(30, 4, 8)
    batch = torch.from_numpy(rng.integers(0, 30, (2, 7)))
    m(batch[:, :-1]).sum().backward()
    (ids_strides, dout_strides, _), = seen
    assert ids_strides == (7, 1)  # the slice itself
    assert dout_strides == (0, 0, 0)


# ---- 2. leading dimensions ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6,), (2, 3, 5), (2, 1, 2, 4)])
def test_any_number_of_leading_dimensions(rng, shape):
    ids = torch.from_numpy(rng.integers(0, 40, shape))
    out = compare(ids, lambda out: torch.randn(out.shape))
    assert out.shape == (*shape, 8)
    pids = torch.from_numpy(rng.integers(0, 16, shape))
    compare(ids, lambda out: None, position_ids=pids)


def test_module_leading_dimensions(rng):
    torch.manual_seed(seed_from(rng))
    m = tt.TokenPositionEmbedding(30, 4, 8)
    ids = torch.from_numpy(rng.integers(0, 30, (5,)))
    assert torch.equal(m(ids), m.tok_emb(ids) + m.pos_emb(torch.arange(5)))
    ids3 = torch.from_numpy(rng.integers(0, 30, (2, 3, 4)))
    out = m(ids3, position_offset=2)
    assert out.shape == (2, 3, 4, 4)
    assert torch.equal(out, m.tok_emb(ids3) + m.pos_emb(torch.arange(2, 6)))


# ---- 3. empty batches --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0,), (2, 0, 3)])
def test_empty_batches(shape):
    ids = torch.zeros(shape, dtype=torch.int64)
    tw, pw = leaf(torch.randn(10, 4)), leaf(torch.randn(6, 4))
    out = tt.token_position_embedding(ids, tw, pw)
    assert out.shape == (*shape, 4) and out.numel() == 0
    out.sum().backward()
    assert torch.equal(tw.grad, torch.zeros(10, 4)) and torch.equal(pw.grad, torch.zeros(6, 4))


def test_an_empty_slice_of_a_wider_batch():
    """The [4, 0] view of a [4, 6] batch: no elements, so no layout to call non-contiguous."""
    batch = torch.arange(24).view(4, 6) % 10
    m = tt.TokenPositionEmbedding(10, 3, 6)
    out = m(batch[:, 6:])
    assert out.shape == (4, 0, 3)
    out.sum().backward()
    assert torch.equal(m.tok_emb.weight.grad, torch.zeros(10, 3))


# ---- 4. float64 and double backward ------------------------------------------------------------


def _f64_inputs(rng, V=7, D=3, P=5, shape=(2, 4)):
    ids = torch.from_numpy(rng.integers(0, V, shape))
    tw = torch.randn(V, D, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(P, D, dtype=torch.float64, requires_grad=True)
    return ids, tw, pw


def test_float64_forward_is_the_f64_sum(rng):
    ids, tw, pw = _f64_inputs(rng)
    out = tt.token_position_embedding(ids, tw, pw)
    assert out.dtype == torch.float64
    assert torch.equal(out, F.embedding(ids, tw) + pw[:ids.shape[-1]])


def frozen_row(t, row):
    """t with row ``row`` replaced by a constant copy of it: the function's value no longer
    depends on that entry of t. nn.Embedding's padding_idx semantics (the row is read in forward
    but gets no gradient) are not a derivative, so gradcheck needs the padding row held fixed;
    tokemb's zero gradient for it is checked by the exact tests (test_double_backward_* and
    test_torch.py's padding tests)."""
    const = t[row].detach().clone()
    idx = torch.tensor([row % t.shape[0]])
    return lambda x: x.index_copy(0, idx, const[None])


@pytest.mark.parametrize("positions", [True, False])
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_gradcheck_and_gradgradcheck_functional(rng, positions, padding_idx):
    ids, tw, pw = _f64_inputs(rng)
    ids[0, 0] = 2  # the padding row is used (row 2 or, for -1, row 6)
    ids[1, 1] = 6
    fix = (lambda x: x) if padding_idx is None else frozen_row(tw, padding_idx)
    if positions:
        def f(t, p):
            return tt.token_position_embedding(ids[:, 1:], fix(t), p, padding_idx=padding_idx)
        inputs = (tw, pw)
    else:
        def f(t):
            return tt.token_position_embedding(ids, fix(t), padding_idx=padding_idx)
        inputs = (tw,)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_gradcheck_and_gradgradcheck_module(rng):
    torch.manual_seed(seed_from(rng))
    m = tt.TokenPositionEmbedding(9, 3, 6, padding_idx=4, dtype=torch.float64)
    ids = torch.from_numpy(rng.integers(0, 9, (3, 5)))
    ids[0, 0] = 4
    params = (m.tok_emb.weight, m.pos_emb.weight)
    fix = frozen_row(m.tok_emb.weight, 4)

    def f(t, p):
        return tt.token_position_embedding(ids, fix(t), p, padding_idx=m.padding_idx)

    assert torch.autograd.gradcheck(f, params)
    assert torch.autograd.gradgradcheck(f, params)
    # The module call itself, through torch.func-free means: the second derivative of a loss
    # through the module's own forward equals the functional one's.
    out = m(ids)
    g = torch.randn_like(out, requires_grad=True)
    gt, = torch.autograd.grad(out, m.tok_emb.weight, g, create_graph=True)
    w = torch.randn_like(gt)
    dg, = torch.autograd.grad((gt * w).sum(), g)
    want = F.embedding(ids, w)
    want[ids == 4] = 0
    assert torch.equal(dg, want)


@pytest.mark.parametrize("mode", ["element", "token"])
def test_gradcheck_and_gradgradcheck_with_dropout(rng, mode):
    """A fixed mask: the generator is reseeded on each call, so the numerical derivatives see
    one function."""
    ids, tw, pw = _f64_inputs(rng, shape=(3, 4))
    ids[0, 0] = 1
    fix = frozen_row(tw, 1)

    def f(t, p):
        gen = torch.Generator().manual_seed(11)
        return tt.token_position_embedding(ids, fix(t), p, dropout_p=0.4, dropout_mode=mode,
                                           padding_idx=1, generator=gen)

    out = f(tw, pw)
    assert (out == 0).any() and (out != 0).any()  # the mask does something
    assert torch.autograd.gradcheck(f, (tw, pw))
    assert torch.autograd.gradgradcheck(f, (tw, pw))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_double_backward_equals_nn_embedding(rng, dropout):
    """d/d(dout) of <grad_token, W> + <grad_pos, U> is dropout(W[ids] + U[pos]) with padding_idx's
    token term zero: compared with PyTorch's own double backward of F.embedding (the same mask
    applied through F.dropout's saved mask)."""
    V, D, P, pad = 11, 4, 6, 3
    ids = torch.from_numpy(rng.integers(0, V, (2, 5)))
    ids[0, :2] = pad
    tw = torch.randn(V, D, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(P, D, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    out = tt.token_position_embedding(ids, tw, pw, padding_idx=pad, dropout_p=dropout,
                                      generator=gen)
    # The mask the op applied: out / (tok + pos) where defined (tables drawn away from zero).
    clean = F.embedding(ids, tw, padding_idx=pad) + pw[:5]
    scale = (out / clean).detach()
    dout = torch.randn_like(out, requires_grad=True)
    gt, gp = torch.autograd.grad(out, (tw, pw), dout, create_graph=True)
    W, U = torch.randn_like(gt), torch.randn_like(gp)
    dd, = torch.autograd.grad((gt * W).sum() + (gp * U).sum(), dout)
    rt, rp = leaf(tw), leaf(pw)
    ref_out = (F.embedding(ids, rt, padding_idx=pad) + rp[:5]) * scale
    rdout = dout.detach().clone().requires_grad_(True)
    rgt, rgp = torch.autograd.grad(ref_out, (rt, rp), rdout, create_graph=True)
    rdd, = torch.autograd.grad((rgt * W).sum() + (rgp * U).sum(), rdout)
    torch.testing.assert_close(dd, rdd, rtol=1e-12, atol=1e-12)
    assert torch.equal(dd[0, :2], (U[:2] * scale[0, :2]))  # padding rows: positional term only


# ---- 5. gradients in the table's dtype ---------------------------------------------------------

EPS = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 0.0, torch.float64: 0.0}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_gradients_come_in_the_tables_dtype_and_equal_nn_embedding(rng, dtype):
    V, D, P, B, T = 37, 8, 10, 4, 9
    torch.manual_seed(seed_from(rng))
    m = tt.TokenPositionEmbedding(V, D, P, dtype=dtype)
    ref = nn.ModuleDict({"tok_emb": nn.Embedding(V, D, dtype=dtype),
                         "pos_emb": nn.Embedding(P, D, dtype=dtype)})
    ref.load_state_dict(m.state_dict())
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    # Small integers: every sum is exact in every dtype, so both must be equal bit for bit.
    dout = torch.from_numpy(rng.integers(-3, 4, (B, T, D))).to(dtype)
    m(ids).backward(dout)
    (ref["tok_emb"](ids) + ref["pos_emb"](torch.arange(T))).backward(dout)
    for mine, theirs in ((m.tok_emb.weight, ref["tok_emb"].weight),
                         (m.pos_emb.weight, ref["pos_emb"].weight)):
        assert mine.grad.dtype == dtype
        assert torch.equal(mine.grad, theirs.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_gradients_are_rounded_once(rng, dtype):
    """Random dout: each gradient element is the f32 sum rounded once, within one rounding
    (EPS relative) plus the f32 bound of the exact float64 sum."""
    V, D, P, B, T = 13, 16, 8, 6, 8
    m = tt.TokenPositionEmbedding(V, D, P, dtype=dtype)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    dout = torch.randn(B, T, D).to(dtype)
    m(ids).backward(dout)
    d = dout.double().reshape(-1, D)
    exact = torch.zeros(V, D, dtype=torch.float64).index_add_(0, ids.reshape(-1), d)
    absum = torch.zeros(V, D, dtype=torch.float64).index_add_(0, ids.reshape(-1), d.abs())
    err = (m.tok_emb.weight.grad.double() - exact).abs()
    assert bool((err <= EPS[dtype] * exact.abs() + 1e-5 * absum + 1e-6).all()), err.max()


def test_a_gradient_of_another_dtype_is_converted_not_the_table_gradient(monkeypatch, rng):
    """What tokemb.backward receives for a bf16 table: bf16 dout and bf16 gradient arrays."""
    seen = []
    real = tokemb.backward

    def spy(ids, dout, gt, gp, **kw):
        seen.append((dout.dtype, gt.dtype, None if gp is None else gp.dtype))
        return real(ids, dout, gt, gp, **kw)

    monkeypatch.setattr(tokemb, "backward", spy)
    m = tt.TokenPositionEmbedding(20, 4, 6, dtype=torch.bfloat16)
    ids = torch.from_numpy(rng.integers(0, 20, (2, 3)))
    m(ids).float().sum().backward()  # autograd hands the op a bf16 gradient
    assert seen == [(torch.bfloat16, torch.bfloat16, torch.bfloat16)]


def test_no_float32_table_sized_tensor_in_a_bf16_backward(rng):
    """The CPU check of item 5: every tensor PyTorch creates during one backward of a bf16
    module, seen through a TorchDispatchMode; none is a float32 of [V, D]'s size."""
    dispatch = pytest.importorskip("torch.utils._python_dispatch")
    V, D, P = 300, 32, 16
    m = tt.TokenPositionEmbedding(V, D, P, dtype=torch.bfloat16)
    ids = torch.from_numpy(rng.integers(0, V, (4, 16)))
    out = m(ids)
    created = []

    class Record(dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            r = func(*args, **(kwargs or {}))
            for t in (r if isinstance(r, (tuple, list)) else (r,)):
                if isinstance(t, torch.Tensor):
                    created.append((str(func), t.dtype, t.numel()))
            return r

    with Record():
        out.sum().backward()
    table_sized = [c for c in created if c[2] >= V * D]
    # The mode sees the backward's allocations (else this test could not fail): the bf16
    # gradient itself is among them.
    assert any(dt == torch.bfloat16 for _, dt, _ in table_sized), created
    assert not [c for c in table_sized if c[1] == torch.float32], table_sized
    assert m.tok_emb.weight.grad.dtype == torch.bfloat16


def test_backward_peak_memory_is_nn_embeddings_on_cuda():
    """Item 5's measurement: the GPU memory one backward adds at its peak, GPT-2's bf16 table,
    against the book's nn.Embedding pair on the same step (issue: 225 MB against 76 MB)."""
    if not (tokemb.cuda_available() and torch.cuda.is_available()):
        pytest.skip("no CUDA device is present (or tokemb was built without its CUDA backend)")
    V, D, P, B, T = 50257, 768, 1024, 4, 1024
    dev = torch.device("cuda")
    ids = torch.randint(0, V, (B, T), device=dev)

    def peak(model, fwd):
        out = fwd(model)
        loss = out.float().sum()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss.backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    m = tt.TokenPositionEmbedding(V, D, P, device=dev, dtype=torch.bfloat16)
    ref = nn.ModuleDict({"tok_emb": nn.Embedding(V, D, device=dev, dtype=torch.bfloat16),
                         "pos_emb": nn.Embedding(P, D, device=dev, dtype=torch.bfloat16)})
    mine = peak(m, lambda mod: mod(ids))
    theirs = peak(ref, lambda mod: mod["tok_emb"](ids) + mod["pos_emb"](torch.arange(T,
                                                                                    device=dev)))
    grads = (V + P) * D * 2
    assert mine >= grads  # the measurement sees the gradients themselves
    # The gradients plus the sort's workspace (O(B*T)), at most nn.Embedding's peak + 5%.
    assert mine <= theirs * 1.05 + (4 << 20), (mine, theirs)


# ---- 6. a book checkpoint into a model that nests the module -----------------------------------


class BookGPT(nn.Module):
    def __init__(self, V, D, P):
        super().__init__()
        self.tok_emb = nn.Embedding(V, D)
        self.pos_emb = nn.Embedding(P, D)
        self.out_head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[-1]))
        return self.out_head(x)


class NestedGPT(nn.Module):
    def __init__(self, V, D, P):
        super().__init__()
        self.emb = tt.TokenPositionEmbedding(V, D, P)
        self.out_head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        return self.out_head(self.emb(ids))


def test_a_book_checkpoint_loads_into_a_nesting_model(rng, tmp_path):
    V, D, P = 40, 8, 12
    torch.manual_seed(seed_from(rng))
    bookm = BookGPT(V, D, P)
    path = tmp_path / "book.pth"
    torch.save(bookm.state_dict(), path)
    sd = torch.load(path)
    nested = NestedGPT(V, D, P)
    with pytest.raises(RuntimeError, match="emb.tok_emb.weight"):
        nested.load_state_dict(sd)  # the keys differ: why the helper exists
    mapped = tt.nest_book_state_dict(sd, "emb")
    assert list(mapped) == ["emb.tok_emb.weight", "emb.pos_emb.weight", "out_head.weight"]
    assert list(sd) == ["tok_emb.weight", "pos_emb.weight", "out_head.weight"]  # not modified
    nested.load_state_dict(mapped)  # strict
    assert torch.equal(tt.nest_book_state_dict(sd, "emb.")["emb.tok_emb.weight"],
                       sd["tok_emb.weight"])
    ids = torch.from_numpy(rng.integers(0, V, (2, 7)))
    assert torch.equal(nested(ids), bookm(ids))
    # Top level: the prefix '' leaves the keys as they are.
    top = tt.TokenPositionEmbedding(V, D, P)
    top.load_state_dict({k: v for k, v in tt.nest_book_state_dict(sd, "").items()
                         if not k.startswith("out_head")})


def test_nest_book_state_dict_errors():
    w = torch.zeros(3, 2)
    with pytest.raises(tokemb.InvalidArgument, match="no 'tok_emb.weight'"):
        tt.nest_book_state_dict({"wte.weight": w}, "emb")
    with pytest.raises(tokemb.InvalidArgument, match="both 'tok_emb.weight' and "
                                                     "'emb.tok_emb.weight'"):
        tt.nest_book_state_dict({"tok_emb.weight": w, "emb.tok_emb.weight": w}, "emb")
    with pytest.raises(tokemb.InvalidArgument, match="prefix must be a str"):
        tt.nest_book_state_dict({"tok_emb.weight": w}, 3)
    only_tok = tt.nest_book_state_dict({"tok_emb.weight": w}, "m.emb")
    assert list(only_tok) == ["m.emb.tok_emb.weight"]
    for bad in (".", "emb..", ".emb", "m..emb"):  # names that no module path can have
        with pytest.raises(tokemb.InvalidArgument, match="empty name"):
            tt.nest_book_state_dict({"tok_emb.weight": w}, bad)


def test_from_state_dict_prefix_is_spelled_as_nest_book_state_dict_spells_it():
    sd = tt.nest_book_state_dict({"tok_emb.weight": torch.randn(6, 3),
                                  "pos_emb.weight": torch.randn(4, 3)}, "emb")
    for prefix in ("emb", "emb."):
        m = tt.TokenPositionEmbedding.from_state_dict(sd, prefix=prefix)
        assert torch.equal(m.tok_emb.weight, sd["emb.tok_emb.weight"])
    with pytest.raises(tokemb.InvalidArgument, match="empty name"):
        tt.TokenPositionEmbedding.from_state_dict(sd, prefix="emb..")


def test_from_state_dict_takes_a_float64_checkpoint(rng):
    sd = {"tok_emb.weight": torch.randn(6, 3, dtype=torch.float64),
          "pos_emb.weight": torch.randn(4, 3, dtype=torch.float64)}
    m = tt.TokenPositionEmbedding.from_state_dict(sd)
    assert m.tok_emb.weight.dtype == torch.float64
    ids = torch.from_numpy(rng.integers(0, 6, (2, 4)))
    assert torch.equal(m(ids), sd["tok_emb.weight"][ids] + sd["pos_emb.weight"])
