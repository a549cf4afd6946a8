"""The functional API on NumPy arrays (CPU backend) against a NumPy reference."""

import numpy as np
import pytest

import tokemb
from conftest import assert_grads_close, ref_forward

ID_TYPES = [np.int32, np.int64]
TABLE_TYPES = [np.float32, np.float16]


def tables(rng, V, P, D, dtype=np.float32):
    return (rng.standard_normal((V, D)).astype(dtype), rng.standard_normal((P, D)).astype(dtype))


@pytest.mark.parametrize("id_type", ID_TYPES)
@pytest.mark.parametrize("dtype", TABLE_TYPES)
def test_forward_matches_reference(rng, id_type, dtype):
    V, P, D = int(rng.integers(2, 300)), int(rng.integers(8, 40)), int(rng.integers(1, 70))
    B, T = int(rng.integers(1, 6)), int(rng.integers(1, 8))
    tok, pos = tables(rng, V, P, D, dtype)
    ids = rng.integers(0, V, (B, T)).astype(id_type)
    out = tokemb.forward(ids, tok, pos)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (B, T, D)
    np.testing.assert_array_equal(out, ref_forward(ids, tok, pos))  # exact: one rounding

    off = int(rng.integers(0, P - T + 1)) if P >= T else 0
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, position_offset=off),
                                  ref_forward(ids, tok, pos, offset=off))
    np.testing.assert_array_equal(tokemb.forward(ids, tok), ref_forward(ids, tok))

    pids = rng.integers(0, P, (B, T)).astype(id_type)
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, position_ids=pids),
                                  ref_forward(ids, tok, pos, position_ids=pids))


def test_forward_into_out_and_padding_row(rng):
    V, P, D, B, T = 40, 10, 16, 3, 5
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    pad = int(ids[1, 2])
    out = np.full((B, T, D), np.nan, np.float32)
    got = tokemb.forward(ids, tok, pos, out=out, padding_idx=pad)
    assert got is out
    # As in nn.Embedding, the padding row's forward value is the table row.
    np.testing.assert_array_equal(out, ref_forward(ids, tok, pos))


@pytest.mark.parametrize("id_type", ID_TYPES)
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_accumulates(rng, id_type, deterministic):
    V, P, D = int(rng.integers(2, 200)), int(rng.integers(8, 30)), int(rng.integers(1, 50))
    B, T = int(rng.integers(1, 6)), int(rng.integers(1, 8))
    ids = rng.integers(0, V, (B, T)).astype(id_type)
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    g0t = rng.standard_normal((V, D)).astype(np.float32)
    g0p = rng.standard_normal((P, D)).astype(np.float32)
    gt, gp = g0t.copy(), g0p.copy()
    assert tokemb.backward(ids, dout, gt, gp, deterministic=deterministic) is None
    assert_grads_close(gt - g0t, ids, dout, V, P, gp - g0p)


@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_overwrite_options(rng, deterministic):
    V, P, D, B, T = 64, 16, 24, 4, 6
    ids = rng.integers(0, V, (B, T)).astype(np.int64)
    ids[0, :3] = 5  # duplicates
    dout = rng.standard_normal((B, T, D)).astype(np.float16)  # dout may be any float dtype
    pids = rng.integers(0, P, (B, T))
    pad = 5
    # NaN-poisoned: an unwritten row would fail.
    gt = np.full((V, D), np.nan, np.float32)
    gp = np.full((P, D), np.nan, np.float32)
    tokemb.backward(ids, dout, gt, gp, position_ids=pids, padding_idx=pad, accumulate=False,
                    deterministic=deterministic)
    assert np.isfinite(gt).all() and np.isfinite(gp).all()
    assert (gt[pad] == 0).all()
    assert_grads_close(gt, ids, dout, V, P, gp, position_ids=pids, padding_idx=pad)

    off = 3
    gt2 = np.zeros((V, D), np.float32)
    gp2 = np.zeros((P, D), np.float32)
    tokemb.backward(ids, dout, gt2, gp2, position_offset=off)
    assert_grads_close(gt2, ids, dout, V, P, gp2, offset=off)
    gt3 = np.zeros((V, D), np.float32)
    tokemb.backward(ids, dout, gt3)  # no positional gradient
    assert_grads_close(gt3, ids, dout, V, P)


def test_deterministic_backward_is_bitwise_repeatable(rng):
    V, P, D, B, T = 30, 8, 40, 8, 8
    ids = rng.integers(0, 4, (B, T))  # few distinct ids: long sums
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    runs = []
    for _ in range(3):
        gt = np.zeros((V, D), np.float32)
        gp = np.zeros((P, D), np.float32)
        tokemb.backward(ids, dout, gt, gp, deterministic=True)
        runs.append((gt, gp))
    for gt, gp in runs[1:]:
        assert gt.tobytes() == runs[0][0].tobytes() and gp.tobytes() == runs[0][1].tobytes()


def test_bfloat16_through_ml_dtypes(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (NumPy bfloat16) not installed")
    bf16 = ml_dtypes.bfloat16
    V, P, D, B, T = 50, 8, 12, 2, 5
    tok = rng.standard_normal((V, D)).astype(bf16)
    pos = rng.standard_normal((P, D)).astype(bf16)
    ids = rng.integers(0, V, (B, T))
    out = tokemb.forward(ids, tok, pos)
    assert out.dtype == bf16
    np.testing.assert_array_equal(out.astype(np.float32),
                                  ref_forward(ids, tok, pos).astype(np.float32))


# ---- errors ------------------------------------------------------------------------------------

def test_bad_token_id_raises_and_writes_nothing(rng):
    V, P, D, B, T = 20, 8, 6, 3, 4
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    b, t = int(rng.integers(0, B)), int(rng.integers(0, T))
    bad = int(rng.integers(V, 10 * V))
    ids[b, t] = bad
    out = np.full((B, T, D), 7.0, np.float32)
    with pytest.raises(tokemb.IndexOutOfRange) as ei:
        tokemb.forward(ids, tok, pos, out=out)
    e = ei.value
    assert isinstance(e, IndexError) and isinstance(e, tokemb.Error)
    assert (e.batch, e.time, e.value, e.limit, e.kind) == (b, t, bad, V, "token")
    assert str(bad) in str(e)
    assert (out == 7.0).all(), "forward wrote output despite a bad id"

    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    gt = np.full((V, D), 3.0, np.float32)
    gp = np.full((P, D), 3.0, np.float32)
    ids[b, t] = -1
    with pytest.raises(tokemb.IndexOutOfRange) as ei:
        tokemb.backward(ids, dout, gt, gp)
    assert ei.value.value == -1
    assert (gt == 3.0).all() and (gp == 3.0).all(), "backward wrote gradients despite a bad id"


def test_bad_position_id_raises(rng):
    V, P, D, B, T = 20, 8, 6, 2, 4
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    pids = rng.integers(0, P, (B, T))
    pids[1, 3] = P
    with pytest.raises(tokemb.IndexOutOfRange) as ei:
        tokemb.forward(ids, tok, pos, position_ids=pids)
    assert (ei.value.kind, ei.value.batch, ei.value.time, ei.value.limit) == ("position", 1, 3, P)


def test_argument_errors_write_nothing(rng):
    V, P, D, B, T = 20, 8, 6, 2, 4
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    out = np.full((B, T, D), 5.0, np.float32)

    def untouched():
        assert (out == 5.0).all()

    with pytest.raises(tokemb.InvalidArgument, match="out"):  # shape mismatch
        tokemb.forward(ids, tok, pos, out=np.zeros((B, T, D + 1), np.float32))
    with pytest.raises(tokemb.InvalidArgument):  # dim mismatch between the tables
        tokemb.forward(ids, tok, pos[:, :-1].copy(), out=out)
    untouched()
    with pytest.raises(ValueError):  # dtype mismatch: InvalidArgument is a ValueError
        tokemb.forward(ids, tok, pos.astype(np.float16), out=out)
    untouched()
    with pytest.raises(tokemb.IndexOutOfRange, match="position_offset") as ei:
        tokemb.forward(ids, tok, pos, out=out, position_offset=P - T + 1)
    assert ei.value.kind == "position" and ei.value.limit == P
    untouched()
    with pytest.raises(tokemb.InvalidArgument, match="token_table of shape .* must be contiguous"):
        tokemb.forward(ids, np.asfortranarray(tok), pos, out=out)
    with pytest.raises(tokemb.InvalidArgument, match="ids"):
        tokemb.forward(ids.astype(np.float32), tok, pos, out=out)
    with pytest.raises(tokemb.InvalidArgument, match="ids.*not a DLPack array"):
        tokemb.forward([[1, 2]], tok, pos)
    ro = np.zeros((B, T, D), np.float32)
    ro.setflags(write=False)
    with pytest.raises(tokemb.InvalidArgument, match="read-only"):
        tokemb.forward(ids, tok, pos, out=ro)
    untouched()
    gt = np.full((V, D), 2.0, np.float32)
    with pytest.raises(tokemb.InvalidArgument):  # gradients must be f32
        tokemb.backward(ids, np.zeros((B, T, D), np.float32), gt.astype(np.float16))
    with pytest.raises(tokemb.InvalidArgument):  # dout shape
        tokemb.backward(ids, np.zeros((B, T + 1, D), np.float32), gt)
    assert (gt == 2.0).all()
    with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
        tokemb.forward(ids, tok, pos, padding_idx="x")


def test_error_classes():
    assert issubclass(tokemb.InvalidArgument, ValueError)
    assert issubclass(tokemb.IndexOutOfRange, IndexError)
    assert issubclass(tokemb.OutOfMemory, MemoryError)
    assert issubclass(tokemb.CudaError, RuntimeError)
    assert issubclass(tokemb.Unsupported, NotImplementedError)
    assert issubclass(tokemb.IoError, OSError)
    for cls in (tokemb.InvalidArgument, tokemb.IndexOutOfRange, tokemb.OutOfMemory,
                tokemb.CudaError, tokemb.Unsupported, tokemb.IoError):
        assert issubclass(cls, tokemb.Error)


def test_jax_arrays_if_installed(rng):
    jnp = pytest.importorskip("jax.numpy", reason="JAX not installed")
    V, P, D, B, T = 30, 8, 5, 2, 4
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    out = tokemb.forward(jnp.asarray(ids), jnp.asarray(tok), jnp.asarray(pos))
    assert type(out).__module__.split(".")[0] in ("jax", "jaxlib")
    np.testing.assert_array_equal(np.asarray(out), ref_forward(ids, tok, pos))
    with pytest.raises(tokemb.InvalidArgument, match="immutable"):
        tokemb.backward(jnp.asarray(ids), jnp.zeros((B, T, D)), jnp.zeros((V, D)))


def test_integer_arguments_are_not_truncated(rng):
    V, P, D, B, T = 10, 8, 3, 2, 3
    tok, pos = tables(rng, V, P, D)
    ids = rng.integers(0, V, (B, T))
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    gt, gp = np.zeros_like(tok), np.zeros_like(pos)
    for bad in (1.7, "1", 2.0):
        with pytest.raises(tokemb.InvalidArgument, match="position_offset"):
            tokemb.forward(ids, tok, pos, position_offset=bad)
        with pytest.raises(tokemb.InvalidArgument, match="position_offset"):
            tokemb.backward(ids, dout, gt, gp, position_offset=bad)
        with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
            tokemb.forward(ids, tok, pos, padding_idx=bad)
        with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
            tokemb.backward(ids, dout, gt, gp, padding_idx=bad)
    for kw in ({"seed": -1}, {"offset": -1}, {"seed": 0.5}, {"seed": 2**64}):
        name = next(iter(kw))
        with pytest.raises(tokemb.InvalidArgument, match=name):
            tokemb.forward(ids, tok, pos, dropout_p=0.5, **kw)
        with pytest.raises(tokemb.InvalidArgument, match=name):
            tokemb.backward(ids, dout, gt, gp, dropout_p=0.5, **kw)
    with pytest.raises(tokemb.InvalidArgument, match="position_offset"):
        tokemb.forward(ids, tok, pos, position_offset=2**63)
    assert (gt == 0).all() and (gp == 0).all()
    # Integers of any kind (NumPy's included) are taken as they are.
    np.testing.assert_array_equal(tokemb.forward(ids, tok, pos, position_offset=np.int32(2)),
                                  ref_forward(ids, tok, pos, offset=2))


def test_backward_is_one_binding_call_with_an_allocator(rng, monkeypatch):
    """tokemb.backward converts and checks its arguments once: the workspace size is computed by
    the binding itself, which calls the allocator only when the call needs a workspace (never on
    the CPU backend)."""
    from tokemb import _core
    assert not hasattr(_core, "backward_workspace_size")
    V, P, D, B, T = 9, 5, 3, 2, 4
    ids = rng.integers(0, V, (B, T))
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    gt, gp = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
    asked = []
    _core.backward(ids, dout, gt, gp, lambda n: asked.append(n), 0, None, None, None, 0.0, 0, 0,
                   "element", None, 0, 0, True, True, 0)
    assert asked == []
    assert_grads_close(gt, ids, dout, V, P, grad_pos=gp)
    calls = []
    real = _core.backward
    monkeypatch.setattr(_core, "backward", lambda *a: calls.append(a) or real(*a))
    tokemb.backward(ids, dout, gt, gp, accumulate=False, deterministic=True)
    assert len(calls) == 1
    assert_grads_close(gt, ids, dout, V, P, grad_pos=gp)
