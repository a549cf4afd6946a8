"""Seeded init, .npy / safetensors I/O and the token-file readers through the Python wrappers."""

import os
import struct

import numpy as np
import pytest
from helpers import path_calls

import tokemb


def test_philox_init_is_seeded_and_reproducible(rng):
    seed = int(rng.integers(0, 2**62))
    a = np.zeros((int(rng.integers(1, 100)), int(rng.integers(1, 40))), np.float32)
    b = np.zeros_like(a)
    try:
        tokemb.init_normal(a, seed, 0.0, 0.02)
    except tokemb.Unsupported as e:  # CPU-only build without cuRAND's host library
        pytest.skip(str(e))
    tokemb.init_normal(b, seed, 0.0, 0.02)
    assert a.tobytes() == b.tobytes() and a.std() > 0
    tokemb.init_normal(b, seed + 1, 0.0, 0.02)
    assert a.tobytes() != b.tobytes()
    u = np.zeros((64, 8), np.float32)
    tokemb.init_uniform(u, seed, -0.5, 0.25)
    assert u.min() >= -0.5 and u.max() <= 0.25
    tok, pos = np.zeros((50, 8), np.float32), np.zeros((10, 8), np.float32)
    tokemb.init_gpt2(tok, pos, seed=seed)
    t0 = np.zeros_like(tok)
    tokemb.init_normal(t0, seed, 0.0, 0.02, stream_id=0)
    p1 = np.zeros_like(pos)
    tokemb.init_normal(p1, seed, 0.0, 0.02, stream_id=1)
    assert tok.tobytes() == t0.tobytes() and pos.tobytes() == p1.tobytes()
    with pytest.raises(tokemb.InvalidArgument):
        tokemb.init_normal(a, seed, 0.0, -1.0)


def test_pytorch_init_matches_torch(rng):
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    V, D, P = int(rng.integers(4, 200)), int(rng.integers(4, 40)), int(rng.integers(4, 40))
    pad = int(rng.integers(0, V))
    seed = int(rng.integers(0, 2**31))
    tok, pos = np.zeros((V, D), np.float32), np.zeros((P, D), np.float32)
    tokemb.init_pytorch(tok, pos, seed=seed, padding_idx=pad)
    torch.manual_seed(seed)
    t = torch.nn.Embedding(V, D, padding_idx=pad)
    p = torch.nn.Embedding(P, D)
    np.testing.assert_allclose(tok, t.weight.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pos, p.weight.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert (tok[pad] == 0).all()
    tb = torch.zeros(V, D, dtype=torch.bfloat16)
    tokemb.init_pytorch(tb, seed=seed, padding_idx=pad)
    assert torch.equal(tb, torch.from_numpy(tok).bfloat16())


def test_npy_round_trip_and_checks(rng, tmp_path):
    a = rng.standard_normal((int(rng.integers(1, 30)), int(rng.integers(1, 30)))).astype(np.float32)
    path = tmp_path / "t.npy"
    tokemb.save_npy(path, a)
    np.testing.assert_array_equal(np.load(path), a)  # a real .npy
    np.testing.assert_array_equal(tokemb.read_npy(path), a)
    b = np.zeros_like(a)
    assert tokemb.load_npy(path, b) is b
    np.testing.assert_array_equal(b, a)
    wrong = np.full((a.shape[0] + 1, a.shape[1]), 9.0, np.float32)
    with pytest.raises(tokemb.InvalidArgument):
        tokemb.load_npy(path, wrong)
    assert (wrong == 9.0).all()
    path.write_bytes(path.read_bytes()[:-3])  # truncated
    with pytest.raises(tokemb.IoError) as ei:
        tokemb.read_npy(path)
    assert isinstance(ei.value, OSError)
    with pytest.raises(tokemb.IoError):
        tokemb.read_npy(tmp_path / "missing.npy")


def test_safetensors_and_weights(rng, tmp_path):
    V, P, D = 20, 6, 4
    tok = rng.standard_normal((V, D)).astype(np.float32)
    pos = rng.standard_normal((P, D)).astype(np.float32)
    ids = rng.integers(0, 100, (7,)).astype(np.int64)
    path = tmp_path / "w.safetensors"
    tokemb.save_safetensors(path, {"wte.weight": tok, "wpe.weight": pos, "ids": ids})
    got = tokemb.read_safetensors(path)
    assert list(got) == ["wte.weight", "wpe.weight", "ids"]
    np.testing.assert_array_equal(got["wte.weight"], tok)
    np.testing.assert_array_equal(got["ids"], ids)

    t2, p2 = np.zeros_like(tok), np.zeros_like(pos)
    tokemb.load_weights(path, t2, p2)
    np.testing.assert_array_equal(t2, tok)
    np.testing.assert_array_equal(p2, pos)
    out = tmp_path / "tables.safetensors"
    tokemb.save_weights(out, tok, pos)
    assert set(tokemb.read_safetensors(out)) == {"wte.weight", "wpe.weight"}
    # Mismatched shape: neither table is written.
    t3 = np.full((V, D), 5.0, np.float32)
    p3 = np.full((P + 1, D), 5.0, np.float32)
    with pytest.raises(tokemb.InvalidArgument):
        tokemb.load_weights(path, t3, p3)
    assert (t3 == 5.0).all() and (p3 == 5.0).all()
    with pytest.raises(tokemb.InvalidArgument, match="nope"):
        tokemb.load_weights(path, t3, names=("nope", "wpe.weight"))


def test_safetensors_bf16_through_torch(rng, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    t = torch.randn(5, 3).bfloat16()
    path = tmp_path / "b.safetensors"
    tokemb.save_safetensors(path, {"x": t})
    back = tokemb.read_safetensors(path, framework="torch")["x"]
    assert back.dtype == torch.bfloat16 and torch.equal(back, t)
    # f32 from a file loads into a bf16 table, rounded to nearest even.
    f = torch.randn(4, 6)
    tokemb.save_weights(path, f)
    dst = torch.zeros(4, 6, dtype=torch.bfloat16)
    tokemb.load_weights(path, dst)
    assert torch.equal(dst, f.bfloat16())


def test_token_files(rng, tmp_path):
    n = int(rng.integers(20, 200))
    ids = rng.integers(0, 50257, n).astype(np.uint16)
    raw = tmp_path / "train.bin"
    raw.write_bytes(ids.tobytes())
    f = tokemb.read_token_file(raw)
    assert (f.format, f.type, f.total_tokens) == ("bin", "uint16", n)
    np.testing.assert_array_equal(f.ids, ids.astype(np.int64))
    shard = struct.pack("<256i", 20240520, 1, n, *([0] * 253)) + ids.tobytes()
    g = tokemb.parse_token_file(shard, max_tokens=5)
    assert (g.format, g.total_tokens) == ("llmc", n) and list(g.ids) == list(ids[:5])
    npy = tmp_path / "ids.npy"
    np.save(npy, ids.astype(np.int32))
    np.testing.assert_array_equal(tokemb.read_token_file(npy).ids, ids)
    with pytest.raises(tokemb.IoError):
        tokemb.parse_token_file(b"\x00" * 3, name="odd.bin")

    T, S = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    w = tokemb.sliding_windows(f.ids, T, S)
    starts = list(range(0, n - T, S))  # the book's data loader
    assert w.shape == (len(starts), T)
    for k, i in enumerate(starts):
        np.testing.assert_array_equal(w[k], f.ids[i:i + T])
    np.testing.assert_array_equal(tokemb.cut_windows(f.ids, T, S, first=1, count=1), w[1:2])
    with pytest.raises(tokemb.InvalidArgument):
        tokemb.cut_windows(f.ids, T, S, first=len(starts), count=1)
    with pytest.raises(tokemb.IndexOutOfRange):
        tokemb.check_token_ids(f.ids, int(f.ids.max()), "train.bin")
    tokemb.check_token_ids(f.ids, 50257)


def test_weights_with_equal_names_raise(rng, tmp_path):
    tok = rng.standard_normal((6, 4)).astype(np.float32)
    pos = rng.standard_normal((3, 4)).astype(np.float32)
    path = tmp_path / "w.safetensors"
    # One name for both tables used to keep only the position table, silently.
    with pytest.raises(tokemb.InvalidArgument, match="'x' is used twice"):
        tokemb.save_weights(path, tok, pos, names=("x", "x"))
    assert not path.exists()
    tokemb.save_weights(path, tok, pos, names=("x", "y"))
    t2, p2 = np.zeros_like(tok), np.zeros_like(pos)
    with pytest.raises(tokemb.InvalidArgument, match="names"):
        tokemb.load_weights(path, t2, p2, names=("x", "x"))
    assert (t2 == 0).all() and (p2 == 0).all()
    tokemb.load_weights(path, t2, p2, names=("x", "y"))
    np.testing.assert_array_equal(t2, tok)
    np.testing.assert_array_equal(p2, pos)


def test_paths_are_checked_not_stringified(rng, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = rng.standard_normal((3, 2)).astype(np.float32)
    for fn, call in path_calls(a):
        for bad in (None, 3, 1.5):
            with pytest.raises(tokemb.InvalidArgument, match=f"tokemb.{fn}: path"):
                call(bad)
    assert os.listdir(tmp_path) == []  # no file named "None" (or "3")
    # bytes paths are file names, not "b'...'"
    tokemb.save_npy(os.fsencode(tmp_path / "b.npy"), a)
    assert os.listdir(tmp_path) == ["b.npy"]
    np.testing.assert_array_equal(tokemb.read_npy(b"b.npy"), a)
    tokemb.save_weights(b"w.safetensors", a)
    assert list(tokemb.read_safetensors(tmp_path / "w.safetensors")) == ["wte.weight"]


def test_integer_arguments_are_not_truncated(rng, tmp_path):
    n = 20
    raw = tmp_path / "t.bin"
    raw.write_bytes(np.arange(n, dtype=np.uint16).tobytes())
    for bad in (1.7, "3"):
        with pytest.raises(tokemb.InvalidArgument, match="max_tokens"):
            tokemb.read_token_file(raw, max_tokens=bad)
        with pytest.raises(tokemb.InvalidArgument, match="stride"):
            tokemb.window_count(n, 4, bad)
        with pytest.raises(tokemb.InvalidArgument, match="max_length"):
            tokemb.sliding_windows(np.arange(n), bad)
        with pytest.raises(tokemb.InvalidArgument, match="vocab_size"):
            tokemb.check_token_ids(np.arange(n), bad)
    assert tokemb.read_token_file(raw, max_tokens=np.int64(3)).ids.tolist() == [0, 1, 2]
    t = np.zeros((8, 4), np.float32)
    for kw, name in (({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
                     ({"seed": 1, "stream_id": -2}, "stream_id"),
                     ({"seed": 1, "stream_id": 0.5}, "stream_id")):
        with pytest.raises(tokemb.InvalidArgument, match=name):
            tokemb.init_normal(t, **kw)
        with pytest.raises(tokemb.InvalidArgument, match=name):
            tokemb.init_uniform(t, **kw)
    for bad, name in ((-1, "seed"), (2.5, "seed")):
        with pytest.raises(tokemb.InvalidArgument, match=name):
            tokemb.init_pytorch(np.zeros((8, 4), np.float32), seed=bad)
    with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
        tokemb.init_pytorch(np.zeros((8, 4), np.float32), seed=1, padding_idx=1.5)
