"""The installed package carries its type information: python/tokemb/py.typed (PEP 561) and
_core.pyi, the stub nanobind's stubgen generates from the built extension at build time
(python/CMakeLists.txt), next to the extension. Where mypy is importable, it type-checks snippets
against them: correct calls pass, wrong ones are reported from the stub's signatures."""

import os
import re

import pytest

import tokemb
from tokemb import _core

PACKAGE_DIR = os.path.dirname(tokemb.__file__)


def test_py_typed_and_the_stub_are_installed_next_to_the_extension():
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))
    stub = os.path.join(PACKAGE_DIR, "_core.pyi")
    assert os.path.isfile(stub)
    assert os.path.dirname(_core.__file__) == PACKAGE_DIR
    with open(stub, encoding="utf-8") as f:
        text = f.read()
    # Generated from this very extension: every public function it has is declared in the stub.
    functions = sorted(n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))
                       and not isinstance(getattr(_core, n), type))
    assert functions, "the extension defines no functions?"
    missing = [n for n in functions if not re.search(rf"^def {n}\(", text, re.M)]
    assert not missing, f"functions of tokemb._core missing from _core.pyi: {missing}"


GOOD = """
import tokemb._core as core
n: int = core.cuda_device_count()
v: str = core.version
core.check_errors(device_index=0, stream=0, clear=True)
"""

BAD = """
import tokemb._core as core
s: str = core.cuda_device_count()
core.check_errors(device_index="zero", stream=0, clear=True)
"""


def mypy(tmp_path, name, source):
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (pip install mypy)")
    path = tmp_path / name
    path.write_text(source)
    out, err, status = api.run([str(path), "--cache-dir", str(tmp_path / "mypy-cache"),
                                "--no-error-summary", "--hide-error-context"])
    return status, out + err


def test_mypy_sees_the_api(tmp_path):
    status, out = mypy(tmp_path, "good.py", GOOD)
    assert status == 0, out
    status, out = mypy(tmp_path, "bad.py", BAD)
    assert status == 1, out
    # Both errors come from the stub's signatures (without it mypy would only say that the
    # module has no stub).
    assert re.search(r"bad\.py:3: error: Incompatible types in assignment \(expression has type "
                     r"\"int\", variable has type \"str\"\)", out), out
    assert re.search(r"bad\.py:4: error: Argument \"device_index\" to \"check_errors\" has "
                     r"incompatible type \"str\"; expected \"int\"", out), out
