"""tokemb: the fused token + positional embedding of GPT-style models, from Python.

Functional API on any DLPack array (NumPy, PyTorch, CuPy, JAX) -- CPU arrays run on tokemb's CPU
backend, CUDA arrays on its kernels::

    out = tokemb.forward(ids, token_table, pos_table)          # token_table[ids] + pos_table[t]
    tokemb.backward(ids, dout, grad_token, grad_pos)            # accumulates the gradients

and a PyTorch module with autograd in ``tokemb.torch`` (``TokenPositionEmbedding``).
Errors are ``tokemb.Error`` subclasses carrying the C++ library's messages.
"""

import collections
import numbers
import operator
import os

from . import _core
from ._arrays import Call, device_of, framework
from ._errors import (CudaError, Error, IndexOutOfRange, InvalidArgument, IoError, OutOfMemory,
                      Unsupported)

__version__ = _core.version

__all__ = [
    "forward", "backward", "check_errors", "cuda_available", "cuda_device_count",
    "init_normal", "init_uniform", "init_gpt2", "init_pytorch",
    "save_npy", "load_npy", "read_npy", "save_safetensors", "read_safetensors",
    "save_weights", "load_weights",
    "TokenFile", "read_token_file", "parse_token_file", "window_count", "tokens_for_windows",
    "cut_windows", "sliding_windows", "check_token_ids",
    "Error", "InvalidArgument", "IndexOutOfRange", "CudaError", "OutOfMemory", "Unsupported",
    "IoError",
]


def cuda_available():
    """True when this build has the CUDA backend and a CUDA device is visible."""
    return bool(_core.with_cuda) and _core.cuda_device_count() > 0


def cuda_device_count():
    """CUDA devices visible to tokemb (0 without a GPU, a driver or the CUDA backend)."""
    return _core.cuda_device_count()


_I64 = 1 << 63


def _index(x, fn, name, *, optional=True):
    """An integer argument for _core (int64): anything with __index__ (int, NumPy integers, ...)
    -- never a float, which int() would truncate, nor a string. None passes through when
    ``optional``."""
    if x is None and optional:
        return None
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        # operator.index(True) is 1: padding_idx=True would silently mean row 1.
        raise InvalidArgument(f"{fn}: {name} must be an int{' or None' if optional else ''}; "
                              f"got {type(x).__name__}")
    try:
        v = operator.index(x)
    except TypeError:
        raise InvalidArgument(f"{fn}: {name} must be an int{' or None' if optional else ''}; "
                              f"got {type(x).__name__}") from None
    if not -_I64 <= v < _I64:
        raise InvalidArgument(f"{fn}: {name} is {v}; valid range [-2**63, 2**63)")
    return v


def _path(p, fn, name="path"):
    """A file path argument (str, bytes or os.PathLike) as the str _core takes."""
    try:
        s = os.fsdecode(os.fspath(p))
    except TypeError:
        raise InvalidArgument(f"{fn}: {name} must be a str, bytes or os.PathLike; got "
                              f"{type(p).__name__}") from None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{fn}: {name} {s!r} is not valid UTF-8") from None
    if "\0" in s:
        # A C path stops at the NUL: "victim\0.npy" would be the file "victim".
        raise InvalidArgument(f"{fn}: {name} {s!r} holds a NUL byte at index {s.index(chr(0))}; "
                              "a path cannot contain NUL")
    return s


def _int(x, fn, name):
    """A required integer argument (see _index)."""
    return _index(x, fn, name, optional=False)


def _flag(x, fn, name):
    """A bool argument: True/False (or NumPy's bool_) only. bool('False') is True: a string, None
    or a number for ``accumulate`` would silently pick the other mode."""
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        return bool(x)
    raise InvalidArgument(f"{fn}: {name} must be True or False; got {type(x).__name__} {x!r}")


def _shape(x):
    return tuple(int(s) for s in x.shape)


# ---- the ops -----------------------------------------------------------------------------------

_U64 = 1 << 64


def _u64(x, fn, name):
    try:
        v = operator.index(x)
    except TypeError:
        raise InvalidArgument(f"{fn}: {name} must be an int; got {type(x).__name__}") from None
    if not 0 <= v < _U64:
        raise InvalidArgument(f"{fn}: {name} is {v}; valid range [0, 2**64)")
    return v


def _probability(x, fn, name="dropout_p"):
    """A probability argument as the float (a double) _core takes: a real number (int, float,
    NumPy scalars) -- never a string such as "0.5" nor a bool. Its range, [0, 1] as given, is
    checked by the library (a Python float reaches it exactly: 1 + 1e-9 stays outside)."""
    if isinstance(x, (bool, str, bytes)) or not isinstance(x, numbers.Real) or \
            type(x).__name__ == "bool_":
        raise InvalidArgument(f"{fn}: {name} must be a real number in [0, 1]; got "
                              f"{type(x).__name__} {x!r}")
    return float(x)


def _dropout(fn, dropout_p, seed, offset, dropout_mode):
    """(p, seed, offset, mode) checked for _core (p's range is checked by the library)."""
    p = _probability(dropout_p, fn)
    if dropout_mode not in ("element", "token"):
        raise InvalidArgument(f"{fn}: dropout_mode is {dropout_mode!r}; expected 'element' or "
                              "'token'")
    return p, _u64(seed, fn, "seed"), _u64(offset, fn, "offset"), dropout_mode


def _vocab(fn, vocab_start, vocab_size):
    """vocab_start and vocab_size for _core (0 there means vocab_start + the table's rows)."""
    start = _index(vocab_start, fn, "vocab_start")
    size = _index(vocab_size, fn, "vocab_size")
    if size is not None and size <= 0:
        raise InvalidArgument(f"{fn}: vocab_size is {size}; it must be positive (or None: "
                              "vocab_start + the table's rows)")
    return start, 0 if size is None else size


def forward(ids, token_table, pos_table=None, *, out=None, position_offset=0, position_ids=None,
            cu_seqlens=None, padding_idx=None, dropout_p=0.0, seed=0, offset=0,
            dropout_mode="element", seed_offset=None, vocab_start=0, vocab_size=None,
            stream=None):
    """``out[b, t] = token_table[ids[b, t]] + pos_table[position_offset + t]`` (or
    ``pos_table[position_ids[b, t]]``, or positions restarting at each packed sequence of
    ``cu_seqlens``; no positional term when ``pos_table`` is None), then dropout.

    ids: [..., T] int32/int64: any number of leading dimensions ([T], [B, T], [A, B, T], ...),
    positions running along the last, and any strides (slices, transposes, broadcasts are read
    in place); position_ids has the ids' shape, any strides. An empty batch gives an empty
    output. token_table [V, D] and pos_table [P, D]: float32, bfloat16, float16 or float64, one
    dtype, row-major. Returns ``out`` ([..., T, D], the tables' dtype), allocated by
    token_table's framework on its device when not given. CUDA arrays run on ``stream`` (an int
    cudaStream_t; None: the framework's current stream). An id outside [0, V) raises
    IndexOutOfRange before anything is written on the CPU; on a CUDA device its row is written
    as zeros and the error is raised by :func:`check_errors`.

    cu_seqlens: int32 [S + 1], FlashAttention's packed sequences over the B*T flattened rows
    (exclusive with position_ids; a malformed one raises IndexOutOfRange, kind 'sequence').
    dropout_p: fused dropout (each element kept with probability 1 - p and scaled by 1/(1 - p));
    the mask is a function of (``seed``, ``offset``, the element's flat index) only, so
    :func:`backward` given the same values applies the same mask. ``dropout_mode='token'`` drops
    whole token vectors. ``seed_offset``: an int64 array of 2 {seed, offset} on the call's
    device, read when the call runs instead of ``seed`` and ``offset`` (a captured CUDA graph
    then draws a new mask per replay when that memory changes). vocab_start / vocab_size:
    token_table holds rows [vocab_start, vocab_start + V) of a vocabulary of vocab_size ids
    (None: vocab_start + V); other valid ids give no token term, without an error.
    """
    fn = "tokemb.forward"
    c = Call(fn, token_table, "token_table", stream)
    device_of(ids, fn, "ids")  # an array, before its shape sizes the output
    shape = _shape(token_table)
    if len(shape) != 2:
        raise InvalidArgument(f"{fn}: token_table has shape {list(shape)}; expected "
                              "[vocab_size, dim]")
    p, s, o, mode = _dropout(fn, dropout_p, seed, offset, dropout_mode)
    vstart, vsize = _vocab(fn, vocab_start, vocab_size)
    allocated = out is None
    if allocated:
        # Validate first, allocate second: the ids' and the table's dtype and layout are checked
        # before their shapes size a new array (a huge broadcast of float ids must give this
        # error, not the framework's "unable to allocate").
        _core.check_array(c.arg(ids, "ids"), fn, "ids", True)
        _core.check_array(c.arg(token_table, "token_table"), fn, "token_table", False)
        rank = len(_shape(ids))
        if not 1 <= rank <= 7:
            raise InvalidArgument(f"{fn}: ids has rank {rank}; expected 1 to 7 dimensions "
                                  "[..., T] (the output [..., T, D] has at most 8)")
        out = c.empty(token_table, _shape(ids) + (shape[1],))
    _core.forward(c.arg(ids, "ids"), c.arg(token_table, "token_table"),
                  c.arg(pos_table, "pos_table"), c.arg(out, "out", write=True),
                  _index(position_offset, fn, "position_offset", optional=False),
                  c.arg(position_ids, "position_ids"),
                  c.arg(cu_seqlens, "cu_seqlens"), _index(padding_idx, fn, "padding_idx"), p, s,
                  o, mode, c.arg(seed_offset, "seed_offset"), vstart, vsize, c.stream)
    if allocated and framework(token_table) in ("jax", "other"):
        return c.wrap(token_table, out)
    return out


def backward(ids, dout, grad_token, grad_pos=None, *, position_offset=0, position_ids=None,
             cu_seqlens=None, padding_idx=None, dropout_p=0.0, seed=0, offset=0,
             dropout_mode="element", seed_offset=None, vocab_start=0, vocab_size=None,
             accumulate=True, deterministic=False, stream=None):
    """Gradients of :func:`forward`, written into ``grad_token`` [V, D] and ``grad_pos`` [P, D]
    (may be None), row-major, of one dtype: float32 (summed in f32), or dout's dtype (bf16/f16:
    summed in f32 and each element rounded once -- no f32 copy of a 16-bit table's gradient;
    float64 dout needs float64 gradients). dout [..., T, D] may have any strides (a stride-0
    broadcast included):

        grad_token[ids[b, t]] += mask(dout)[b, t]   (not for padding_idx)
        grad_pos[pos(b, t)]   += mask(dout)[b, t]

    Pass the same positions, dropout (``dropout_p``, ``seed``, ``offset``, ``dropout_mode`` or
    ``seed_offset``) and shard (``vocab_start``, ``vocab_size``) as the forward: the dropout
    mask is regenerated, not stored. ``accumulate=False`` overwrites both instead (as zeroing
    them first would, without the separate pass). ``deterministic=True`` gives bitwise-identical
    results run after run. The workspace some modes need is allocated internally (PyTorch's or
    CuPy's allocator, else one cached buffer per device and stream). Returns None.
    """
    fn = "tokemb.backward"
    c = Call(fn, grad_token, "grad_token", stream)
    p, s, o, mode = _dropout(fn, dropout_p, seed, offset, dropout_mode)
    vstart, vsize = _vocab(fn, vocab_start, vocab_size)
    pad = _index(padding_idx, fn, "padding_idx")
    po = _index(position_offset, fn, "position_offset", optional=False)

    # The extension sizes the workspace from the arguments it converts for the call and asks
    # the framework's allocator (c.workspace) only when one is needed: one conversion, one check.
    _core.backward(c.arg(ids, "ids"), c.arg(dout, "dout"),
                   c.arg(grad_token, "grad_token", write=True),
                   c.arg(grad_pos, "grad_pos", write=True), c.workspace if c.cuda else None,
                   po, c.arg(position_ids, "position_ids"), c.arg(cu_seqlens, "cu_seqlens"),
                   pad, p, s, o, mode, c.arg(seed_offset, "seed_offset"), vstart, vsize,
                   _flag(accumulate, fn, "accumulate"), _flag(deterministic, fn, "deterministic"),
                   c.stream)


def check_errors(device=0, *, stream=None, clear=True):
    """Raises IndexOutOfRange for the first out-of-range token id or position that a CUDA call
    on ``device`` recorded since the last check (CUDA kernels cannot raise; they zero/skip the
    row and record it). ``device``: a device index or an array on that device. Synchronises
    ``stream`` (None: the current stream of the array's framework, else of PyTorch if it is
    imported, else the legacy default stream). A no-op for CPU arrays, whose calls raise at once.
    """
    if hasattr(device, "__dlpack_device__"):
        c = Call("tokemb.check_errors", device, "device", stream)
        if not c.cuda:
            return
        index, s = c.dev[1], c.stream
    else:
        index = _index(getattr(device, "index", device) or 0, "tokemb.check_errors", "device",
                       optional=False)
        s = stream
        if s is None:
            import sys
            torch = sys.modules.get("torch")
            s = 0
            if torch is not None and _core.with_cuda and torch.cuda.is_available():
                s = int(torch.cuda.current_stream(index).cuda_stream)
    _core.check_errors(index, int(s), bool(clear))


# ---- seeded init -------------------------------------------------------------------------------

def _stream_for(fn, x, name, stream):
    c = Call(fn, x, name, stream)
    return c, c.stream


def init_normal(table, seed, mean=0.0, std=1.0, *, stream_id=0, stream=None):
    """Fills ``table`` with N(mean, std) from Philox stream ``stream_id`` of ``seed`` (cuRAND's
    Philox4x32-10: the same seed gives the same table on CPU and GPU, run after run)."""
    fn = "tokemb.init_normal"
    c, s = _stream_for(fn, table, "table", stream)
    _core.init_table(c.arg(table, "table", write=True), _u64(seed, fn, "seed"),
                     _u64(stream_id, fn, "stream_id"), "normal",
                     float(mean), float(std), s)
    return table


def init_uniform(table, seed, low=0.0, high=1.0, *, stream_id=0, stream=None):
    """Fills ``table`` with U[low, high] from Philox stream ``stream_id`` of ``seed``."""
    fn = "tokemb.init_uniform"
    c, s = _stream_for(fn, table, "table", stream)
    _core.init_table(c.arg(table, "table", write=True), _u64(seed, fn, "seed"),
                     _u64(stream_id, fn, "stream_id"), "uniform",
                     float(low), float(high), s)
    return table


def init_gpt2(token_table, pos_table=None, *, seed, stream=None):
    """GPT-2's embedding init, N(0, 0.02): token table from Philox stream 0, position table
    from stream 1 (what the C++ ``init_module(emb, seed, InitSpec::gpt2())`` gives)."""
    init_normal(token_table, seed, 0.0, 0.02, stream_id=0, stream=stream)
    if pos_table is not None:
        init_normal(pos_table, seed, 0.0, 0.02, stream_id=1, stream=stream)


def init_pytorch(token_table, pos_table=None, *, seed, padding_idx=None, stream=None):
    """What ``torch.manual_seed(seed); nn.Embedding(V, D, padding_idx=p); nn.Embedding(P, D)``
    draws on the CPU (to ~1e-6 relative), without PyTorch: one generator, the token table first.
    Tables need at least 16 elements."""
    fn = "tokemb.init_pytorch"
    c, s = _stream_for(fn, token_table, "token_table", stream)
    tables = [c.arg(token_table, "token_table", write=True)]
    if pos_table is not None:
        tables.append(c.arg(pos_table, "pos_table", write=True))
    _core.init_pytorch(tables, _u64(seed, fn, "seed"), _index(padding_idx, fn, "padding_idx"), s)


# ---- files -------------------------------------------------------------------------------------

def _host_array(arr, dtype, framework_name):
    """A reader's NumPy array in the requested framework; bf16 arrives as uint16 bits."""
    if framework_name == "torch":
        import torch
        if dtype == "bf16":  # older torch has no uint16: go through int16 bits
            import numpy as np
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(arr)
    if framework_name != "numpy":
        raise InvalidArgument(f"framework is {framework_name!r}; expected 'numpy' or 'torch'")
    if dtype == "bf16":
        try:
            import ml_dtypes
        except ImportError:
            raise Unsupported("a bfloat16 tensor needs ml_dtypes for NumPy "
                              "(pip install ml_dtypes), or framework='torch'") from None
        return arr.view(ml_dtypes.bfloat16)
    return arr


def save_npy(path, array, *, stream=None):
    """Writes ``array`` (CPU or CUDA) as .npy; bfloat16 is widened to float32 (NumPy has no
    bfloat16). Written into an unnamed (or temporary) file in ``path``'s directory, flushed to
    disk and renamed into place only when complete."""
    path = _path(path, "tokemb.save_npy")
    c, s = _stream_for("tokemb.save_npy", array, "tensor", stream)
    _core.save_npy(path, c.arg(array, "tensor"), s)


def load_npy(path, out, *, stream=None):
    """Reads a .npy into ``out`` (same shape; same dtype, or float32 into bf16/f16). ``out`` is
    untouched on any error. Returns ``out``."""
    path = _path(path, "tokemb.load_npy")
    c, s = _stream_for("tokemb.load_npy", out, "out", stream)
    _core.load_npy(path, c.arg(out, "out", write=True), s)
    return out


def read_npy(path, *, framework="numpy"):
    """Reads a .npy file (float32/float16/int32/int64) into a new host array."""
    arr, dt = _core.read_npy(_path(path, "tokemb.read_npy"))
    return _host_array(arr, dt, framework)


def save_safetensors(path, tensors, *, stream=None):
    """Writes a dict ``{name: array}`` (any devices) as safetensors, in the dict's order."""
    _save_items("tokemb.save_safetensors", path, list(tensors.items()), stream)


def _save_items(fn, path, items, stream):
    """(name, array) pairs to a safetensors file: a list, not a dict, so that a name given twice
    reaches the library's duplicate-name check instead of silently dropping a tensor."""
    path = _path(path, fn)
    if not items:
        raise InvalidArgument(f"{fn}: tensors is empty")
    c, s = _stream_for(fn, items[0][1], str(items[0][0]), stream)
    _core.save_safetensors(path, [(str(k), c.arg(v, str(k))) for k, v in items], s)


def read_safetensors(path, *, framework="numpy"):
    """Reads every tensor of a safetensors file into a dict of new host arrays."""
    return {name: _host_array(arr, dt, framework)
            for name, arr, dt in _core.read_safetensors(_path(path, "tokemb.read_safetensors"))}


def save_weights(path, token_table, pos_table=None, *, names=("wte.weight", "wpe.weight"),
                 stream=None):
    """Saves the tables as safetensors under GPT-2's names (``wte.weight``, ``wpe.weight``)."""
    items = [(names[0], token_table)]
    if pos_table is not None:
        items.append((names[1], pos_table))
    _save_items("tokemb.save_weights", path, items, stream)


def load_weights(path, token_table, pos_table=None, *, names=("wte.weight", "wpe.weight"),
                 stream=None):
    """Loads the tables from safetensors (a whole GPT-2 checkpoint is fine). Each must be
    present with the table's shape and an equal dtype, or float32 into a bf16/f16 table. Both
    are read and checked before either is written."""
    fn = "tokemb.load_weights"
    path = _path(path, fn)
    c, s = _stream_for(fn, token_table, "token_table", stream)
    tables = [c.arg(token_table, "token_table", write=True)]
    nm = [str(names[0])]
    if pos_table is not None:
        if str(names[1]) == nm[0]:
            raise InvalidArgument(f"{fn}: names are {tuple(names)!r}; the token and position "
                                  "tables need different names")
        tables.append(c.arg(pos_table, "pos_table", write=True))
        nm.append(str(names[1]))
    _core.load_tables(path, tables, nm, s)


# ---- token files -------------------------------------------------------------------------------

TokenFile = collections.namedtuple("TokenFile", "format type total_tokens ids")
TokenFile.__doc__ = ("Token ids read from a file: format ('npy', 'bin', 'llmc'), the stored "
                     "type ('uint16', ...), total_tokens in the file, ids (int64 NumPy array).")


def read_token_file(path, format="auto", max_tokens=-1):
    """Reads token ids from .npy (int32/int64/uint16), nanoGPT's raw uint16 .bin or an llm.c
    shard into a new int64 array; at most ``max_tokens`` ids (negative: all). The file is read
    with pread (never memory-mapped); anything but a regular file is refused."""
    fn = "tokemb.read_token_file"
    return TokenFile(*_core.read_token_file(_path(path, fn), str(format),
                                            _index(max_tokens, fn, "max_tokens", optional=False)))


def parse_token_file(data, format="auto", max_tokens=-1, name="<memory>"):
    """Like :func:`read_token_file` on a file image held in ``data`` (bytes)."""
    fn = "tokemb.parse_token_file"
    if isinstance(data, str):
        raise InvalidArgument(f"{fn}: data is a str; expected the file's bytes (bytes, bytearray "
                              "or memoryview; read_token_file takes a path)")
    try:
        data = bytes(memoryview(data))
    except TypeError:
        raise InvalidArgument(f"{fn}: data must be bytes-like (bytes, bytearray or memoryview); "
                              f"got {type(data).__name__}") from None
    return TokenFile(*_core.parse_token_file(data, str(format),
                                             _index(max_tokens, fn, "max_tokens", optional=False),
                                             str(name)))


def window_count(num_tokens, max_length, stride):
    """Windows the book's data loader cuts: starts i = 0, stride, ... with i + max_length <
    num_tokens (each window keeps room for its next-token target)."""
    fn = "tokemb.window_count"
    return _core.window_count(_int(num_tokens, fn, "num_tokens"),
                              _int(max_length, fn, "max_length"), _int(stride, fn, "stride"))


def tokens_for_windows(count, max_length, stride):
    """Ids that windows [0, count) span, targets included."""
    fn = "tokemb.tokens_for_windows"
    return _core.tokens_for_windows(_int(count, fn, "count"), _int(max_length, fn, "max_length"),
                                    _int(stride, fn, "stride"))


def _ids64(ids, fn, name="ids"):
    """Token ids (any integer array or sequence) as a flat int64 NumPy array; anything else
    (floats, which a cast would truncate, strings, objects) is InvalidArgument."""
    import numpy as np
    try:
        a = np.asarray(ids)
    except (TypeError, ValueError):
        a = None
    if a is None or a.dtype.kind not in "iu":
        what = type(ids).__name__ if a is None else f"{type(ids).__name__} of dtype {a.dtype}"
        raise InvalidArgument(f"{fn}: {name} must hold integer token ids; got {what}")
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int64)


def cut_windows(ids, max_length, stride, first=0, count=None):
    """Windows [first, first + count) of ``ids`` as an int64 array [count, max_length]."""
    fn = "tokemb.cut_windows"
    ids = _ids64(ids, fn)
    max_length, stride = _int(max_length, fn, "max_length"), _int(stride, fn, "stride")
    first = _int(first, fn, "first")
    if count is None:
        count = window_count(ids.shape[0], max_length, stride) - first
    return _core.cut_windows(ids, max_length, stride, first, _int(count, fn, "count"))


def sliding_windows(ids, max_length, stride=None):
    """All windows of ``ids`` ([N, max_length] int64); ``stride`` defaults to ``max_length``."""
    return cut_windows(ids, max_length, max_length if stride is None else stride)


def check_token_ids(ids, vocab_size, source="ids"):
    """Raises IndexOutOfRange naming ``source`` and the first id outside [0, vocab_size)."""
    _core.check_token_ids(_ids64(ids, "tokemb.check_token_ids"),
                          _int(vocab_size, "tokemb.check_token_ids", "vocab_size"),
                          str(source))
