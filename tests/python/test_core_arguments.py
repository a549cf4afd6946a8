"""Issue 20, the core library's side from Python: empty batches, overlapping arguments
(seed_offset and the error record included; touching buffers accepted), dropout_p checked as
given, a column slice of a wider table refused, init_pytorch's padding_idx range."""

import numpy as np
import pytest

import tokemb
from conftest import ref_forward


def tables(rng, V, P, D):
    return (rng.standard_normal((V, D)).astype(np.float32),
            rng.standard_normal((P, D)).astype(np.float32))


# ---- item 11: empty batches ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_empty_batches_are_valid(rng, shape):
    V, P, D = 9, 6, 8
    tok, pos = tables(rng, V, P, D)
    ids = np.zeros(shape, np.int64)
    out = tokemb.forward(ids, tok, pos, dropout_p=0.5, seed=3)
    assert out.shape == shape + (D,) and out.dtype == np.float32
    dout = np.ones(shape + (D,), np.float32)
    for deterministic in (False, True):
        gt, gp = np.full((V, D), 7.0, np.float32), np.full((P, D), 7.0, np.float32)
        tokemb.backward(ids, dout, gt, gp, deterministic=deterministic)  # accumulate: unchanged
        assert (gt == 7.0).all() and (gp == 7.0).all()
        tokemb.backward(ids, dout, gt, gp, accumulate=False, deterministic=deterministic)
        assert (gt == 0.0).all() and (gp == 0.0).all()
    cu = np.array([0, 0], np.int32)
    assert tokemb.forward(ids, tok, pos, cu_seqlens=cu).shape == shape + (D,)


def test_a_sliced_empty_view_is_not_called_non_contiguous(rng):
    V, P, D = 9, 6, 8
    tok, pos = tables(rng, V, P, D)
    wide = rng.integers(0, V, (4, 5))
    ids = wide[:, :0]  # [4, 0] with the strides of the [4, 5] array
    assert ids.shape == (4, 0) and ids.strides[0] == 5 * ids.itemsize
    out_full = np.full((4, 5, D), 3.0, np.float32)
    out = out_full[:, :0]
    assert tokemb.forward(ids, tok, pos, out=out) is out
    assert (out_full == 3.0).all()
    gt = np.full((V, D), 2.0, np.float32)
    tokemb.backward(ids, out, gt, accumulate=False)
    assert (gt == 0.0).all()


def test_torch_module_with_an_empty_batch():
    torch = pytest.importorskip("torch")
    from tokemb.torch import TokenPositionEmbedding
    torch.manual_seed(0)
    emb = TokenPositionEmbedding(11, 4, 5)
    ids = torch.zeros((0, 5), dtype=torch.int64)
    out = emb(ids)
    assert tuple(out.shape) == (0, 5, 4)
    out.sum().backward()
    assert (emb.tok_emb.weight.grad == 0).all() and (emb.pos_emb.weight.grad == 0).all()


# ---- item 10: overlaps ---------------------------------------------------------------------------

def test_seed_offset_viewing_grad_token_is_rejected(rng):
    V, P, D, B, T = 8, 6, 4, 2, 3
    ids = rng.integers(0, V, (B, T))
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    gt = rng.standard_normal((V, D)).astype(np.float32)
    gp = np.zeros((P, D), np.float32)
    before = gt.copy()
    seed_offset = gt.reshape(-1)[4:8].view(np.int64)  # the bytes of grad_token's second row
    for accumulate in (False, True):
        with pytest.raises(tokemb.InvalidArgument, match="grad_token.*overlaps.*seed_offset"):
            tokemb.backward(ids, dout, gt, gp, dropout_p=0.5, seed_offset=seed_offset,
                            accumulate=accumulate)
    np.testing.assert_array_equal(gt, before)
    assert (gp == 0).all()


def test_touching_but_disjoint_buffers_are_accepted(rng):
    """Back to back in one allocation, as PyTorch's caching allocator places tensors."""
    V, P, D, B, T = 8, 6, 4, 2, 3
    block = np.zeros(V * D + P * D + 2 * B * T * D + 4, np.float32)
    tok = block[:V * D].reshape(V, D)
    pos = block[V * D:V * D + P * D].reshape(P, D)
    out = block[V * D + P * D:V * D + P * D + B * T * D].reshape(B, T, D)
    dout = block[V * D + P * D + B * T * D:-4].reshape(B, T, D)
    seed_offset = block[-4:].view(np.int64)
    tok[...] = rng.standard_normal((V, D))
    pos[...] = rng.standard_normal((P, D))
    dout[...] = rng.standard_normal((B, T, D))
    seed_offset[...] = [5, 1]
    ids = rng.integers(0, V, (B, T))
    tokemb.forward(ids, tok, pos, out=out, dropout_p=0.3, seed_offset=seed_offset)
    want = tokemb.forward(ids, tok.copy(), pos.copy(), dropout_p=0.3, seed=5, offset=1)
    np.testing.assert_array_equal(out, want)
    # Gradients right after dout, seed_offset right after the gradients.
    g = np.zeros(V * D + P * D + 4, np.float32)
    gt, gp = g[:V * D].reshape(V, D), g[V * D:V * D + P * D].reshape(P, D)
    so = g[-4:].view(np.int64)
    so[...] = [5, 1]
    tokemb.backward(ids, dout, gt, gp, dropout_p=0.3, seed_offset=so, accumulate=False)
    gt2, gp2 = np.zeros_like(gt), np.zeros_like(gp)
    tokemb.backward(ids, dout.copy(), gt2, gp2, dropout_p=0.3, seed=5, offset=1)
    np.testing.assert_array_equal(gt, gt2)
    np.testing.assert_array_equal(gp, gp2)


# ---- item 12: dropout_p ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["0.5", b"0.5", True, False, None, [0.5], 1 + 1e-9, -1e-50,
                                 float("nan"), 2])
def test_dropout_p_is_a_number_in_the_unit_interval_as_given(rng, bad):
    V, P, D, B, T = 8, 6, 4, 2, 3
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    out = np.full((B, T, D), 5.0, np.float32)
    with pytest.raises(tokemb.InvalidArgument, match="dropout"):
        tokemb.forward(ids, tok, pos, out=out, dropout_p=bad)
    gt = np.full((V, D), 5.0, np.float32)
    with pytest.raises(tokemb.InvalidArgument, match="dropout"):
        tokemb.backward(ids, out, gt, dropout_p=bad)
    assert (out == 5.0).all() and (gt == 5.0).all()


def test_dropout_p_numbers_are_accepted(rng):
    V, P, D, B, T = 8, 6, 4, 2, 3
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    for p in (0, 1, 0.25, np.float32(0.25), np.float64(0.25), np.int64(0)):
        tokemb.forward(ids, tok, pos, dropout_p=p)
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, dropout_p=0),
                                  ref_forward(ids, tok, pos))


def test_torch_dropout_arguments_are_checked_as_given():
    torch = pytest.importorskip("torch")
    from tokemb.torch import TokenPositionEmbedding, token_position_embedding
    for bad in ("0.5", True, 1 + 1e-9, -1e-50):
        with pytest.raises(tokemb.InvalidArgument, match="dropout"):
            TokenPositionEmbedding(11, 4, 5, dropout=bad)
    tw, pw = torch.zeros(11, 4), torch.zeros(5, 4)
    ids = torch.zeros((1, 5), dtype=torch.int64)
    for bad in ("0.5", True, 1 + 1e-9, -1e-50):
        with pytest.raises(tokemb.InvalidArgument, match="dropout"):
            token_position_embedding(ids, tw, pw, dropout_p=bad)


# ---- mutation gaps -----------------------------------------------------------------------------

def test_a_column_slice_of_a_wider_table_is_rejected(rng):
    """Only dimension 0's stride is wrong here (transposed arrays fail on the last one)."""
    V, P, D, B, T = 8, 6, 4, 2, 3
    wide = rng.standard_normal((V, D + 3)).astype(np.float32)
    tok = wide[:, :D]
    assert tok.strides[1] == 4 and tok.strides[0] != D * 4
    ids = rng.integers(0, V, (B, T))
    with pytest.raises(tokemb.InvalidArgument, match="token_table of shape .* must be contiguous"):
        tokemb.forward(ids, tok, None)
    gwide = np.zeros((V, D + 3), np.float32)
    with pytest.raises(tokemb.InvalidArgument, match="grad_token of shape .* must be contiguous"):
        tokemb.backward(ids, np.ones((B, T, D), np.float32), gwide[:, :D])
    assert (gwide == 0).all()


def test_init_pytorch_padding_idx_past_the_table_raises():
    V, D = 7, 4
    t = np.full((V, D), 3.0, np.float32)
    guard = np.full((V + 1, D), 3.0, np.float32)
    inner = guard[:V]  # a table with memory right after it
    for bad in (V, V + 1, -V - 1):
        with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
            tokemb.init_pytorch(t, seed=1, padding_idx=bad)
        with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
            tokemb.init_pytorch(inner, seed=1, padding_idx=bad)
    assert (t == 3.0).all() and (guard == 3.0).all()
    tokemb.init_pytorch(t, seed=1, padding_idx=V - 1)
    assert (t[V - 1] == 0).all()
