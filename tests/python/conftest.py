"""Shared helpers for tokemb's Python tests. Every test draws fresh random inputs (the seed is
printed on failure through the test id's parameters or pytest's output)."""

import os

import numpy as np
import pytest

import tokemb


@pytest.fixture
def rng(request):
    # A fresh seed per test run; TOKEMB_TEST_SEED reproduces a failure.
    seed = int(os.environ.get("TOKEMB_TEST_SEED", np.random.SeedSequence().entropy % (1 << 32)))
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed} (rerun with TOKEMB_TEST_SEED={seed})")
    return np.random.default_rng(seed)


def ref_forward(ids, tok, pos=None, offset=0, position_ids=None):
    """The op in float32, rounded once to the table dtype (like the library)."""
    out = tok.astype(np.float32)[ids]
    if pos is not None:
        T = ids.shape[1]
        p = pos.astype(np.float32)
        out = out + (p[position_ids] if position_ids is not None else p[offset:offset + T][None])
    return out.astype(tok.dtype)


def ref_backward(ids, dout, V, P, offset=0, position_ids=None, padding_idx=None):
    """Gradients in float64 (exact enough to bound the library's f32 sums)."""
    D = dout.shape[-1]
    d = dout.astype(np.float64).reshape(-1, D)
    gt = np.zeros((V, D))
    keep = np.ones(ids.size, bool) if padding_idx is None else ids.reshape(-1) != padding_idx
    np.add.at(gt, ids.reshape(-1)[keep], d[keep])
    gp = np.zeros((P, D))
    B, T = ids.shape
    pos = position_ids if position_ids is not None else np.broadcast_to(
        offset + np.arange(T), (B, T))
    if P:
        np.add.at(gp, pos.reshape(-1), d)
    return gt, gp


def assert_grads_close(got, ids, dout, V, P, grad_pos=None, **kw):
    """tests/test_gpu_ops.cpp's bound, per element: |got - ref| <= 1e-5 * sum|dout| + 1e-6, the
    sum over the dout rows that reach that element (f32 sums in any order stay inside it)."""
    gt, gp = ref_backward(ids, dout, V, P, **kw)
    at, ap = ref_backward(ids, np.abs(dout.astype(np.float64)), V, P, **kw)
    err = np.abs(np.asarray(got, np.float64) - gt)
    assert (err <= 1e-5 * at + 1e-6).all(), f"token grad off by up to {err.max()}"
    if grad_pos is not None:
        err = np.abs(np.asarray(grad_pos, np.float64) - gp)
        assert (err <= 1e-5 * ap + 1e-6).all(), f"position grad off by up to {err.max()}"


def gpu_or_skip():
    if not tokemb.cuda_available():
        pytest.skip("no CUDA device is present (or tokemb was built without its CUDA backend)")
