"""Issue 20: paths with NUL (item 1) and errors that pointed the wrong way (item 14)."""
import os

import numpy as np
import pytest

import tokemb
from helpers import path_calls



def test_paths_with_nul_are_refused_before_touching_anything(tmp_path, monkeypatch):
    """Item 1: tokemb.save_npy("victim\\0.npy", a) replaced the file "victim"."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    for fn, call in path_calls(a):
        for bad in ("victim\0.npy", b"victim\0.npy", tmp_path / "victim\0.npy"):
            with pytest.raises(tokemb.InvalidArgument, match=f"tokemb.{fn}: path .*NUL"):
                call(bad)
            assert victim.read_bytes() == b"precious"
            assert os.listdir(tmp_path) == ["victim"]


def test_the_library_refuses_nul_too(tmp_path):
    """Item 1, one layer down: the extension's path arguments reach C++ with the NUL intact,
    and the library refuses them as well."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    with pytest.raises(tokemb.InvalidArgument, match="NUL"):
        tokemb._core.save_npy(str(victim) + "\0.npy", np.zeros(2, np.float32), 0)
    with pytest.raises(tokemb.InvalidArgument, match="NUL"):
        tokemb._core.read_npy(str(victim) + "\0.npy")
    assert victim.read_bytes() == b"precious"


def test_ids_are_validated_before_the_output_is_allocated():
    """Item 14: a huge zero-stride (broadcast) or float ids array gave NumPy's "Unable to
    allocate 149 GiB" instead of tokemb's layout or dtype error."""
    table = np.zeros((10, 1 << 12), np.float32)
    # (A huge broadcast of integer ids is a valid layout since issue 21: its output is simply
    # that large.) A strided table is refused before the output is sized:
    huge = np.broadcast_to(np.int64(1), (1 << 14, 1 << 14))  # 2^28 rows: 4 TiB of output
    with pytest.raises(tokemb.InvalidArgument,
                       match="tokemb.forward: token_table of shape .* must be contiguous"):
        tokemb.forward(huge, np.asfortranarray(table))
    huge_f = np.broadcast_to(np.float32(1), (1 << 14, 1 << 14))
    with pytest.raises(tokemb.InvalidArgument, match="tokemb.forward: ids"):
        tokemb.forward(huge_f, table)
    floats = np.zeros((1 << 10, 1 << 10), np.float32)  # 2^20 rows: 16 GiB of output
    with pytest.raises(tokemb.InvalidArgument,
                       match="tokemb.forward: ids has dtype f32, expected i32 or i64"):
        tokemb.forward(floats, table)
    with pytest.raises(tokemb.InvalidArgument, match="tokemb.forward: token_table has dtype"):
        tokemb.forward(np.zeros((1 << 10, 1 << 10), np.int64),
                       np.zeros((10, 1 << 12), np.int32))


def test_parse_token_file_wants_bytes():
    """Item 14: parse_token_file("abc") raised TypeError (from bytes("abc"))."""
    for bad in ("abc", 3, None, 1.5):
        with pytest.raises(tokemb.InvalidArgument, match="tokemb.parse_token_file: data"):
            tokemb.parse_token_file(bad, format="bin")
    raw = np.arange(5, dtype=np.uint16).tobytes()
    for good in (raw, bytearray(raw), memoryview(raw)):
        assert tokemb.parse_token_file(good, format="bin").ids.tolist() == [0, 1, 2, 3, 4]


def test_read_token_file_docstring_is_truthful():
    """Item 14: the reader uses pread; its docstring said "memory-mapped"."""
    assert "memory-mapped" not in tokemb.read_token_file.__doc__.replace("never memory-mapped", "")


def test_meta_tensors_give_a_tokemb_error():
    """Item 14: a meta-device tensor gave torch's DLPack error."""
    torch = pytest.importorskip("torch")
    from tokemb.torch import token_position_embedding
    ids = torch.zeros(2, 3, dtype=torch.int64)
    w = torch.empty(10, 4, device="meta")
    with pytest.raises(tokemb.InvalidArgument, match="token_table is on device 'meta'"):
        tokemb.forward(ids, w)
    with pytest.raises(tokemb.InvalidArgument, match="ids is on device 'meta'"):
        tokemb.forward(ids.to("meta"), torch.zeros(10, 4))
    with pytest.raises(tokemb.Error, match="meta"):
        token_position_embedding(ids, w, torch.empty(3, 4, device="meta"))


def test_from_state_dict_refuses_integer_tables():
    """Item 14: an integer table raised torch's RuntimeError; it is tokemb's InvalidArgument
    naming the state_dict key."""
    torch = pytest.importorskip("torch")
    from tokemb.torch import TokenPositionEmbedding
    sd = {"tok_emb.weight": torch.zeros(10, 4, dtype=torch.int64),
          "pos_emb.weight": torch.zeros(3, 4)}
    with pytest.raises(tokemb.InvalidArgument,
                       match=r"state_dict\['tok_emb.weight'\] has dtype int64"):
        TokenPositionEmbedding.from_state_dict(sd)
    sd = {"tok_emb.weight": torch.zeros(10, 4), "pos_emb.weight": torch.zeros(3, 4,
                                                                             dtype=torch.int32)}
    with pytest.raises(tokemb.InvalidArgument,
                       match=r"state_dict\['pos_emb.weight'\] has dtype int32"):
        TokenPositionEmbedding.from_state_dict(sd)


# ---- found by the hostile retest after issue 20's fixes ----------------------------------------

def _small():
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    dout = np.ones((1, 3, 4), dtype=np.float32)
    return ids, dout, np.ones((10, 4), dtype=np.float32)


@pytest.mark.parametrize("value", ["False", "no", None, 0, 1.0, np.int64(0)])
def test_flags_must_be_bools(value):
    """accumulate='False' used to be bool('False') == True: it accumulated into the gradients
    the caller asked to overwrite."""
    ids, dout, g = _small()
    before = g.copy()
    for name in ("accumulate", "deterministic"):
        with pytest.raises(tokemb.InvalidArgument, match=f"tokemb.backward: {name} must be True "
                                                         "or False"):
            tokemb.backward(ids, dout, g, **{name: value})
        np.testing.assert_array_equal(g, before)  # refused before writing
    tokemb.backward(ids, dout, g, accumulate=np.bool_(False))  # NumPy's bool is a bool
    np.testing.assert_array_equal(g[1], np.ones(4, np.float32))


def test_integer_arguments_refuse_bools():
    """padding_idx=True was taken as row 1 (dropout_p=True was already refused)."""
    ids, _, table = _small()
    with pytest.raises(tokemb.InvalidArgument, match="padding_idx must be an int or None; got "
                                                     "bool"):
        tokemb.forward(ids, table, padding_idx=True)
    with pytest.raises(tokemb.InvalidArgument, match="position_offset must be an int; got bool"):
        tokemb.forward(ids, table, position_offset=False)


@pytest.mark.parametrize("stream", ["x", object(), 1.5, True])
def test_stream_is_checked_on_the_cpu_too(stream):
    ids, _, table = _small()
    with pytest.raises(tokemb.InvalidArgument, match="stream must be an int"):
        tokemb.forward(ids, table, stream=stream)


@pytest.mark.parametrize("ids", [np.array([1.5, 2.0]), np.zeros(3, np.float32), "abc",
                                 ["a", "b"], [object()]])
def test_token_id_helpers_want_integers(ids):
    """check_token_ids accepted 1.5 (truncated to 1); sliding_windows('abc') raised ValueError."""
    with pytest.raises(tokemb.InvalidArgument, match="check_token_ids: ids must hold integer"):
        tokemb.check_token_ids(ids, 10)
    with pytest.raises(tokemb.InvalidArgument, match="cut_windows: ids must hold integer"):
        tokemb.sliding_windows(ids, 4, 4)


@pytest.mark.parametrize("args, match", [
    ((-1, 4, 8), "vocab_size is -1; valid range \\[1, "),
    ((10, 0, 8), "dim is 0; valid range \\[1, "),
    ((10, 4, -2), "context_length is -2; valid range \\[0, "),
    ((10.5, 4, 8), "vocab_size must be an int; got float"),
    ((10, "4", 8), "dim must be an int; got str"),
])
def test_module_sizes_are_checked_by_tokemb(args, match):
    """Negative sizes were torch's RuntimeError, a float its TypeError, dim 0 failed only at the
    first forward."""
    pytest.importorskip("torch")
    from tokemb.torch import TokenPositionEmbedding
    with pytest.raises(tokemb.InvalidArgument, match="TokenPositionEmbedding: " + match):
        TokenPositionEmbedding(*args)
