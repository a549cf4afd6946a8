"""tokemb's exceptions. The C++ library's exceptions arrive as these, with the same messages.

Each class also derives from the built-in exception a Python caller would expect, so
``except ValueError`` catches a bad argument and ``except IndexError`` a bad token id.
This module imports nothing else from the package: the extension's exception translator
imports it while it handles an error.
"""


class Error(Exception):
    """Base class of every tokemb exception."""


class InvalidArgument(Error, ValueError):
    """A bad argument (dtype, shape, device, a missing or non-contiguous array, ...). Raised
    before anything is launched or written."""


class IndexOutOfRange(Error, IndexError):
    """A token id or position outside its table.

    Attributes: ``kind`` ('token', 'position' or 'sequence': a malformed cu_seqlens, ``value`` the
    index of its offending entry), ``value`` (the first offending id or position),
    ``batch`` and ``time`` (where it is), ``limit`` (the valid range is [0, limit)), ``count``
    (how many rows were out of range).
    """

    def __init__(self, message, *, kind=None, value=None, batch=None, time=None, limit=None,
                 count=None):
        super().__init__(message)
        self.kind = kind
        self.value = value
        self.batch = batch
        self.time = time
        self.limit = limit
        self.count = count


class CudaError(Error, RuntimeError):
    """A CUDA runtime or library call failed; ``code`` is the cudaError_t value."""

    def __init__(self, message, *, code=0):
        super().__init__(message)
        self.code = code


class OutOfMemory(Error, MemoryError):
    """A device or host allocation failed."""


class Unsupported(Error, NotImplementedError):
    """This build lacks what the call needs (the CUDA backend, cuRAND's host library)."""


class IoError(Error, OSError):
    """A file could not be read or written, or is malformed."""


__all__ = ["Error", "InvalidArgument", "IndexOutOfRange", "CudaError", "OutOfMemory",
           "Unsupported", "IoError"]
