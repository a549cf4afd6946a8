"""Vocabulary-parallel shards through the functional API (vocab_start, vocab_size): the ranks'
forwards sum to the unsharded forward, their gradients are the unsharded gradient's rows, ids of
other shards are no error, and ids outside the vocabulary are (NumPy, CPU backend)."""

import numpy as np
import pytest

import tokemb
from conftest import ref_backward


def split(rows, world):
    base, extra = divmod(rows, world)
    return [(r * base + min(r, extra), base + (r < extra)) for r in range(world)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_sum_to_the_unsharded_op(rng, world):
    V = int(rng.integers(world, 80))
    rows = V + int(rng.integers(0, 5))  # a padded table: rows past V are never touched
    if split(rows, world)[-1][0] >= V:  # every shard must hold a valid id (tokemb's rule)
        rows = V
    B, T, D = int(rng.integers(1, 4)), int(rng.integers(1, 20)), int(rng.integers(1, 40))
    P = T
    tok = rng.standard_normal((rows, D)).astype(np.float32)
    pos = rng.standard_normal((P, D)).astype(np.float32)
    ids = rng.integers(0, V, (B, T))
    pad = int(rng.integers(0, V))
    want = tokemb.forward(ids, tok[:V], pos, padding_idx=pad)
    dout = rng.standard_normal((B, T, D)).astype(np.float32)
    total = np.zeros_like(want)
    for r, (start, n) in enumerate(split(rows, world)):
        shard = np.ascontiguousarray(tok[start:start + n])
        # Positions from rank 0 only; the sum over ranks is then the unsharded output.
        out = tokemb.forward(ids, shard, pos if r == 0 else None, padding_idx=pad,
                             vocab_start=start, vocab_size=V)
        total += out
        gt = np.full((n, D), 9, np.float32)
        tokemb.backward(ids, dout, gt, None, padding_idx=pad, vocab_start=start, vocab_size=V,
                        accumulate=False)
        ref, _ = ref_backward(ids, dout, rows, 0, padding_idx=pad)
        valid = max(0, min(n, V - start))  # this shard's rows that hold valid ids
        np.testing.assert_allclose(gt[:valid], ref[start:start + valid], rtol=1e-5, atol=1e-6)
        assert (gt[valid:] == 9).all(), "a padded row past vocab_size was written"
    np.testing.assert_array_equal(total, want)  # f32: bitwise


def test_vocab_size_defaults_to_start_plus_rows_and_bad_ids_raise(rng):
    V, D, T = 12, 4, 5
    tok = rng.standard_normal((V, D)).astype(np.float32)
    ids = rng.integers(0, V, (1, T))
    start, n = 4, 4
    shard = np.ascontiguousarray(tok[start:start + n])
    # vocab_size None: the vocabulary ends at the shard's end, so ids >= 8 are out of range.
    ids[0, 0] = start + n
    with pytest.raises(tokemb.IndexOutOfRange) as e:
        tokemb.forward(ids, shard, vocab_start=start)
    assert e.value.kind == "token" and e.value.limit == start + n
    out = tokemb.forward(ids, shard, vocab_start=start, vocab_size=V)  # a valid id elsewhere
    assert (out[0, 0] == 0).all()
    ids[0, 1] = V
    with pytest.raises(tokemb.IndexOutOfRange):
        tokemb.forward(ids, shard, vocab_start=start, vocab_size=V)
    with pytest.raises(tokemb.InvalidArgument, match="vocab_size"):
        tokemb.forward(ids, shard, vocab_start=start, vocab_size=0)
    with pytest.raises(tokemb.InvalidArgument, match="vocab_start"):
        tokemb.forward(ids, shard, vocab_start=V, vocab_size=V)
