"""Shared pieces of the Python tests (importable: pytest puts this directory on sys.path)."""
import numpy as np

import tokemb


def path_calls(a):
    """(name, call(path)) for every tokemb function that takes a file path, on array ``a``."""
    return [
        ("save_npy", lambda p: tokemb.save_npy(p, a)),
        ("load_npy", lambda p: tokemb.load_npy(p, np.zeros_like(a))),
        ("read_npy", lambda p: tokemb.read_npy(p)),
        ("save_safetensors", lambda p: tokemb.save_safetensors(p, {"a": a})),
        ("read_safetensors", lambda p: tokemb.read_safetensors(p)),
        ("save_weights", lambda p: tokemb.save_weights(p, a)),
        ("load_weights", lambda p: tokemb.load_weights(p, np.zeros_like(a))),
        ("read_token_file", lambda p: tokemb.read_token_file(p)),
    ]
