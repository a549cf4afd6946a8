"""Framework glue: which framework an array belongs to, its device, the stream to run on, and
allocating results with the framework's own allocator (so PyTorch's caching allocator, CUDA-graph
memory pools and stream semantics apply to tokemb's outputs and workspaces too)."""

import sys

from . import _core
from ._errors import InvalidArgument

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13


def framework(x):
    """'torch', 'numpy', 'cupy', 'jax' or 'other'."""
    mod = type(x).__module__ or ""
    top = mod.split(".", 1)[0]
    if top in ("torch", "numpy", "cupy"):
        return top
    if top in ("jax", "jaxlib"):
        return "jax"
    return "other"


def device_of(x, fn, name):
    """(DLPack device type, device id) of an array; raises InvalidArgument for a non-array."""
    try:
        dev = x.__dlpack_device__()
    except AttributeError:
        raise InvalidArgument(f"{fn}: {name} is not a DLPack array (got {type(x).__name__}); "
                              "pass a NumPy, PyTorch, CuPy or JAX array") from None
    except (ValueError, RuntimeError, TypeError, BufferError) as e:
        # A tensor DLPack cannot describe, e.g. PyTorch's meta device (no memory at all).
        where = getattr(getattr(x, "device", None), "type", None)
        raise InvalidArgument(f"{fn}: {name} is on device {str(where or type(x).__name__)!r}, "
                              f"which DLPack cannot hand over ({e}); tokemb takes CPU and CUDA "
                              "arrays") from None
    return int(dev[0]), int(dev[1])


def is_cuda(dev):
    return dev[0] in (KDL_CUDA, KDL_CUDA_MANAGED)


def _is_numpy_bf16(x):
    return framework(x) == "numpy" and getattr(x.dtype, "name", "") == "bfloat16"


def current_stream(fw, dev):
    """The stream a framework's current work on CUDA device dev[1] is ordered on, as an int."""
    if fw == "torch":
        import torch
        return int(torch.cuda.current_stream(dev[1]).cuda_stream)
    if fw == "cupy":
        import cupy
        with cupy.cuda.Device(dev[1]):
            return int(cupy.cuda.get_current_stream().ptr)
    # Frameworks without a notion of "current stream" visible to us (JAX): the legacy default
    # stream, and __dlpack__(stream=1) below asks the producer to make its data ready on it.
    return 0


class Call:
    """Resolves the stream for one call and converts its array arguments for _core."""

    def __init__(self, fn, anchor, anchor_name, stream):
        self.fn = fn
        self.fw = framework(anchor)
        self.dev = device_of(anchor, fn, anchor_name)
        self.cuda = is_cuda(self.dev)
        self.explicit_stream = stream is not None
        given = None
        if stream is not None:  # checked on the CPU too: a wrong stream is a bug wherever it runs
            try:
                if isinstance(stream, (bool, str, bytes, float)):
                    raise TypeError
                given = int(stream)
            except (TypeError, ValueError):
                raise InvalidArgument(f"{fn}: stream must be an int (a cudaStream_t handle) or "
                                      f"None; got {type(stream).__name__}") from None
        if not self.cuda:
            self.stream = 0
        elif given is not None:
            self.stream = given
        else:
            self.stream = current_stream(self.fw, self.dev)

    def arg(self, x, name, *, write=False):
        """What _core takes for argument `name`: None, the array, a DLPack capsule produced for
        our stream, or (uint16 view, 'bf16') for NumPy bfloat16 (ml_dtypes) arrays."""
        if x is None:
            return None
        fw = framework(x)
        if write and fw == "jax":
            raise InvalidArgument(f"{self.fn}: {name} is a JAX array, and JAX arrays are "
                                  "immutable; tokemb writes into it. Pass a NumPy/PyTorch/CuPy "
                                  "array (or out=None to get a new JAX array from forward)")
        if _is_numpy_bf16(x):
            import numpy as np
            return (x.view(np.uint16), "bf16")
        if fw == "torch" and x.requires_grad:
            x = x.detach()  # the functional API is not differentiable: tokemb.torch is
        dev = device_of(x, self.fn, name)
        if is_cuda(dev):
            # DLPack's stream handshake: the producer makes the data ready on the consumer's
            # stream. Only needed where the stream is not the producer's own current stream.
            # DLPack forbids stream 0 for CUDA (ambiguous); 1 is the legacy default stream,
            # which is what handle 0 means to tokemb.
            dl_stream = self.stream if self.stream else 1
            if fw == "torch" and self.explicit_stream:
                return x.__dlpack__(stream=dl_stream)
            if fw not in ("torch", "cupy"):
                return x.__dlpack__(stream=dl_stream)
        return x

    def keep_on_stream(self, t):
        """A PyTorch allocation used on an explicit stream: tell the caching allocator, so the
        block is not reused before that stream is done with it."""
        if self.fw == "torch" and self.cuda and self.explicit_stream:
            import torch
            if self.stream != torch.cuda.current_stream(self.dev[1]).cuda_stream:
                t.record_stream(torch.cuda.ExternalStream(self.stream, device=t.device))

    def empty(self, like, shape):
        """An uninitialised array of `like`'s dtype on the call's device, from `like`'s
        framework (JAX and unknown frameworks: a tokemb allocation, see wrap())."""
        fw = framework(like)
        if fw == "torch":
            import torch
            t = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
            self.keep_on_stream(t)
            return t
        if fw == "numpy":
            import numpy as np
            a = np.empty(tuple(shape), dtype=like.dtype)
            return a
        if fw == "cupy":
            import cupy
            with cupy.cuda.Device(self.dev[1]):
                a = cupy.empty(tuple(shape), dtype=like.dtype)
            return a
        dtype = dtype_name(like)
        return _core.empty([int(s) for s in shape], dtype, KDL_CUDA if self.cuda else KDL_CPU,
                           self.dev[1])

    def workspace(self, nbytes):
        """Backward workspace from the framework's allocator (_core.backward calls this with
        the bytes it needs, only when it needs some); None lets the extension use its own
        per-(device, stream) buffer."""
        if nbytes == 0:
            return None
        if self.fw == "torch":
            import torch
            ws = torch.empty(nbytes, dtype=torch.uint8, device=torch.device("cuda", self.dev[1])
                             if self.cuda else "cpu")
            self.keep_on_stream(ws)
            return ws
        if self.fw == "cupy":
            import cupy
            with cupy.cuda.Device(self.dev[1]):
                return cupy.empty(nbytes, dtype=cupy.uint8)
        return None

    def wrap(self, like, nd):
        """Hands a result allocated by _core.empty to `like`'s framework."""
        fw = framework(like)
        if fw == "jax":
            import jax.dlpack
            if self.cuda:
                # JAX cannot order its streams after ours: finish the work before handing over.
                _core.synchronize(self.stream)
            return jax.dlpack.from_dlpack(nd)
        mod = sys.modules.get(type(like).__module__.split(".", 1)[0])
        from_dlpack = getattr(mod, "from_dlpack", None)
        return from_dlpack(nd) if from_dlpack is not None else nd


def dtype_name(x):
    """tokemb's name for an array's dtype ('f32', 'bf16', 'f16', 'f64', 'i32', 'i64')."""
    name = str(getattr(x, "dtype", "")).replace("torch.", "")
    table = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64",
             "int32": "i32", "int64": "i64"}
    if name not in table:
        raise InvalidArgument(f"unsupported dtype {name!r}: expected one of {sorted(table)}")
    return table[name]
