"""The functional API on NumPy arrays with issue 21's layouts and dtypes: strided ids,
position_ids and dout (slices, transposes, broadcasts, negative strides), any number of leading
dimensions, float64 tables and gradients, gradients in dout's 16-bit dtype. Reference: NumPy in
float64 (exact for float64 up to summation order; f32 sums within conftest's bound)."""

import numpy as np
import pytest

import tokemb


def ref_forward(ids, tok, pos=None, position_ids=None, offset=0):
    """tok[ids] + pos[positions], the f32 (f64 for f64) sum rounded once, on [..., T]."""
    acc = np.float64 if tok.dtype == np.float64 else np.float32
    out = tok.astype(acc)[ids]
    if pos is not None:
        T = ids.shape[-1]
        p = pos.astype(acc)
        out = out + (p[position_ids] if position_ids is not None else p[offset:offset + T])
    return out.astype(tok.dtype)


def ref_backward(ids, dout, V, P, position_ids=None, padding_idx=None):
    """Exact-enough float64 gradients and the same scatter of |dout| (for the error bound)."""
    D = dout.shape[-1]
    d = dout.astype(np.float64).reshape(-1, D)
    flat = np.asarray(ids).reshape(-1)
    pos = (np.broadcast_to(np.arange(ids.shape[-1]), ids.shape) if position_ids is None
           else np.asarray(position_ids)).reshape(-1)
    keep = flat != (-1 if padding_idx is None else padding_idx)
    res = []
    for vals in (d, np.abs(d)):
        gt, gp = np.zeros((V, D)), np.zeros((P, D))
        np.add.at(gt, flat[keep], vals[keep])
        np.add.at(gp, pos, vals)
        res.append((gt, gp))
    return res


def check_grads(got_t, got_p, ids, dout, V, P, rel=1e-5, **kw):
    (gt, gp), (at, ap) = ref_backward(ids, dout, V, P, **kw)
    for got, want, bound in ((got_t, gt, at), (got_p, gp, ap)):
        err = np.abs(got.astype(np.float64) - want)
        assert (err <= rel * bound + 1e-6).all(), f"gradient off by up to {err.max()}"


def tables(rng, V, P, D, dtype=np.float32):
    return (rng.standard_normal((V, D)).astype(dtype), rng.standard_normal((P, D)).astype(dtype))


def layouts(rng, V, shape):
    """ids of ``shape`` in several layouts, none of them C-contiguous."""
    A, T = shape
    yield "slice", rng.integers(0, V, (A, T + 1))[:, :-1]
    yield "transpose", rng.integers(0, V, (T, A)).T
    yield "broadcast", np.broadcast_to(rng.integers(0, V, (1, T)), (A, T))
    yield "reversed", rng.integers(0, V, (A, T))[:, ::-1]
    yield "every_other_i32", rng.integers(0, V, (2 * A, 2 * T)).astype(np.int32)[::2, ::2]


def test_strided_ids_forward_and_backward(rng):
    V, P, D, A, T = 30, 12, 5, 3, 7
    tok, pos = tables(rng, V, P, D)
    for name, ids in layouts(rng, V, (A, T)):
        assert not ids.flags.c_contiguous, name
        out = tokemb.forward(ids, tok, pos)
        np.testing.assert_array_equal(out, ref_forward(ids, tok, pos), err_msg=name)
        dout = rng.standard_normal((A, T, D)).astype(np.float32)
        gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
        tokemb.backward(ids, dout, gt, gp)
        check_grads(gt, gp, ids, dout, V, P)


def test_strided_position_ids(rng):
    V, P, D, A, T = 30, 12, 5, 3, 6
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (A, T))
    for name, pids in layouts(rng, P, (A, T)):
        out = tokemb.forward(ids, tok, pos, position_ids=pids)
        np.testing.assert_array_equal(out, ref_forward(ids, tok, pos, position_ids=pids),
                                      err_msg=name)
        dout = rng.standard_normal((A, T, D)).astype(np.float32)
        gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
        tokemb.backward(ids, dout, gt, gp, position_ids=pids)
        check_grads(gt, gp, ids, dout, V, P, position_ids=pids)


def test_strided_dout(rng):
    V, P, D, A, T = 20, 9, 6, 4, 5
    ids = rng.integers(0, V, (A, T))
    douts = {
        "broadcast": np.broadcast_to(np.float32(1.5), (A, T, D)),  # strides (0, 0, 0)
        "transpose": rng.standard_normal((T, A, D)).astype(np.float32).transpose(1, 0, 2),
        "columns": rng.standard_normal((A, T, 2 * D)).astype(np.float32)[..., ::2],
        "reversed_rows": rng.standard_normal((A, T, D)).astype(np.float32)[:, ::-1],
    }
    for name, dout in douts.items():
        assert not dout.flags.c_contiguous, name
        gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
        tokemb.backward(ids, dout, gt, gp)
        check_grads(gt, gp, ids, dout, V, P)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4), (1, 2, 1, 3)])
def test_leading_dimensions(rng, shape):
    V, P, D = 25, 8, 4
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, shape)
    out = tokemb.forward(ids, tok, pos)
    assert out.shape == (*shape, D)
    np.testing.assert_array_equal(out, ref_forward(ids, tok, pos))
    pids = rng.integers(0, P, shape)
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, position_ids=pids),
                                  ref_forward(ids, tok, pos, position_ids=pids))
    dout = rng.standard_normal((*shape, D)).astype(np.float32)
    gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
    tokemb.backward(ids, dout, gt, gp)
    check_grads(gt, gp, ids, dout, V, P)


def test_ids_rank_is_named(rng):
    tok = np.zeros((4, 2), np.float32)
    assert tokemb.forward(np.zeros((1,) * 6 + (3,), np.int64), tok).shape == (1,) * 6 + (3, 2)
    for shape in ((), (1,) * 7 + (3,)):
        with pytest.raises(tokemb.InvalidArgument,
                           match=rf"tokemb.forward: ids has rank {len(shape)}; expected 1 to 7"):
            tokemb.forward(np.zeros(shape, np.int64), tok)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0,), (2, 0, 5)])
def test_empty_batches(rng, shape):
    V, P, D = 6, 5, 3
    tok, pos = tables(rng, V, P, D)
    ids = np.zeros(shape, np.int64)
    out = tokemb.forward(ids, tok, pos)
    assert out.shape == (*shape, D)
    gt, gp = np.full((V, D), 7.0, np.float32), np.full((P, D), 7.0, np.float32)
    tokemb.backward(ids, np.zeros((*shape, D), np.float32), gt, gp, accumulate=False)
    assert (gt == 0).all() and (gp == 0).all()


def test_float64_tables_and_gradients(rng):
    V, P, D, A, T = 17, 9, 6, 3, 8
    tok, pos = tables(rng, V, P, D, np.float64)
    ids = rng.integers(0, V, (A, T))[:, ::-1]
    out = tokemb.forward(ids, tok, pos, padding_idx=3)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, tok[ids] + pos[:T])
    dout = rng.standard_normal((A, T, D))
    gt, gp = np.zeros((V, D)), np.zeros((P, D))
    tokemb.backward(ids, dout, gt, gp, padding_idx=3)
    # f64 sums: within a few f64 roundings of the exact sum.
    check_grads(gt, gp, ids, dout, V, P, rel=1e-13, padding_idx=3)
    assert (gt[3] == 0).all()


def test_float64_dout_needs_float64_gradients(rng):
    V, P, D = 5, 4, 3
    ids = rng.integers(0, V, (2, 3))
    with pytest.raises(tokemb.InvalidArgument, match="grad"):
        tokemb.backward(ids, np.ones((2, 3, D)), np.zeros((V, D), np.float32),
                        np.zeros((P, D), np.float32))


def test_float16_gradients_in_douts_dtype(rng):
    """grad_token/grad_pos in dout's f16: summed in f32 and rounded once (so within half an
    f16 ulp, 2^-11 relative, of the exact sum, plus the f32 bound)."""
    V, P, D, A, T = 11, 7, 8, 4, 6
    ids = rng.integers(0, V, (A, T))
    dout = rng.standard_normal((A, T, D)).astype(np.float16)
    gt, gp = np.zeros((V, D), np.float16), np.zeros((P, D), np.float16)
    tokemb.backward(ids, dout, gt, gp, accumulate=False)
    (rt, rp), (at, ap) = ref_backward(ids, dout, V, P)
    for got, want, bound in ((gt, rt, at), (gp, rp, ap)):
        err = np.abs(got.astype(np.float64) - want)
        assert (err <= 2.0**-11 * np.abs(want) + 1e-5 * bound + 1e-6).all(), err.max()
    # Exact where every sum is exact in f16 (small integers): equal to the reference bit for bit.
    dint = rng.integers(-4, 5, (A, T, D)).astype(np.float16)
    gt2 = np.full((V, D), 9, np.float16)
    tokemb.backward(ids, dint, gt2, None, accumulate=False)
    np.testing.assert_array_equal(gt2, ref_backward(ids, dint, V, P)[0][0].astype(np.float16))


def test_tables_and_gradients_must_still_be_row_major(rng):
    """Only ids, position_ids and dout may be strided; a strided table or gradient is named."""
    V, P, D = 8, 5, 4
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (2, 3))
    with pytest.raises(tokemb.InvalidArgument, match="token_table"):
        tokemb.forward(ids, np.asfortranarray(tok), pos)
    with pytest.raises(tokemb.InvalidArgument, match="pos_table"):
        tokemb.forward(ids, tok, np.asfortranarray(pos))
    out = np.zeros((2, 3, 2 * D), np.float32)[..., ::2]
    with pytest.raises(tokemb.InvalidArgument, match="out"):
        tokemb.forward(ids, tok, pos, out=out)
    gt = np.zeros((V, 2 * D), np.float32)
    with pytest.raises(tokemb.InvalidArgument, match="grad_token"):
        tokemb.backward(ids, np.ones((2, 3, D), np.float32), gt[:, ::2])
    assert (gt == 0).all()
    gp = np.zeros((D, P), np.float32).T
    with pytest.raises(tokemb.InvalidArgument, match="grad_pos"):
        tokemb.backward(ids, np.ones((2, 3, D), np.float32), np.zeros((V, D), np.float32), gp)


def test_arrays_that_cannot_export_themselves_are_named_with_their_dtype():
    """A big-endian NumPy array has __dlpack__ but cannot export: the error names its dtype and
    the exporter's reason instead of calling it "not a DLPack array"."""
    tok = np.zeros((4, 3), np.float32)
    be = np.zeros((2, 2), dtype=">i8")
    with pytest.raises(tokemb.InvalidArgument, match=r"ids \(.*ndarray.* of dtype >i8\) cannot be "
                                                     r"passed through DLPack"):
        tokemb.forward(be, tok)
    with pytest.raises(tokemb.InvalidArgument, match="ids.*not a DLPack array"):
        tokemb.forward([[1, 2]], tok)  # a list has no __dlpack__ at all
