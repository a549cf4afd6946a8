"""Fused dropout and packed sequences (cu_seqlens) through the functional API and the PyTorch
module, against NumPy references: an independent NumPy Philox4x32-10 for the mask, explicit
position ids for cu_seqlens."""

import numpy as np
import pytest

import tokemb
from conftest import assert_grads_close, ref_backward, ref_forward

# ---- a NumPy reference of the mask (README "Semantics": Philox4x32-10, key seed, counter
# (e / 4, offset), word e % 4, kept when (word >> 8) >= round(p * 2^24)) -------------------------

M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(c, k0, k1):
    """Random123's philox4x32_R(10) on arrays of uint64 holding 32-bit words."""
    c = [x.astype(np.uint64) for x in c]
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & M32
        hi1, lo1 = p1 >> np.uint64(32), p1 & M32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + np.uint64(0x9E3779B9)) & M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & M32
    return c


def ref_factors(n, p, seed, offset):
    """The factor (0 or the f32 scale) of flat indices 0 .. n-1."""
    p = float(p)  # the library holds p as a double up to the threshold and the scale
    e = np.arange(n, dtype=np.uint64)
    g = e // np.uint64(4)
    words = philox4x32_10([g & M32, g >> np.uint64(32),
                           np.full(n, offset & 0xFFFFFFFF, np.uint64),
                           np.full(n, offset >> 32, np.uint64)],
                          seed & 0xFFFFFFFF, seed >> 32)
    word = np.choose((e % np.uint64(4)).astype(np.int64), words)
    threshold = min(2**24, max(1, int(np.floor(p * 2**24 + 0.5))))
    scale = np.float32(1.0 / (1.0 - p)) if p < 1 else np.float32(0)
    return np.where((word >> np.uint64(8)) >= threshold, scale, np.float32(0)).astype(np.float32)


def ref_dropout_forward(ids, tok, pos, p, seed, drop_offset, mode="element", **kw):
    """f32 tok + pos, times the factor in f32, rounded once to the table dtype."""
    x = ref_forward(ids, tok.astype(np.float32), None if pos is None else pos.astype(np.float32),
                    **kw)
    B, T, D = x.shape
    if mode == "token":
        f = np.repeat(ref_factors(B * T, p, seed, drop_offset), D)
    else:
        f = ref_factors(B * T * D, p, seed, drop_offset)
    return (x.reshape(-1) * f).reshape(B, T, D).astype(tok.dtype)


def seed64(rng):
    return int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))  # all 64 bits


def tables(rng, V, D, P, positive=False):
    """Random tables; positive=True keeps tok + pos away from 0 so that zeros mark drops."""
    if positive:
        tok = rng.uniform(1.0, 2.0, (V, D)).astype(np.float32)
        pos = rng.uniform(1.0, 2.0, (P, D)).astype(np.float32)
    else:
        tok = rng.standard_normal((V, D)).astype(np.float32)
        pos = rng.standard_normal((P, D)).astype(np.float32)
    return tok, pos


def sizes(rng):
    B, T = int(rng.integers(1, 6)), int(rng.integers(1, 40))
    return B, T, int(rng.integers(1, 70)), int(rng.integers(1, 50))  # B, T, D, V


# ---- the functional API ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["element", "token"])
def test_forward_matches_numpy_philox_reference(rng, mode):
    B, T, D, V = sizes(rng)
    P = T + int(rng.integers(0, 5))
    tok, pos = tables(rng, V, D, P)
    ids = rng.integers(0, V, (B, T))
    p = float(rng.uniform(0.05, 0.95))
    seed, offset = seed64(rng), seed64(rng)
    off = int(rng.integers(0, P - T + 1))
    out = tokemb.forward(ids, tok, pos, position_offset=off, dropout_p=p, seed=seed,
                         offset=offset, dropout_mode=mode)
    ref = ref_dropout_forward(ids, tok, pos, p, seed, offset, mode, offset=off)
    np.testing.assert_array_equal(out, ref)  # f32: bitwise


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_within_binomial_bounds_and_exact_scale(rng, p):
    B, T, D, V = 4, 64, 128, 97
    tok, pos = tables(rng, V, D, T, positive=True)
    ids = rng.integers(0, V, (B, T))
    plain = tokemb.forward(ids, tok, pos)
    out = tokemb.forward(ids, tok, pos, dropout_p=p, seed=seed64(rng), offset=seed64(rng))
    kept = out != 0
    n, k = out.size, int(kept.sum())
    # 6 standard deviations: a false failure has probability ~1e-9.
    assert abs(k - n * (1 - p)) <= 6 * np.sqrt(n * p * (1 - p)), (k, n, p)
    scale = np.float32(1.0 / (1.0 - float(p)))
    np.testing.assert_array_equal(out[kept], (plain[kept] * scale).astype(np.float32))


def test_p0_is_exactly_no_dropout_and_p1_is_zeros(rng):
    B, T, D, V = sizes(rng)
    tok, pos = tables(rng, V, D, T)
    ids = rng.integers(0, V, (B, T))
    seed = seed64(rng)
    plain = tokemb.forward(ids, tok, pos)
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, dropout_p=0.0, seed=seed), plain)
    zeros = tokemb.forward(ids, tok, pos, dropout_p=1.0, seed=seed)
    assert (zeros == 0).all() and not np.signbit(zeros).any()
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    gt, gp = np.full((V, D), 7, np.float32), np.full((T, D), 7, np.float32)
    tokemb.backward(ids, dout, gt, gp, dropout_p=1.0, seed=seed, accumulate=False)
    assert (gt == 0).all() and (gp == 0).all()
    gt0, gp0 = np.zeros((V, D), np.float32), np.zeros((T, D), np.float32)
    gt1, gp1 = np.zeros((V, D), np.float32), np.zeros((T, D), np.float32)
    tokemb.backward(ids, dout, gt0, gp0)
    tokemb.backward(ids, dout, gt1, gp1, dropout_p=0.0, seed=seed, offset=3)
    np.testing.assert_array_equal(gt0, gt1)
    np.testing.assert_array_equal(gp0, gp1)


@pytest.mark.parametrize("mode", ["element", "token"])
def test_backward_applies_the_forward_mask(rng, mode):
    B, T, D, V = sizes(rng)
    P = T
    tok, pos = tables(rng, V, D, P)
    ids = rng.integers(0, V, (B, T))
    p, seed, offset = float(rng.uniform(0.1, 0.9)), seed64(rng), seed64(rng)
    kw = dict(dropout_p=p, seed=seed, offset=offset, dropout_mode=mode)
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
    tokemb.backward(ids, dout, gt, gp, **kw)
    # The mask the forward used, read from the forward itself (f32 factor: 0 or the scale).
    ones_tok, ones_pos = np.ones((V, D), np.float32), np.zeros((P, D), np.float32)
    factor = tokemb.forward(ids, ones_tok, ones_pos, **kw)
    masked = dout * factor  # exactly what backward scatters (an f32 product)
    assert_grads_close(gt, ids, masked, V, P, grad_pos=gp)
    # The same dout without dropout gives other gradients (the mask is applied at all).
    if (factor == 0).any():
        gt2 = np.zeros((V, D), np.float32)
        tokemb.backward(ids, dout, gt2, None)
        assert not np.array_equal(gt, gt2)


def test_masks_depend_on_seed_and_offset_only(rng):
    B, T, D, V = 3, 16, 32, 50
    tok, pos = tables(rng, V, D, T, positive=True)
    ids = rng.integers(0, V, (B, T))
    seed, offset = seed64(rng), int(rng.integers(0, 2**62))
    a = tokemb.forward(ids, tok, pos, dropout_p=0.5, seed=seed, offset=offset)
    np.testing.assert_array_equal(
        a, tokemb.forward(ids, tok, pos, dropout_p=0.5, seed=seed, offset=offset))
    b = tokemb.forward(ids, tok, pos, dropout_p=0.5, seed=seed, offset=offset + 1)
    c = tokemb.forward(ids, tok, pos, dropout_p=0.5, seed=seed ^ 1, offset=offset)
    # 1536 elements at p = 0.5: equal masks by chance have probability 2^-1536.
    assert not np.array_equal(a != 0, b != 0)
    assert not np.array_equal(a != 0, c != 0)
    # seed_offset (int64 {seed, offset} read when the call runs) is the same as the ints.
    so = np.array([seed, offset], np.uint64).view(np.int64)
    np.testing.assert_array_equal(a, tokemb.forward(ids, tok, pos, dropout_p=0.5, seed_offset=so))


def test_token_mode_drops_whole_rows(rng):
    B, T, D, V = 8, 64, 16, 40
    tok, pos = tables(rng, V, D, T, positive=True)
    ids = rng.integers(0, V, (B, T))
    p = float(rng.uniform(0.2, 0.8))
    out = tokemb.forward(ids, tok, pos, dropout_p=p, seed=seed64(rng), dropout_mode="token")
    rows = (out != 0).reshape(B * T, D)
    assert (rows.all(axis=1) | ~rows.any(axis=1)).all(), "a row was partly dropped"
    n, k = B * T, int(rows.all(axis=1).sum())
    assert abs(k - n * (1 - p)) <= 6 * np.sqrt(n * p * (1 - p)), (k, n, p)


def test_bad_dropout_arguments(rng):
    ids = rng.integers(0, 5, (2, 3))
    tok, pos = tables(rng, 5, 4, 3)
    with pytest.raises(tokemb.InvalidArgument, match="dropout.p"):
        tokemb.forward(ids, tok, pos, dropout_p=1.5)
    with pytest.raises(tokemb.InvalidArgument, match="dropout_mode"):
        tokemb.forward(ids, tok, pos, dropout_p=0.5, dropout_mode="row")
    with pytest.raises(tokemb.InvalidArgument, match="seed"):
        tokemb.forward(ids, tok, pos, dropout_p=0.5, seed=-1)
    with pytest.raises(tokemb.InvalidArgument, match="offset"):
        tokemb.forward(ids, tok, pos, dropout_p=0.5, offset=2**64)
    with pytest.raises(tokemb.InvalidArgument, match="seed_offset"):
        tokemb.forward(ids, tok, pos, dropout_p=0.5, seed_offset=np.zeros(3, np.int64))


# ---- packed sequences --------------------------------------------------------------------------


def random_cu_seqlens(rng, n, max_len):
    """Boundaries over n rows with sequences of length 0 .. max_len (empty ones included)."""
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(0, max_len + 1))))
    for _ in range(int(rng.integers(0, 3))):  # a few extra empty sequences anywhere
        i = int(rng.integers(0, len(cuts)))
        cuts.insert(i, cuts[i])
    return np.array(cuts, np.int32)


def positions_of(cu, n, offset=0):
    pos = np.empty(n, np.int64)
    for s in range(len(cu) - 1):
        pos[cu[s]:cu[s + 1]] = offset + np.arange(cu[s + 1] - cu[s])
    return pos


def test_cu_seqlens_equals_explicit_position_ids(rng):
    B, T, D, V = sizes(rng)
    P = int(rng.integers(1, 20))
    off = int(rng.integers(0, P))
    tok, pos = tables(rng, V, D, P)
    ids = rng.integers(0, V, (B, T))
    cu = random_cu_seqlens(rng, B * T, P - off)
    assert (np.diff(cu) == 0).any() or len(cu) > 1
    pid = positions_of(cu, B * T, off).reshape(B, T)
    out = tokemb.forward(ids, tok, pos, cu_seqlens=cu, position_offset=off)
    np.testing.assert_array_equal(out, tokemb.forward(ids, tok, pos, position_ids=pid))
    np.testing.assert_array_equal(out, ref_forward(ids, tok, pos, position_ids=pid))
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    for deterministic in (False, True):
        gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
        tokemb.backward(ids, dout, gt, gp, cu_seqlens=cu, position_offset=off,
                        deterministic=deterministic)
        assert_grads_close(gt, ids, dout, V, P, grad_pos=gp, position_ids=pid)


def test_cu_seqlens_with_dropout(rng):
    B, T, D, V = sizes(rng)
    P = T
    tok, pos = tables(rng, V, D, P)
    ids = rng.integers(0, V, (B, T))
    cu = random_cu_seqlens(rng, B * T, P)
    pid = positions_of(cu, B * T).reshape(B, T)
    kw = dict(dropout_p=0.3, seed=seed64(rng), offset=seed64(rng))
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, cu_seqlens=cu, **kw),
                                  ref_dropout_forward(ids, tok, pos, position_ids=pid, p=0.3,
                                                      seed=kw["seed"], drop_offset=kw["offset"]))


def test_sequence_longer_than_the_position_table(rng):
    B, T, D, V = 2, 8, 4, 10
    P = int(rng.integers(2, 8))
    tok, pos = tables(rng, V, D, P)
    ids = rng.integers(0, V, (B, T))
    n = B * T
    start = int(rng.integers(0, n - P))
    cu = np.array(sorted({0, start, start + P + 1, n}), np.int32)  # one sequence of P + 1 rows
    with pytest.raises(tokemb.IndexOutOfRange) as e:
        tokemb.forward(ids, tok, pos, cu_seqlens=cu)
    assert e.value.kind == "position" and e.value.value == P and e.value.limit == P
    with pytest.raises(tokemb.IndexOutOfRange):
        tokemb.backward(ids, np.ones((B, T, D), np.float32), np.zeros((V, D), np.float32),
                        np.zeros((P, D), np.float32), cu_seqlens=cu)


@pytest.mark.parametrize("bad", ["first", "last", "decreasing"])
def test_malformed_cu_seqlens_is_a_sequence_error(rng, bad):
    B, T, D, V = 2, 6, 4, 10
    tok, pos = tables(rng, V, D, B * T)
    ids = rng.integers(0, V, (B, T))
    cu = np.array([0, 3, 7, 12], np.int32)
    index = {"first": 0, "last": 3, "decreasing": 2}[bad]
    cu[index] = {"first": 1, "last": 11, "decreasing": 2}[bad]
    out = np.full((B, T, D), 5, np.float32)
    with pytest.raises(tokemb.IndexOutOfRange) as e:
        tokemb.forward(ids, tok, pos, out=out, cu_seqlens=cu)
    assert e.value.kind == "sequence"
    assert e.value.value == index, str(e.value)
    assert (out == 5).all(), "a CPU call that raises writes nothing"


def test_cu_seqlens_argument_errors(rng):
    ids = rng.integers(0, 5, (2, 3))
    tok, pos = tables(rng, 5, 4, 6)
    cu = np.array([0, 6], np.int32)
    with pytest.raises(tokemb.InvalidArgument, match="position_ids and cu_seqlens"):
        tokemb.forward(ids, tok, pos, cu_seqlens=cu, position_ids=np.zeros((2, 3), np.int64))
    with pytest.raises(tokemb.InvalidArgument, match="cu_seqlens has dtype"):
        tokemb.forward(ids, tok, pos, cu_seqlens=cu.astype(np.int64))


# ---- the PyTorch module ------------------------------------------------------------------------

torch = pytest.importorskip("torch", reason="PyTorch not installed")
import tokemb.torch as tt  # noqa: E402


def module_and_ids(rng, dropout, mode="element", dtype=None, positive=False):
    """positive=True: tables in [1, 2], so that an output is 0 exactly where it was dropped."""
    B, T, D, V = sizes(rng)
    P = T + int(rng.integers(0, 4))
    torch.manual_seed(int(rng.integers(0, 2**31)))
    m = tt.TokenPositionEmbedding(V, D, P, dropout=dropout, dropout_mode=mode, dtype=dtype)
    if positive:
        with torch.no_grad():
            m.tok_emb.weight.uniform_(1.0, 2.0)
            m.pos_emb.weight.uniform_(1.0, 2.0)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    return m, ids


def test_module_eval_is_exactly_no_dropout_and_p0_never_drops(rng):
    m, ids = module_and_ids(rng, dropout=0.5)
    plain = tokemb.forward(ids, m.tok_emb.weight.detach(), m.pos_emb.weight.detach())
    m.eval()
    assert not m.training
    assert torch.equal(m(ids), plain)
    m.train()
    with torch.no_grad():
        m.tok_emb.weight.uniform_(1.0, 2.0)
        m.pos_emb.weight.uniform_(1.0, 2.0)
    # p = 0.5: no drop among >= 64 elements has probability 2^-64.
    assert (m(ids) == 0).any() or ids.numel() * m.tok_emb.embedding_dim < 64
    m0, ids0 = module_and_ids(rng, dropout=0.0)
    state = torch.get_rng_state()
    assert torch.equal(m0(ids0), tokemb.forward(ids0, m0.tok_emb.weight.detach(),
                                                m0.pos_emb.weight.detach()))
    assert torch.equal(torch.get_rng_state(), state), "p = 0 must not draw from the generator"


@pytest.mark.parametrize("mode", ["element", "token"])
def test_module_manual_seed_reproduces_and_forwards_differ(rng, mode):
    m, ids = module_and_ids(rng, dropout=0.4, mode=mode, positive=True)
    s = int(rng.integers(0, 2**31))
    torch.manual_seed(s)
    a, b = m(ids), m(ids)
    torch.manual_seed(s)
    a2, b2 = m(ids), m(ids)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    if ids.numel() * (1 if mode == "token" else m.tok_emb.embedding_dim) >= 64:
        assert not torch.equal(a == 0, b == 0), "consecutive forwards drew the same mask"
    # The module draws its (seed, offset) from the CPU generator: the functional call with the
    # same draw gives the same bits.
    torch.manual_seed(s)
    so = tt.draw_seed_offset("cpu")
    ref = tokemb.forward(ids, m.tok_emb.weight.detach(), m.pos_emb.weight.detach(),
                         dropout_p=0.4, dropout_mode=mode, seed_offset=so)
    assert torch.equal(a, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["element", "token"])
def test_module_backward_uses_its_forward_mask(rng, dtype, mode):
    m, ids = module_and_ids(rng, dropout=float(rng.uniform(0.1, 0.7)), mode=mode, dtype=dtype,
                            positive=True)
    out = m(ids)
    # The mask of this forward, recovered from the output of the same draw on ones.
    with torch.no_grad():
        factor = out.float() / (m.tok_emb.weight.float()[ids] + m.pos_emb.weight.float()[
            torch.arange(ids.shape[1])])
    keep = out != 0
    dout = torch.from_numpy(rng.standard_normal(out.shape).astype(np.float32)).to(dtype)
    # A second forward in between must not disturb the first one's backward (its own mask).
    m(ids)
    out.backward(dout)
    scale = np.float32(1.0 / (1.0 - float(m.dropout)))
    masked = dout.float().numpy() * np.where(keep.numpy(), scale, np.float32(0))
    V, P = m.tok_emb.num_embeddings, m.pos_emb.num_embeddings
    gt, gp = ref_backward(ids.numpy(), masked, V, P)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    np.testing.assert_allclose(m.tok_emb.weight.grad.float().numpy(), gt, rtol=tol, atol=tol)
    np.testing.assert_allclose(m.pos_emb.weight.grad.float().numpy(), gp, rtol=tol, atol=tol)
    if dtype == torch.float32:  # the kept factors are the scale, exactly
        np.testing.assert_allclose(factor[keep].numpy(), scale, rtol=1e-5)


def test_module_cu_seqlens_equals_position_ids(rng):
    m, ids = module_and_ids(rng, dropout=0.0)
    B, T = ids.shape
    P = m.pos_emb.num_embeddings
    cu = random_cu_seqlens(rng, B * T, P)
    pid = torch.from_numpy(positions_of(cu, B * T).reshape(B, T))
    ref = copy_module(m)
    a = m(ids, cu_seqlens=torch.from_numpy(cu))
    b = ref(ids, position_ids=pid)
    assert torch.equal(a, b)
    dout = torch.randn(a.shape)
    a.backward(dout)
    b.backward(dout)
    torch.testing.assert_close(m.tok_emb.weight.grad, ref.tok_emb.weight.grad)
    torch.testing.assert_close(m.pos_emb.weight.grad, ref.pos_emb.weight.grad)


def copy_module(m):
    import copy
    return copy.deepcopy(m)


def test_module_matches_pytorch_eager_with_the_same_mask(rng):
    """The book's drop_emb(tok_emb(ids) + pos_emb(arange(T))) with tokemb's mask as the dropout:
    forward and both gradients equal PyTorch's autograd on the reference expression."""
    m, ids = module_and_ids(rng, dropout=0.25, positive=True)
    ref = copy_module(m)
    out = m(ids)
    T = ids.shape[1]
    keep = (out != 0).float()
    x = ref.tok_emb(ids) + ref.pos_emb(torch.arange(T))
    scale = float(np.float32(1.0 / (1.0 - 0.25)))
    y = x * keep * scale
    torch.testing.assert_close(out, y, rtol=1e-6, atol=1e-6)
    dout = torch.randn(out.shape)
    out.backward(dout)
    y.backward(dout)
    torch.testing.assert_close(m.tok_emb.weight.grad, ref.tok_emb.weight.grad, rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(m.pos_emb.weight.grad, ref.pos_emb.weight.grad, rtol=1e-5,
                               atol=1e-6)


def test_module_bad_dropout_arguments():
    with pytest.raises(tokemb.InvalidArgument, match="dropout is"):
        tt.TokenPositionEmbedding(10, 4, 3, dropout=-0.1)
    with pytest.raises(tokemb.InvalidArgument, match="dropout_mode"):
        tt.TokenPositionEmbedding(10, 4, 3, dropout=0.1, dropout_mode="rows")
    assert "dropout=0.1" in repr(tt.TokenPositionEmbedding(10, 4, 3, dropout=0.1))
