#!/usr/bin/env python3
"""End-to-end tests of the `tokemb` executable (Python 3 standard library only: no NumPy).

Writes small token files in every supported format (.npy int32/int64/uint16, raw uint16 .bin,
llm.c v1 uint16 and v7 uint32 shards) and safetensors tables, runs `tokemb embed` and
`tokemb demo`, and checks the written .npy against an independent reference computed here
(windows cut like the book's data loader, out = token_table[id] + position_table[t] rounded like
the library: summed in f32, rounded once to the table dtype), the messages and the exit codes
(0 ok, 1 data error, 2 usage error), and that a failed run leaves no output and no temporary file.

Usage: test_cli.py --tokemb PATH/TO/tokemb --workdir DIR [unittest options]
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import unittest

TOKEMB = None
WORKDIR = None
SHIM = None  # the LD_PRELOAD shim that logs fsync/rename/link calls (tests/cli/fsync_shim.cpp)

LLMC_GPT2 = 20240520
LLMC_LLAMA3 = 20240801


# ---- file writers ------------------------------------------------------------------------------

def npy_bytes(descr, shape, payload, fortran=False):
    shape_txt = "(" + "".join("%d," % d for d in shape) + ")" if len(shape) == 1 else \
        "(" + ", ".join(str(d) for d in shape) + ")"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", shape_txt)
    pad = (64 - (10 + len(header) + 1) % 64) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload


def write_npy_ids(path, descr, ids, shape=None):
    fmt = {"<i4": "i", "<i8": "q", "<u2": "H", ">i4": "i", "<f4": "f"}[descr]
    order = ">" if descr[0] == ">" else "<"
    payload = struct.pack(order + "%d%s" % (len(ids), fmt), *ids)
    with open(path, "wb") as f:
        f.write(npy_bytes(descr, shape or [len(ids)], payload))


def write_raw_u16(path, ids):
    with open(path, "wb") as f:
        f.write(struct.pack("<%dH" % len(ids), *ids))


def llmc_bytes(magic, version, count, tokens, token_fmt):
    header = [0] * 256
    header[0], header[1], header[2] = magic, version, count
    return struct.pack("<256i", *header) + struct.pack("<%d%s" % (len(tokens), token_fmt), *tokens)


def write_llmc(path, magic, version, tokens, token_fmt, count=None):
    with open(path, "wb") as f:
        f.write(llmc_bytes(magic, version, len(tokens) if count is None else count, tokens,
                           token_fmt))


def write_safetensors(path, tensors):
    """tensors: {name: (shape, list of float)}, stored as F32."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ---- file readers ------------------------------------------------------------------------------

def bf16_bits_to_float(bits):
    return struct.unpack("<f", struct.pack("<I", bits << 16))[0]


def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", "output does not start with the .npy magic"
    major = data[6]
    if major == 1:
        hlen, start = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", data[8:12])[0], 12
    header = data[start:start + hlen].decode("latin1")
    assert (start + hlen) % 64 == 0, "the .npy data should start 64-byte aligned"
    meta = eval(header, {"__builtins__": {}}, {"True": True, "False": False})  # a dict literal
    shape = tuple(meta["shape"])
    count = 1
    for d in shape:
        count *= d
    body = data[start + hlen:]
    fmt = {"<f4": "f", "<f2": "e"}[meta["descr"]]
    size = struct.calcsize(fmt)
    assert len(body) == count * size, "data size %d != %d x %d" % (len(body), count, size)
    values = list(struct.unpack("<%d%s" % (count, fmt), body))
    return meta["descr"], meta["fortran_order"], shape, values


def read_safetensors(path):
    """{name: (dtype, shape, list of float)} for F32, F16 and BF16 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        blob = data[base + a:base + b]
        dt = info["dtype"]
        if dt == "F32":
            vals = list(struct.unpack("<%df" % (len(blob) // 4), blob))
        elif dt == "F16":
            vals = list(struct.unpack("<%de" % (len(blob) // 2), blob))
        elif dt == "BF16":
            vals = [bf16_bits_to_float(u) for u in struct.unpack("<%dH" % (len(blob) // 2), blob)]
        else:
            raise AssertionError("unexpected dtype " + dt)
        out[name] = (dt, tuple(info["shape"]), vals)
    return out


# ---- the reference -----------------------------------------------------------------------------

def round_f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def round_bf16(x):
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFFFFFF
    return bf16_bits_to_float(bits >> 16)


def round_f16(x):
    return struct.unpack("<e", struct.pack("<e", x))[0]


ROUND = {"f32": round_f32, "bf16": lambda x: round_bf16(round_f32(x)),
         "f16": lambda x: round_f16(round_f32(x))}


def book_windows(ids, max_length, stride):
    """GPTDatasetV1: for i in range(0, len(ids) - max_length, stride): ids[i:i + max_length]."""
    return [ids[i:i + max_length] for i in range(0, len(ids) - max_length, stride)]


def reference(ids, tok, pos, D, T, S, dtype="f32", max_windows=None):
    windows = book_windows(ids, T, S)
    if max_windows is not None:
        windows = windows[:max_windows]
    rnd = ROUND[dtype]
    out = []
    for w in windows:
        for t, i in enumerate(w):
            for d in range(D):
                # Both operands are f32 (or narrower) values: their sum in double is exact, so
                # rounding it once to f32 is the library's f32 add.
                out.append(rnd(tok[i * D + d] + pos[t * D + d]))
    return len(windows), out


def table(rows, D, salt):
    """Values exactly representable in bf16 and f16 (multiples of 1/8 in [-4, 4))."""
    return [((r * 7 + d * 3 + salt) % 64 - 32) / 8.0 for r in range(rows) for d in range(D)]


# ---- test helpers ------------------------------------------------------------------------------

def run(*args, timeout=120):
    p = subprocess.run([TOKEMB] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def wait_stopped(p, timeout=120):
    """Waits until process p is stopped (state T: it raised SIGSTOP at a test hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return False
        try:
            with open("/proc/%d/stat" % p.pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("T", "t"):
            return True
        time.sleep(0.01)
    return False


def has_o_tmpfile(directory):
    """True when the file system of `directory` supports O_TMPFILE (unnamed files)."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return False
    try:
        os.close(os.open(directory, flag | os.O_WRONLY, 0o600))
        return True
    except OSError:
        return False


class CliTest(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.join(WORKDIR, self.id().split(".")[-1])
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def assertNoOutput(self, out):
        self.assertFalse(os.path.exists(out), out + " must not exist after a failed run")
        leftovers = [f for f in os.listdir(os.path.dirname(out)) if ".tmp" in f]
        self.assertEqual(leftovers, [], "temporary files left behind")

    def assertFails(self, rc_expected, args, *fragments, out=None):
        rc, so, se = run(*args)
        self.assertEqual(rc, rc_expected, "args %s\nstdout: %s\nstderr: %s" % (args, so, se))
        for frag in fragments:
            self.assertIn(frag, se, "args %s: stderr lacks %r:\n%s" % (args, frag, se))
        self.assertNotIn("Traceback", se)
        # Library errors carry their source location as data; a user never sees it.
        self.assertIsNone(re.search(r"\.(cpp|hpp|cu|cuh):\d+", se), se)
        self.assertEqual(len(se.strip().splitlines()), 1, "one error message expected:\n" + se)
        if out is not None:
            self.assertNoOutput(out)
        return se


# ---- embed: every format, checked against the reference ----------------------------------------

class EmbedFormats(CliTest):
    V, D, T = 300, 4, 4

    def setUp(self):
        super().setUp()
        self.tok = table(self.V, self.D, 1)
        self.pos = table(self.T, self.D, 5)
        self.weights = self.path("w.safetensors")
        write_safetensors(self.weights, {"wte.weight": ((self.V, self.D), self.tok),
                                         "wpe.weight": ((self.T, self.D), self.pos)})
        self.ids = [(i * 37 + 11) % self.V for i in range(23)]

    def check_embed(self, ids_file, ids, extra=(), S=None, dtype="f32", max_windows=None,
                    expect_type=None, expect_format=None):
        S = S or self.T
        out = self.path("out.npy")
        if os.path.exists(out):
            os.remove(out)
        args = ["embed", "--ids", ids_file, "--vocab", self.V, "--dim", self.D, "--context",
                self.T, "--weights", self.weights, "--out", out, "--stride", S,
                "--dtype", dtype] + list(extra)
        if max_windows is not None:
            args += ["--max-windows", max_windows]
        rc, so, se = run(*args)
        self.assertEqual(rc, 0, "stdout: %s\nstderr: %s" % (so, se))
        n, expected = reference(ids, self.tok, self.pos, self.D, self.T, S, dtype, max_windows)
        descr, fortran, shape, values = read_npy(out)
        self.assertEqual(descr, "<f2" if dtype == "f16" else "<f4")
        self.assertFalse(fortran)
        self.assertEqual(shape, (n, self.T, self.D))
        self.assertEqual(values, expected)
        self.assertIn("CPU reference", so)
        if expect_type:
            self.assertIn("(%s, format %s)" % (expect_type, expect_format), so)
        self.assertEqual(os.listdir(self.dir).count("out.npy.tmp"), 0)
        return so

    def test_npy_int32(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", self.ids)
        self.check_embed(f, self.ids, expect_type="int32", expect_format="npy")

    def test_npy_int64(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i8", self.ids)
        self.check_embed(f, self.ids, expect_type="int64", expect_format="npy")

    def test_npy_uint16(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<u2", self.ids)
        self.check_embed(f, self.ids, expect_type="uint16", expect_format="npy")

    def test_npy_2d_is_flattened(self):
        f = self.path("ids2d.npy")
        ids = self.ids[:20]
        write_npy_ids(f, "<i4", ids, shape=[5, 4])
        self.check_embed(f, ids)

    def test_raw_uint16_bin(self):
        f = self.path("train.bin")
        write_raw_u16(f, self.ids)
        self.check_embed(f, self.ids, expect_type="uint16", expect_format="bin")

    def test_raw_uint16_with_explicit_format(self):
        f = self.path("tokens.u16")
        write_raw_u16(f, self.ids)
        self.check_embed(f, self.ids, extra=["--format", "bin"])

    def test_llmc_v1_uint16(self):
        f = self.path("shard_000000.bin")  # llm.c names its shards *.bin: the magic decides
        write_llmc(f, LLMC_GPT2, 1, self.ids, "H")
        self.check_embed(f, self.ids, expect_type="uint16", expect_format="llmc")

    def test_llmc_v7_uint32(self):
        V = 70000  # ids above 65535 need the uint32 tokens of a v7 shard
        ids = [(65000 + i * 397) % V for i in range(19)]
        self.assertTrue(any(i > 65535 for i in ids))
        self.V, self.tok = V, table(V, self.D, 1)
        write_safetensors(self.weights, {"wte.weight": ((V, self.D), self.tok),
                                         "wpe.weight": ((self.T, self.D), self.pos)})
        f = self.path("llama.bin")
        write_llmc(f, LLMC_LLAMA3, 7, ids, "I")
        self.check_embed(f, ids, expect_type="uint32", expect_format="llmc")

    def test_window_arithmetic(self):
        f = self.path("ids.npy")
        for n in (5, 6, 8, 9, 16, 17, 23):
            ids = self.ids[:n]
            write_npy_ids(f, "<i4", ids)
            for S in (1, 2, 3, 4, 5, 9):
                with self.subTest(n=n, stride=S):
                    self.check_embed(f, ids, S=S)

    def test_batch_size_does_not_change_the_result(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", self.ids)
        for b in ("1", "2", "3", "1000"):
            with self.subTest(batch=b):
                self.check_embed(f, self.ids, extra=["--batch", b], S=2)

    def test_max_windows(self):
        f = self.path("train.bin")
        write_raw_u16(f, self.ids)
        for m in (1, 2, 5, 100):
            with self.subTest(max_windows=m):
                self.check_embed(f, self.ids, S=1, max_windows=m)

    def test_bf16_and_f16(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i8", self.ids)
        for dt in ("bf16", "f16"):
            with self.subTest(dtype=dt):
                self.check_embed(f, self.ids, dtype=dt)

    def test_quiet(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", self.ids)
        out = self.path("q.npy")
        rc, so, se = run("embed", "--ids", f, "--vocab", self.V, "--dim", self.D, "--context",
                         self.T, "--weights", self.weights, "--out", out, "--quiet")
        self.assertEqual((rc, so, se), (0, "", ""))
        # The same run without --quiet talks, and writes the same bytes: --quiet only silences.
        loud = self.path("loud.npy")
        rc, so, se = run("embed", "--ids", f, "--vocab", self.V, "--dim", self.D, "--context",
                         self.T, "--weights", self.weights, "--out", loud)
        self.assertEqual(rc, 0, se)
        self.assertIn("wrote " + loud, so)
        with open(out, "rb") as a, open(loud, "rb") as b:
            self.assertEqual(a.read(), b.read())


class EmbedSeeded(CliTest):
    """--seed: tables saved with --save-weights, the output checked against them."""

    def test_seeded_tables_match_output(self):
        V, D, T = 97, 8, 6
        ids = [(i * 13 + 5) % V for i in range(40)]
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", ids)
        for dt in ("f32", "bf16", "f16"):
            with self.subTest(dtype=dt):
                out, w = self.path("out_%s.npy" % dt), self.path("w_%s.safetensors" % dt)
                rc, so, se = run("embed", "--ids", f, "--vocab", V, "--dim", D, "--context", T,
                                 "--stride", 3, "--seed", 7, "--dtype", dt, "--out", out,
                                 "--save-weights", w)
                self.assertEqual(rc, 0, se)
                self.assertIn("torch.manual_seed(7)", so)
                tables = read_safetensors(w)
                self.assertEqual(tables["wte.weight"][1], (V, D))
                self.assertEqual(tables["wpe.weight"][1], (T, D))
                tok, pos = tables["wte.weight"][2], tables["wpe.weight"][2]
                self.assertGreater(len(set(tok)), V * D // 2, "tables look uninitialised")
                n, expected = reference(ids, tok, pos, D, T, 3, dt)
                descr, _, shape, values = read_npy(out)
                self.assertEqual(shape, (n, T, D))
                self.assertEqual(values, expected)

                # The saved tables reproduce the output bit for bit.
                out2 = self.path("again_%s.npy" % dt)
                rc, _, se = run("embed", "--ids", f, "--vocab", V, "--dim", D, "--context", T,
                                "--stride", 3, "--weights", w, "--dtype", dt, "--out", out2)
                self.assertEqual(rc, 0, se)
                with open(out, "rb") as a, open(out2, "rb") as b:
                    self.assertEqual(a.read(), b.read())

    def test_seed_is_deterministic_and_matters(self):
        ids = list(range(30))
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", ids)
        outs = []
        for i, seed in enumerate((5, 5, 6)):
            out = self.path("o%d.npy" % i)
            rc, _, se = run("embed", "--ids", f, "--vocab", 64, "--dim", 4, "--context", 4,
                            "--seed", seed, "--out", out)
            self.assertEqual(rc, 0, se)
            with open(out, "rb") as h:
                outs.append(h.read())
        self.assertEqual(outs[0], outs[1])
        self.assertNotEqual(outs[0], outs[2])

    def test_default_seed_is_123(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        results = []
        for extra in ([], ["--seed", "123"]):
            out = self.path("d%d.npy" % len(extra))
            rc, _, se = run("embed", "--ids", f, "--vocab", 64, "--dim", 4, "--context", 4,
                            "--out", out, *extra)
            self.assertEqual(rc, 0, se)
            with open(out, "rb") as h:
                results.append(h.read())
        self.assertEqual(results[0], results[1])


# ---- bad input ---------------------------------------------------------------------------------

class EmbedUsageErrors(CliTest):
    """Exit code 2: the command line itself is wrong; nothing is read or written."""

    def base(self, out):
        ids = self.path("ids.npy")
        write_npy_ids(ids, "<i4", list(range(30)))
        return ["embed", "--ids", ids, "--vocab", 64, "--dim", 4, "--context", 4, "--out", out]

    def test_usage_errors(self):
        out = self.path("out.npy")
        b = self.base(out)
        cases = [
            (b + ["--contxt", 4], ["unknown option '--contxt'", "did you mean --context?"]),
            (b + ["--frobnicate"], ["unknown option '--frobnicate'", "--help"]),
            (b + ["stray"], ["unexpected argument 'stray'"]),
            (b + ["--vocab", 9], ["--vocab is given more than once"]),
            (b[:-2], ["missing required option --out"]),
            (["embed", "--vocab", 64, "--dim", 4, "--context", 4, "--out", out],
             ["missing required option --ids"]),
            (b + ["--batch"], ["--batch needs a value"]),
            (b + ["--batch", "--quiet"], ["--batch needs a value"]),
            (b + ["--stride="], ["--stride has an empty value"]),
            (b + ["--quiet=yes"], ["--quiet takes no value"]),
            (b + ["--batch", "abc"], ["--batch 'abc' is not a number", "[1, "]),
            (b + ["--batch", "0"], ["--batch 0 is out of range"]),
            (b + ["--stride", "-2"], ["--stride -2 is out of range"]),
            (b + ["--stride", "99999999999999999999"], ["--stride 99999999999999999999 is out of range"]),
            (b + ["--seed", "-1"], ["--seed '-1' is not a number"]),
            (b + ["--seed", 1, "--weights", "w.safetensors"], ["mutually exclusive"]),
            (b + ["--dtype", "f64"], ["--dtype 'f64' is not one of: f32, bf16, f16"]),
            (b + ["--device", "tpu"], ["--device 'tpu' is not one of: cpu, cuda, cuda:N"]),
            (b + ["--format", "csv"], ["--format 'csv' is not one of: auto, npy, bin, llmc"]),
            (b + ["--max-windows", "0"], ["--max-windows 0 is out of range"]),
            (b + ["--dim", "2147483648"],
             ["--dim 2147483648 is out of range; expected an integer in [1, 2147483647]"]),
            (b + ["--batch", "0x10"], ["--batch '0x10' is not a number"]),
            (b + ["--quiet", "--quiet"], ["--quiet is given more than once"]),
            (b + ["--out", "--quiet"], ["--out needs a value, got the option '--quiet'"]),
            (b + ["--stride=", "5"], ["--stride has an empty value"]),
            (b + ["--device", "cuda:x"], ["--device 'cuda:x'", "cuda:N"]),
            (b + ["demo"], ["unexpected argument 'demo'"]),
        ]
        for args, fragments in cases:
            with self.subTest(args=args[9:]):
                self.assertFails(2, args, "usage error", *fragments, out=out)

    def test_zero_sizes(self):
        out = self.path("out.npy")
        ids = self.path("ids.npy")
        write_npy_ids(ids, "<i4", list(range(30)))
        for flag in ("--vocab", "--dim", "--context"):
            args = {"--vocab": 64, "--dim": 4, "--context": 4}
            args[flag] = 0
            argv = ["embed", "--ids", ids, "--out", out]
            for k, v in args.items():
                argv += [k, v]
            with self.subTest(flag=flag):
                self.assertFails(2, argv, "%s 0 is out of range" % flag, out=out)

    def test_range_errors_name_the_option_the_value_and_the_range(self):
        out = self.path("out.npy")
        ids = self.path("ids.npy")
        write_npy_ids(ids, "<i4", list(range(30)))
        cases = [("--context", "0", "[1, 2147483647]"), ("--dim", "-7", "[1, 2147483647]"),
                 ("--vocab", "0", "[1, 9223372036854775807]"),
                 ("--seed", "18446744073709551616", "[0, 18446744073709551615]")]
        for flag, value, rng in cases:
            opts = {"--vocab": 64, "--dim": 4, "--context": 4, flag: value}
            argv = ["embed", "--ids", ids, "--out", out]
            for k, v in opts.items():
                argv += [k, v]
            with self.subTest(flag=flag):
                self.assertFails(2, argv, "usage error: %s %s is out of range; expected an "
                                 "integer in %s" % (flag, value, rng), out=out)

    def test_unknown_option_wins_over_a_missing_one(self):
        # The misspelt --context is also missing: the message points at the misspelling.
        out = self.path("out.npy")
        self.assertFails(2, ["embed", "--ids", "x.npy", "--vocab", 64, "--dim", 4, "--contxt", 4,
                             "--out", out], "unknown option '--contxt'",
                         "did you mean --context?", out=out)

    def test_integers_are_decimal(self):
        # "010" is ten windows, not eight (octal) as a base-0 conversion would read it.
        ids = self.path("ids.npy")
        write_npy_ids(ids, "<i4", list(range(30)))
        out = self.path("out.npy")
        rc, _, se = run("embed", "--ids", ids, "--vocab", 64, "--dim", 4, "--context", 4,
                        "--stride", 1, "--max-windows", "010", "--out", out, "--quiet")
        self.assertEqual(rc, 0, se)
        self.assertEqual(read_npy(out)[2], (10, 4, 4))

    def test_commands(self):
        self.assertFails(2, [], "no command given", "demo, embed, help and version")
        self.assertFails(2, ["frob"], "unknown command 'frob'")
        self.assertFails(2, ["--frob"], "unknown option '--frob'")
        self.assertFails(2, ["demo", "--vocab", 3], "unknown option '--vocab'")
        self.assertFails(2, ["demo", "--device", "tpu"],
                         "--device 'tpu' is not one of: cpu, cuda, cuda:N")
        self.assertFails(2, ["demo", "embed"], "unexpected argument 'embed'")
        self.assertFails(2, ["help", "x"], "'tokemb help' takes no arguments")
        self.assertFails(2, ["version", "x"], "'tokemb version' takes no arguments")


class EmbedDataErrors(CliTest):
    """Exit code 1: files and data; one message naming the problem; no output, no temp file."""

    def embed(self, ids_file, vocab=64, extra=()):
        self.out = self.path("out.npy")
        return ["embed", "--ids", ids_file, "--vocab", vocab, "--dim", 4, "--context", 4,
                "--out", self.out] + list(extra)

    def test_missing_file(self):
        f = self.path("nope.npy")
        self.assertFails(1, self.embed(f), "nope.npy", "No such file", out=self.path("out.npy"))

    def test_directory_is_not_a_token_file(self):
        self.assertFails(1, self.embed(self.dir), "not a regular file", out=self.path("out.npy"))

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0, "root can read mode-000 files")
    def test_unreadable_file(self):
        f = self.path("secret.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        os.chmod(f, 0)
        try:
            self.assertFails(1, self.embed(f), "Permission denied", out=self.path("out.npy"))
        finally:
            os.chmod(f, stat.S_IRUSR | stat.S_IWUSR)

    def test_wrong_npy_magic(self):
        f = self.path("ids.npy")
        with open(f, "wb") as h:
            h.write(b"\x93NUMPX" + bytes(100))
        self.assertFails(1, self.embed(f), "wrong magic", out=self.path("out.npy"))

    def test_npy_unsupported_dtypes(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<f4", [float(i) for i in range(30)])
        self.assertFails(1, self.embed(f), "'<f4' is not supported", "'<i4'",
                         out=self.path("out.npy"))
        write_npy_ids(f, ">i4", list(range(30)))
        self.assertFails(1, self.embed(f), "big-endian", out=self.path("out.npy"))

    def test_npy_truncated(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        with open(f, "r+b") as h:
            h.truncate(os.path.getsize(f) - 6)
        self.assertFails(1, self.embed(f), "ids.npy", out=self.path("out.npy"))

    def test_llmc_wrong_magic(self):
        f = self.path("shard.bin")
        write_llmc(f, 12345678, 1, list(range(30)), "H")
        self.assertFails(1, self.embed(f), "wrong magic 12345678", "20240520", "20240801",
                         out=self.path("out.npy"))
        self.assertFails(1, self.embed(f, extra=["--format", "llmc"]), "wrong magic 12345678",
                         out=self.path("out.npy"))

    def test_llmc_wrong_version(self):
        f = self.path("shard.bin")
        write_llmc(f, LLMC_GPT2, 7, list(range(30)), "H")
        self.assertFails(1, self.embed(f), "version 7; expected version 1",
                         out=self.path("out.npy"))
        write_llmc(f, LLMC_LLAMA3, 1, list(range(30)), "I")
        self.assertFails(1, self.embed(f), "version 1; expected version 7",
                         out=self.path("out.npy"))

    def test_llmc_size_mismatch(self):
        f = self.path("shard.bin")
        write_llmc(f, LLMC_GPT2, 1, list(range(30)), "H", count=31)
        self.assertFails(1, self.embed(f), "31 uint16 tokens", "truncated file",
                         out=self.path("out.npy"))
        write_llmc(f, LLMC_GPT2, 1, list(range(30)), "H", count=-5)
        self.assertFails(1, self.embed(f), "negative token count -5", out=self.path("out.npy"))
        with open(f, "wb") as h:
            h.write(struct.pack("<3i", LLMC_GPT2, 1, 10))
        self.assertFails(1, self.embed(f), "shorter than its 1024-byte header",
                         out=self.path("out.npy"))

    def test_odd_raw_file(self):
        f = self.path("train.bin")
        with open(f, "wb") as h:
            h.write(bytes(41))
        self.assertFails(1, self.embed(f), "odd size of 41 bytes", out=self.path("out.npy"))

    def test_unknown_extension(self):
        f = self.path("tokens.dat")
        write_raw_u16(f, list(range(30)))
        self.assertFails(1, self.embed(f), "cannot tell the token file format", "--format",
                         out=self.path("out.npy"))

    def test_id_out_of_vocabulary(self):
        for descr in ("<i4", "<i8", "<u2"):
            f = self.path("ids.npy")
            ids = list(range(30))
            ids[17] = 64
            write_npy_ids(f, descr, ids)
            with self.subTest(descr=descr):
                self.assertFails(1, self.embed(f, vocab=64), "token id 64 at index 17",
                                 "outside the vocabulary [0, 64)", out=self.path("out.npy"))
        f = self.path("train.bin")
        write_raw_u16(f, [1, 2, 3, 65535, 4, 5, 6, 7, 8, 9])
        self.assertFails(1, self.embed(f, vocab=50257), "token id 65535 at index 3",
                         out=self.path("out.npy"))

    def test_negative_id(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i8", [0, 1, -3] + list(range(20)))
        self.assertFails(1, self.embed(f), "token id -3 at index 2", out=self.path("out.npy"))

    def test_too_short(self):
        for n in (0, 1, 4):  # context 4 needs 5 ids: the window and its next-token target
            f = self.path("ids.npy")
            write_npy_ids(f, "<i4", list(range(n)))
            with self.subTest(n=n):
                self.assertFails(1, self.embed(f), "too short", "holds %d token ids" % n,
                                 "needs at least 5", out=self.path("out.npy"))
        f = self.path("empty.bin")
        open(f, "wb").close()
        self.assertFails(1, self.embed(f), "too short", out=self.path("out.npy"))
        f = self.path("empty_shard.bin")
        write_llmc(f, LLMC_GPT2, 1, [], "H")
        self.assertFails(1, self.embed(f), "too short", out=self.path("out.npy"))

    def test_weights_problems(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        self.assertFails(1, self.embed(f, extra=["--weights", self.path("none.safetensors")]),
                         "none.safetensors", out=self.path("out.npy"))
        w = self.path("w.safetensors")
        write_safetensors(w, {"wte.weight": ((64, 5), [0.0] * 320),
                              "wpe.weight": ((4, 5), [0.0] * 20)})
        self.assertFails(1, self.embed(f, extra=["--weights", w]), "wte.weight",
                         out=self.path("out.npy"))

    def test_no_cuda_device(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        rc, so, se = run("version")
        if "CUDA devices visible: 0" not in so:
            self.skipTest("a CUDA device is visible")
        self.assertFails(1, self.embed(f, extra=["--device", "cuda"]), "--device cuda",
                         "use --device cpu", out=self.path("out.npy"))

    def test_unwritable_output(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        out = self.path("no/such/dir/out.npy")
        args = ["embed", "--ids", f, "--vocab", 64, "--dim", 4, "--context", 4, "--out", out]
        self.assertFails(1, args, "no/such/dir")
        self.assertFalse(os.path.exists(self.path("no")))

    def test_failure_keeps_an_existing_output(self):
        f = self.path("ids.npy")
        write_npy_ids(f, "<i4", list(range(30)))
        out = self.path("out.npy")
        with open(out, "wb") as h:
            h.write(b"previous result")
        self.assertFails(1, ["embed", "--ids", f, "--vocab", 10, "--dim", 4, "--context", 4,
                             "--out", out], "outside the vocabulary")
        with open(out, "rb") as h:
            self.assertEqual(h.read(), b"previous result")
        self.assertEqual([x for x in os.listdir(self.dir) if ".tmp" in x], [])


class EmbedInterrupted(CliTest):
    @unittest.skipIf(os.name != "posix", "needs POSIX signals")
    def test_sigint_removes_the_temporary_file(self):
        # Deterministic: the process stops itself (SIGSTOP, TOKEMB_TEST_STOP_AT) after its output
        # is opened and before its first window, so that SIGINT arrives with ~500000 windows
        # (one write each, at least a second of work on any machine) still to go; SIGCONT lets
        # it see the signal at its next window.
        f = self.path("big.bin")
        write_raw_u16(f, [(i * 7919) % 50257 for i in range(500001)])
        out = self.path("out.npy")
        p = subprocess.Popen([TOKEMB, "embed", "--ids", f, "--vocab", "50257", "--dim", "16",
                              "--context", "1", "--stride", "1", "--batch", "1", "--out", out,
                              "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, TOKEMB_TEST_STOP_AT="first-window"))
        try:
            self.assertTrue(wait_stopped(p), "the run did not stop at its first window")
            self.assertFalse(os.path.exists(out), "the run finished before it could be stopped")
            p.send_signal(signal.SIGINT)
        finally:
            p.send_signal(signal.SIGCONT)
        so, se = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 130, se)
        self.assertIn("interrupted by signal", se)
        self.assertNoOutput(out)

    @unittest.skipIf(os.name != "posix", "needs POSIX signals")
    def test_sigint_while_loading_the_weights(self):
        """Issue 20 item 7: the safetensors header parser checks for Ctrl-C (exit 130)."""
        ids = self.path("ids.npy")
        write_npy_ids(ids, "<i4", [1, 2, 3, 4, 5, 6, 7, 0, 1])
        w = self.path("w.st")
        write_safetensors(w, {"wte.weight": ((8, 2), [0.5] * 16),
                              "wpe.weight": ((4, 2), [0.25] * 8)})
        out = self.path("out.npy")
        p = subprocess.run([TOKEMB, "embed", "--ids", ids, "--vocab", "8", "--dim", "2",
                            "--context", "4", "--weights", w, "--out", out],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, TOKEMB_TEST_SIGINT_AT="load-weights"))
        self.assertEqual(p.returncode, 130, p.stderr)
        self.assertIn("interrupted by signal", p.stderr)
        self.assertIn("while loading the tables", p.stderr)
        self.assertNoOutput(out)


# ---- help and demo -----------------------------------------------------------------------------

class HelpAndDemo(CliTest):
    EMBED_OPTIONS = ["--ids", "--vocab", "--dim", "--context", "--out", "--batch", "--stride",
                     "--seed", "--weights", "--dtype", "--device", "--format", "--max-windows",
                     "--save-weights", "--quiet", "--help"]

    def test_help_lists_everything(self):
        for args in (["--help"], ["help"], ["-h"]):
            rc, so, se = run(*args)
            self.assertEqual((rc, se), (0, ""))
            for word in ["demo", "embed", "Exit codes"] + self.EMBED_OPTIONS:
                self.assertIn(word, so)
        rc, so, _ = run("embed", "--help")
        self.assertEqual(rc, 0)
        for word in self.EMBED_OPTIONS + ["20240520", "20240801", "uint16", "int32", "int64"]:
            self.assertIn(word, so)
        rc, so, _ = run("demo", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("--device", so)

    def option_entries(self, text):
        """{"--name": entry} for every option line of a generated help text; an entry is the
        option's line plus its indented continuation lines."""
        entries, current = {}, None
        for line in text.splitlines():
            m = re.match(r"^  (?:-h,)?(--[a-z-]+)\b", line)
            if m:
                current = m.group(1)
                entries[current] = line
            elif current and line.startswith(" " * 10):
                entries[current] += "\n" + line
            else:
                current = None
        return entries

    def test_embed_help_is_generated_from_the_option_definitions(self):
        rc, so, se = run("embed", "--help")
        self.assertEqual((rc, se), (0, ""))
        self.assertIn("Usage: tokemb embed [OPTIONS]", so)
        entries = self.option_entries(so)
        self.assertEqual(sorted(entries), sorted(self.EMBED_OPTIONS))
        for name, entry in entries.items():
            self.assertEqual("REQUIRED" in entry.splitlines()[0],
                             name in ("--ids", "--vocab", "--dim", "--context", "--out"), entry)
        # Ranges and defaults come from the checks and values the options are declared with.
        for name in ("--dim", "--context"):
            self.assertIn("an integer in [1, 2147483647]", entries[name])
        for name in ("--vocab", "--batch", "--stride", "--max-windows"):
            self.assertIn("an integer >= 1", entries[name])
        self.assertIn("--batch B=8", entries["--batch"])
        self.assertIn("--seed N=123", entries["--seed"])
        self.assertIn("Excludes: --weights", entries["--seed"])
        self.assertIn("--dtype f32|bf16|f16=f32", entries["--dtype"])
        self.assertIn("--format auto|npy|bin|llmc=auto", entries["--format"])
        self.assertLessEqual(max(len(line) for line in so.splitlines()), 100)

    def test_help_wins_over_a_bad_value(self):
        rc, so, se = run("embed", "--batch", "0", "--help")
        self.assertEqual((rc, se), (0, ""))
        self.assertIn("Usage: tokemb embed", so)

    def test_main_help_lists_the_commands(self):
        rc, so, _ = run("--help")
        self.assertEqual(rc, 0)
        head = so.split("---- tokemb demo --help")[0]
        for command in ("demo", "embed", "help", "version"):
            self.assertRegex(head, r"\n  %s +\S" % command)
        self.assertIn("Usage: tokemb demo", so)
        self.assertIn("Usage: tokemb embed", so)

    def test_version(self):
        rc, so, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(so, r"^tokemb \d+\.\d+\.\d+ \(CUDA backend: (yes|no)")

    def test_demo(self):
        start = time.monotonic()
        rc, so, se = run("demo", timeout=60)
        took = time.monotonic() - start
        self.assertEqual(rc, 0, so + se)
        # The book's numbers: torch.manual_seed(123); nn.Embedding(6, 3); row 3.
        self.assertIn("[-0.4015,  0.9666, -1.1481]", so)
        self.assertIn("[ 0.3374, -0.1778, -0.1690]", so)
        for shape in ("shape [8, 4, 256]", "shape [4, 256]"):
            self.assertIn(shape, so)
        self.assertEqual(so.count("OK"), 2 if "skipped" in so else 3, so)
        self.assertNotIn("MISMATCH", so)
        if "CUDA device cuda:0" in so:
            self.assertIn("max |GPU - CPU|", so)
        else:
            self.assertIn("the CPU reference backend", so)
            self.assertIn("GPU versus CPU reference check: skipped", so)
        self.assertLess(took, 30.0, "the demo must be fast")

    def test_demo_on_cpu_explicitly(self):
        rc, so, _ = run("demo", "--device", "cpu", timeout=60)
        self.assertEqual(rc, 0)
        self.assertIn("requested with --device cpu", so)
        self.assertIn("skipped", so)

# ---- output safety (issue 13): never lose a user's file ----------------------------------------

def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class EmbedProgress(CliTest):
    """Preparing the tables (PyTorch-like init: 15-30 s at GPT-2 size on a slow machine) says it
    is still working, on stderr, like the windows' progress; nothing for short steps, nothing with
    --quiet. TOKEMB_TEST_PROGRESS_S shortens the one-second period so that a small run shows it."""

    def setUp(self):
        super().setUp()
        self.ids = self.path("ids.npy")
        write_npy_ids(self.ids, "<i4", [(i * 7) % 50257 for i in range(40)])

    def embed(self, *extra, period=None):
        env = dict(os.environ)
        env.pop("TOKEMB_TEST_PROGRESS_S", None)
        if period is not None:
            env["TOKEMB_TEST_PROGRESS_S"] = str(period)
        p = subprocess.run([TOKEMB, "embed", "--ids", self.ids, "--vocab", "50257", "--dim", "64",
                            "--context", "4", "--out", self.path("o.npy")] + list(extra),
                           capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout, p.stderr

    def test_initialising_the_tables_shows_progress(self):
        so, se = self.embed(period=0.001)
        what = ("tokemb embed: initialising the tables ([50257, 64] + [4, 64] f32, 12.3 MiB on cpu)"
                " like PyTorch: ")
        lines = se.splitlines()
        beats = [l for l in lines if l.startswith(what) and l.endswith(" s elapsed")]
        self.assertTrue(beats, se)
        done = [l for l in lines if l.startswith(what + "done in ")]
        self.assertEqual(len(done), 1, se)
        self.assertLess(lines.index(beats[-1]), lines.index(done[0]), se)
        self.assertNotIn("elapsed", so)  # progress never goes to stdout
        self.assertIn("initialised like torch.manual_seed(123)", so)

    def test_short_steps_and_quiet_runs_print_no_progress(self):
        so, se = self.embed()
        self.assertEqual(se, "")
        so, se = self.embed("--quiet", period=0.001)
        self.assertEqual((so, se), ("", ""))


class OutputSafety(CliTest):
    V, D, T = 64, 4, 4

    def setUp(self):
        super().setUp()
        self.ids = self.path("ids.npy")
        write_npy_ids(self.ids, "<i4", [(i * 7) % self.V for i in range(40)])

    def embed(self, out, *extra, ids=None):
        return ["embed", "--ids", ids or self.ids, "--vocab", self.V, "--dim", self.D,
                "--context", self.T, "--out", out] + list(extra)

    def assertUsageError(self, args, *fragments):
        rc, so, se = run(*args)
        self.assertEqual(rc, 2, "args %s\nstdout: %s\nstderr: %s" % (args, so, se))
        for frag in fragments:
            self.assertIn(frag, se)
        self.assertEqual(so, "", "a usage error reads and writes nothing")

    def test_outputs_go_through_links_keep_permissions_and_spare_special_files(self):
        """A symbolic link is written through, a replaced file keeps its mode, and a FIFO (or
        device) is never replaced by a regular file."""
        target, link = self.path("target.npy"), self.path("link.npy")
        with open(target, "wb") as f:
            f.write(b"old")
        os.chmod(target, 0o600)
        os.symlink(target, link)
        rc, so, se = run(*self.embed(link, "--quiet"))
        self.assertEqual(rc, 0, se)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o600)
        self.assertNotEqual(file_bytes(target), b"old")
        fifo = self.path("fifo.npy")
        os.mkfifo(fifo)
        rc, so, se = run(*self.embed(fifo, "--quiet"))
        self.assertEqual(rc, 1, se)
        self.assertIn("not a regular file", se)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        self.assertEqual([x for x in os.listdir(self.dir) if ".tmp" in x], [])

    def test_output_that_is_an_input_is_refused(self):
        """Item 1: files are compared, not spellings (./ and .., hard and symbolic links)."""
        ids_before = file_bytes(self.ids)
        w = self.path("w.safetensors")
        self.assertEqual(run(*self.embed(self.path("first.npy"), "--save-weights", w))[0], 0)
        w_before = file_bytes(w)
        sub = self.path("sub")
        os.makedirs(sub)
        os.link(self.ids, self.path("hard.npy"))
        os.symlink(self.ids, self.path("soft.npy"))
        spellings = [self.ids, os.path.join(sub, "..", "ids.npy"),
                     os.path.join(self.dir, ".", "ids.npy"), self.path("hard.npy"),
                     self.path("soft.npy")]
        for out in spellings:
            with self.subTest(out=out):
                self.assertUsageError(self.embed(out), "--out", "same file as --ids")
                self.assertUsageError(self.embed(self.path("o.npy"), "--save-weights", out),
                                      "--save-weights", "same file as --ids")
        self.assertUsageError(self.embed(os.path.join(sub, "..", "w.safetensors"),
                                         "--weights", w), "--out", "same file as --weights")
        self.assertUsageError(self.embed(self.path("o.npy"), "--weights", w,
                                         "--save-weights", w), "same file as --weights")
        # The two outputs: the same new file, spelled two ways.
        self.assertUsageError(self.embed(self.path("x.npy"), "--save-weights",
                                         os.path.join(sub, "..", "x.npy")),
                              "--save-weights", "same file as --out")
        self.assertFalse(os.path.exists(self.path("x.npy")))
        self.assertFalse(os.path.exists(self.path("o.npy")))
        self.assertEqual(file_bytes(self.ids), ids_before)
        self.assertEqual(file_bytes(w), w_before)
        # An input named like the old temporary is just another file.
        tmp_ids = self.path("data.npy.tmp")
        shutil.copy(self.ids, tmp_ids)
        self.assertEqual(run(*self.embed(self.path("data.npy"), ids=tmp_ids))[0], 0)
        self.assertEqual(file_bytes(tmp_ids), ids_before)

    def test_temporary_never_follows_a_link_nor_clobbers_a_file(self):
        """Item 2."""
        out = self.path("out.npy")
        victim = self.path("victim.txt")
        with open(victim, "wb") as f:
            f.write(b"precious")
        os.symlink(victim, out + ".tmp")
        mine = self.path("w.st.tmp")
        with open(mine, "wb") as f:
            f.write(b"the user's own file")
        rc, so, se = run(*self.embed(out, "--save-weights", self.path("w.st")))
        self.assertEqual(rc, 0, se)
        self.assertEqual(file_bytes(victim), b"precious")
        self.assertTrue(os.path.islink(out + ".tmp"))
        self.assertEqual(file_bytes(mine), b"the user's own file")
        self.assertEqual(sorted(os.listdir(self.dir)),
                         sorted(["ids.npy", "out.npy", "out.npy.tmp", "victim.txt", "w.st",
                                 "w.st.tmp"]))

    def test_concurrent_runs_each_publish_a_complete_output(self):
        """Item 3: two runs writing one --out: the file is always one run's whole output."""
        ids = self.path("many.bin")
        write_raw_u16(ids, [(i * 7919) % 1000 for i in range(40000)])
        args = ["embed", "--ids", ids, "--vocab", 1000, "--dim", 64, "--context", 32,
                "--batch", 1, "--quiet"]
        refs = {}
        for seed in (1, 2):
            ref = self.path("ref%d.npy" % seed)
            rc, _, se = run(*(args + ["--seed", seed, "--out", ref]))
            self.assertEqual(rc, 0, se)
            refs[seed] = file_bytes(ref)
        self.assertNotEqual(refs[1], refs[2])
        out = self.path("out.npy")
        for attempt in range(3):
            procs = [subprocess.Popen([TOKEMB] + [str(a) for a in args] +
                                      ["--seed", str(seed), "--out", out],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for seed in (1, 2)]
            results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
            for so, se, rc in results:
                self.assertEqual(rc, 0, se)
            self.assertIn(file_bytes(out), (refs[1], refs[2]), "attempt %d" % attempt)
            self.assertEqual([x for x in os.listdir(self.dir) if ".tmp" in x], [])

    def test_later_failure_leaves_every_output_as_it_was(self):
        """Item 4: a bad --save-weights location, or a failing stdout, keeps --out untouched."""
        out = self.path("keep.npy")
        with open(out, "wb") as f:
            f.write(b"previous result")
        rc, so, se = run(*self.embed(out, "--save-weights", self.path("nodir/w.st")))
        self.assertEqual(rc, 1, se)
        self.assertIn("--save-weights", se)
        self.assertIn("nodir", se)
        self.assertEqual(so, "", "the directory is checked before anything is read")
        self.assertEqual(file_bytes(out), b"previous result")
        w = self.path("w.st")
        with open(w, "wb") as f:
            f.write(b"previous weights")
        with open("/dev/full", "w") as full:
            p = subprocess.run([TOKEMB] + [str(a) for a in self.embed(out, "--save-weights", w)],
                               stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("standard output", p.stderr)
        self.assertEqual(file_bytes(out), b"previous result")
        self.assertEqual(file_bytes(w), b"previous weights")
        self.assertEqual([x for x in os.listdir(self.dir) if ".tmp" in x], [])

    def test_missing_out_directory_is_reported_before_anything_is_read(self):
        """Item 11: not after the tables are initialised (nor after reading the ids)."""
        rc, so, se = run(*self.embed(self.path("nodir/out.npy"),
                                     ids=self.path("missing-ids.npy")))
        self.assertEqual(rc, 1, se)
        self.assertIn("--out", se)
        self.assertIn("nodir", se)
        self.assertNotIn("missing-ids", se)

    @unittest.skipIf(os.name != "posix", "needs POSIX signals")
    def test_sigint_while_saving_weights_exits_130_and_leaves_nothing(self):
        """Item 5: the signal arrives when the weights are being saved (a test hook raises it
        there, so that the test is deterministic); the save stops and nothing is published."""
        out, w = self.path("out.npy"), self.path("w.st")
        for path, old in ((out, b"old output"), (w, b"old weights")):
            with open(path, "wb") as f:
                f.write(old)
        env = dict(os.environ, TOKEMB_TEST_SIGINT_AT="save-weights")
        p = subprocess.run([TOKEMB] + [str(a) for a in self.embed(out, "--save-weights", w)],
                           capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(p.returncode, 130, p.stdout + p.stderr)
        self.assertIn("interrupted by signal 2", p.stderr)
        self.assertEqual(file_bytes(out), b"old output")
        self.assertEqual(file_bytes(w), b"old weights")
        self.assertEqual([x for x in os.listdir(self.dir) if ".tmp" in x], [])

    @unittest.skipIf(os.name != "posix", "needs POSIX signals")
    def test_inherited_ignored_sigint_stays_ignored(self):
        """Item 11: a run started with SIGINT ignored (nohup, background jobs) keeps ignoring
        it: SIGINT is sent every 20 ms while the run writes, and the run still completes."""
        ids = self.path("big.bin")
        write_raw_u16(ids, [(i * 7919) % 50257 for i in range(70000)])
        out, w = self.path("out.npy"), self.path("w.st")
        env = dict(os.environ, TOKEMB_TEST_SIGINT_AT="save-weights")  # and once more there
        p = subprocess.Popen([TOKEMB, "embed", "--ids", ids, "--vocab", "50257", "--dim", "64",
                              "--context", "256", "--batch", "1", "--max-windows", "256",
                              "--out", out, "--save-weights", w, "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        deadline = time.monotonic() + 120
        sent = 0
        while p.poll() is None and time.monotonic() < deadline:
            p.send_signal(signal.SIGINT)  # ignored since before the run started
            sent += 1
            time.sleep(0.02)
        so, se = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, se)
        self.assertGreater(sent, 0, "the run ended before a signal was sent")
        self.assertEqual(read_npy(out)[2], (256, 256, 64))
        self.assertTrue(os.path.exists(w))

    def test_longest_valid_out_name_works(self):
        """Item 11: a 255-byte name used to fail because of the temporary's suffix."""
        name_max = os.pathconf(self.dir, "PC_NAME_MAX")
        out = self.path("n" * (name_max - 4) + ".npy")
        rc, so, se = run(*self.embed(out))
        self.assertEqual(rc, 0, se)
        self.assertEqual(read_npy(out)[2], (9, self.T, self.D))

    def test_help_to_a_full_stdout_fails(self):
        """Item 11: stdout errors are checked everywhere."""
        for args in (["help"], ["--help"], ["embed", "--help"], ["version"]):
            with open("/dev/full", "w") as full:
                p = subprocess.run([TOKEMB] + args, stdout=full, stderr=subprocess.PIPE,
                                   text=True, timeout=60)
            with self.subTest(args=args):
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("standard output", p.stderr)
                # Issue 20 item 14: the system's reason, not a made-up EIO.
                self.assertIn(os.strerror(28), p.stderr)  # ENOSPC

    def test_huge_device_index_says_so(self):
        """Item 11: not "expected N >= 0"."""
        rc, so, se = run(*self.embed(self.path("o.npy"), "--device", "cuda:99999999999"))
        self.assertEqual(rc, 2, se)
        self.assertIn("99999999999 is too large", se)

    def test_token_npy_with_trailing_bytes_is_rejected(self):
        """Item 11: the token reader applies the rule parse_npy applies."""
        with open(self.ids, "ab") as f:
            f.write(b"\0\0\0\0\0")
        self.assertFails(1, self.embed(self.path("o.npy")), "5 unexpected bytes",
                         out=self.path("o.npy"))

    def test_tiny_tables_are_initialised_like_pytorch(self):
        """Item 8: --dim 4 --context 2 (8 elements) used to fail; the values are PyTorch's
        (torch 1.13: torch.manual_seed(123); nn.Embedding(64, 4); nn.Embedding(2, 4))."""
        out, w = self.path("o.npy"), self.path("w.st")
        rc, so, se = run("embed", "--ids", self.ids, "--vocab", self.V, "--dim", 4,
                         "--context", 2, "--out", out, "--save-weights", w)
        self.assertEqual(rc, 0, se)
        # Printed by: torch.manual_seed(123); torch.nn.Embedding(64, 4);
        # torch.nn.Embedding(2, 4).weight.flatten().tolist() (PyTorch 1.13, CPU). The position
        # table has 8 elements: PyTorch's scalar path, reproduced bitwise.
        torch_wpe = [-0.7018435597419739, -1.312984585762024, 0.15740126371383667,
                     2.0113959312438965, 0.10039356350898743, 0.8222411274909973,
                     -0.01764637604355812, 1.2480806112289429]
        tensors = read_safetensors(w)
        wpe = tensors["wpe.weight"]
        self.assertEqual(wpe[0], "F32")
        self.assertEqual(list(wpe[1]), [2, 4])
        self.assertEqual(wpe[2], torch_wpe)

    def test_out_of_memory_says_what_and_how_large(self):
        """Item 7: not a bare "out of host memory"."""
        out = self.path("o.npy")
        self.assertFails(1, ["embed", "--ids", self.ids, "--vocab", 10 ** 12, "--dim", 4096,
                             "--context", 4, "--out", out],
                         "out of memory allocating the tables ([1000000000000, 4096]",
                         "TiB", out=out)

    @unittest.skipIf(not sys.platform.startswith("linux"), "needs Linux's ru_maxrss")
    def test_memory_does_not_grow_with_the_token_file(self):
        """Item 7: a 100 MB raw file (50 M ids, 400 MB as int64) embedded with a huge stride:
        the ids are streamed, so the run's peak memory stays far below the file's int64 size."""
        ids = self.path("big.bin")
        with open(ids, "wb") as f:
            f.write(b"\x01\x00" * (50 * 1000 * 1000))
        out = self.path("o.npy")
        probe = ("import resource, subprocess, sys\n"
                 "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
                 "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                 "sys.stderr.write(p.stderr.decode())\n")
        args = ["embed", "--ids", ids, "--vocab", 8, "--dim", 4, "--context", 4,
                "--stride", 1000000, "--out", out, "--quiet"]
        p = subprocess.run([sys.executable, "-c", probe, TOKEMB] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=300)
        rc, maxrss_kib = (int(x) for x in p.stdout.split())
        self.assertEqual(rc, 0, p.stderr)
        self.assertEqual(read_npy(out)[2], (50, 4, 4))
        # The ids alone would take 400 MB as int64; a streamed run stays far below that, even
        # under AddressSanitizer.
        self.assertLess(maxrss_kib, 200 * 1024, "peak RSS %d KiB" % maxrss_kib)
        os.remove(ids)


# ---- issue 20: files, hangs and misleading errors ---------------------------------------------

class FilesRound3(OutputSafety):
    """Issue 20 items 2-9, 13, 14 and the mutation gaps about --out's permissions."""

    def popen_stopped_at(self, point, args, **kw):
        p = subprocess.Popen([TOKEMB] + [str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, TOKEMB_TEST_STOP_AT=point), **kw)
        if not wait_stopped(p):
            p.kill()
            p.communicate()
            self.fail("the run did not stop at " + point)
        return p

    @unittest.skipIf(not sys.platform.startswith("linux"), "O_TMPFILE is Linux's")
    def test_sigkill_leaves_nothing(self):
        """Item 3: the outputs live in unnamed (O_TMPFILE) files until they are published, so
        a run killed at any point (SIGKILL, the OOM killer) leaves no file behind."""
        if not has_o_tmpfile(self.dir):
            self.skipTest("this file system has no O_TMPFILE (the named fallback is used)")
        out, w = self.path("out.npy"), self.path("w.st")
        p = self.popen_stopped_at("before-publish", self.embed(out, "--save-weights", w))
        p.kill()  # SIGKILL, while every output is written and none published
        p.communicate(timeout=60)
        self.assertEqual(sorted(os.listdir(self.dir)), ["ids.npy"])

    def test_output_is_never_reopened_by_name(self):
        """Item 2: the CLI closed its staging file and reopened it by name, so a staging file
        swapped for a symbolic link sent the output to the link's target and published --out as
        a link. The data is now written through the descriptor it was created with: where it has
        a name at all (no O_TMPFILE), a swapped name is never published."""
        out, victim = self.path("out.npy"), self.path("victim")
        with open(victim, "wb") as f:
            f.write(b"precious")
        p = self.popen_stopped_at("first-window", self.embed(out))
        swapped = [x for x in os.listdir(self.dir) if ".tmp" in x]
        for name in swapped:
            os.remove(self.path(name))
            os.symlink(victim, self.path(name))
        p.send_signal(signal.SIGCONT)
        so, se = p.communicate(timeout=60)
        self.assertEqual(file_bytes(victim), b"precious")
        self.assertFalse(os.path.islink(out))
        if swapped:
            self.assertEqual(p.returncode, 1, se)
            self.assertFalse(os.path.exists(out))
        else:  # unnamed (O_TMPFILE): nothing to swap
            self.assertEqual(p.returncode, 0, se)
            self.assertEqual(read_npy(out)[2], (9, self.T, self.D))
        self.assertEqual(sorted(x for x in os.listdir(self.dir) if ".tmp" not in x),
                         sorted(["ids.npy", "victim"] + (["out.npy"] if not swapped else [])))

    @unittest.skipIf(not sys.platform.startswith("linux"), "needs RLIMIT_FSIZE")
    def test_write_error_names_the_users_path_and_stages_once(self):
        """Item 3: a failing write (here: the file size limit, as a full disk would) names
        --out's path, not a temporary (it once said '..out.npy.tmp-X.tmp-Y')."""
        import resource
        out = self.path("out.npy")

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        args = ["embed", "--ids", self.ids, "--vocab", self.V, "--dim", 64, "--context", self.T,
                "--out", out]  # 9 windows of 4 x 64 f32: 9 KiB, past the 4 KiB limit
        p = subprocess.run([TOKEMB] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=60, preexec_fn=limit)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("'%s'" % out, p.stderr)
        self.assertNotIn(".tmp", p.stderr)
        self.assertIn(os.strerror(27), p.stderr)  # EFBIG: the system's reason
        self.assertNoOutput(out)

    def test_outputs_are_published_together_or_not_at_all(self):
        """Item 4: --save-weights' path became a directory while the run worked: --out must not
        be replaced either (it was published first, then the run failed)."""
        out, w = self.path("out.npy"), self.path("w.st")
        with open(out, "wb") as f:
            f.write(b"previous result")
        p = self.popen_stopped_at("before-publish", self.embed(out, "--save-weights", w))
        os.mkdir(w)
        p.send_signal(signal.SIGCONT)
        so, se = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 1, se)
        self.assertIn("--save-weights", se)
        self.assertIn("a directory", se)
        self.assertEqual(file_bytes(out), b"previous result")
        self.assertTrue(os.path.isdir(w))
        self.assertEqual([x for x in os.listdir(self.dir) if ".tmp" in x], [])

    @unittest.skipIf(not sys.platform.startswith("linux"), "LD_PRELOAD shim, /proc")
    def test_outputs_are_flushed_before_and_their_directory_after_the_rename(self):
        """Item 5: every output is fsynced before any is renamed into place, and the directory
        after its rename, before the run reports success (an LD_PRELOAD shim logs the calls)."""
        if SHIM is None:
            self.skipTest("run with --shim PATH (ctest passes it)")
        out, w = self.path("out.npy"), self.path("w.st")
        log = self.path("calls.log")
        env = dict(os.environ, LD_PRELOAD=SHIM, TOKEMB_SHIM_LOG=log,
                   ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
        p = subprocess.run([TOKEMB] + [str(a) for a in self.embed(out, "--save-weights", w)],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(log) as f:
            calls = [line.split(" ", 2) for line in f.read().splitlines()]
        renames = [i for i, c in enumerate(calls) if c[0] == "renameat"]
        self.assertEqual([os.path.basename(calls[i][2]) for i in renames], ["out.npy", "w.st"],
                         calls)
        file_syncs = [i for i, c in enumerate(calls) if c[:2] == ["fsync", "REG"]]
        self.assertGreaterEqual(len(file_syncs), 2, calls)
        self.assertLess(max(file_syncs[:2]), renames[0], "both outputs are flushed first")
        # ... and before either gets a temporary name (O_TMPFILE): a kill during a long fsync
        # leaves no .NAME.tmp-* behind (found by the issue-20 retest with a delayed fsync).
        links = [i for i, c in enumerate(calls) if c[0] == "linkat"]
        if links:
            self.assertLess(max(file_syncs[:2]), min(links), calls)
        for r in renames:
            after = [c for c in calls[r + 1:] if c[:2] == ["fsync", "DIR"]]
            self.assertTrue(after, "no directory fsync after %s" % calls[r])
            self.assertEqual(os.path.realpath(after[0][2]), os.path.realpath(self.dir))
        # The directory of --out is flushed before --save-weights is renamed.
        self.assertIn(["fsync", "DIR"], [c[:2] for c in calls[renames[0]:renames[1]]])

    @unittest.skipIf(not hasattr(os, "mkfifo"), "needs FIFOs")
    def test_fifo_inputs_are_refused_without_blocking(self):
        """Item 6: --ids or --weights naming a FIFO with no writer blocked in open() forever."""
        fifo = self.path("pipe")
        os.mkfifo(fifo)
        out = self.path("out.npy")
        for args in (self.embed(out, ids=fifo), self.embed(out, "--weights", fifo)):
            with self.subTest(args=args):
                rc, so, se = run(*args, timeout=30)
                self.assertEqual(rc, 1, se)
                self.assertIn("a FIFO (named pipe)", se)
                self.assertIn("'%s'" % fifo, se)
                self.assertNoOutput(out)

    def test_absurd_npy_header_is_refused_before_it_is_read(self):
        """Item 8: a format-2.0 header claiming 1.5 GiB was allocated and read (1.6 GB RSS);
        a sparse file made it 3 GB. Now it is refused from the length field alone."""
        ids = self.path("huge.npy")
        claimed = 3 << 29  # 1.5 GiB
        with open(ids, "wb") as f:
            f.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", claimed))
            f.truncate(12 + claimed + 64)  # sparse: no disk used
        out = self.path("out.npy")
        start = time.monotonic()
        self.assertFails(1, self.embed(out, ids=ids), "more than the limit of 262144 bytes",
                         out=out)
        self.assertLess(time.monotonic() - start, 10)

    def test_overlong_out_name_is_refused_before_the_work(self):
        """Item 9: a name longer than NAME_MAX failed only at the final rename."""
        name_max = os.pathconf(self.dir, "PC_NAME_MAX")
        for out in (self.path("n" * (name_max + 1) + ".npy"),
                    self.path("d" * (name_max + 1) + "/out.npy")):
            with self.subTest(out=out[-20:]):
                rc, so, se = run(*self.embed(out))
                self.assertEqual(rc, 1, se)
                self.assertIn("--out", se)
                self.assertIn(os.strerror(36), se)  # ENAMETOOLONG
                self.assertEqual(so, "", "refused before anything was read or printed")
                self.assertEqual(os.listdir(self.dir), ["ids.npy"])

    def test_read_only_out_is_refused_even_as_root(self):
        """Item 13: decided from the mode bits: access() grants root everything, so a 0444
        --out used to be replaced when running as root."""
        out = self.path("out.npy")
        with open(out, "wb") as f:
            f.write(b"read only")
        os.chmod(out, 0o444)
        self.assertFails(1, self.embed(out), "read-only", "--out")
        self.assertEqual(file_bytes(out), b"read only")
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o444)

    def test_dash_is_refused(self):
        """Item 14: --out - wrote a file named '-'; it is a usage error (./- is the file)."""
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            self.assertUsageError(self.embed("-"), "--out '-'", "./-")
            self.assertUsageError(self.embed(self.path("o.npy"), "--save-weights", "-"),
                                  "--save-weights '-'")
            self.assertFalse(os.path.exists("-"))
            rc, so, se = run(*self.embed("./-", "--quiet"))
            self.assertEqual(rc, 0, se)
            self.assertTrue(os.path.isfile("-"))
        finally:
            os.chdir(cwd)

    def test_new_out_gets_0666_minus_umask_and_a_replaced_file_keeps_its_mode(self):
        """Mutation gap: a new --out gets 0666 & ~umask (not mkstemp's 0600), a replaced 0640
        file stays 0640, both for --out and --save-weights."""
        out, w = self.path("out.npy"), self.path("w.st")
        p = subprocess.run([TOKEMB] + [str(a) for a in self.embed(out, "--save-weights", w)],
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: os.umask(0o002))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o664)
        self.assertEqual(stat.S_IMODE(os.stat(w).st_mode), 0o664)
        os.chmod(out, 0o640)
        os.chmod(w, 0o640)
        p = subprocess.run([TOKEMB] + [str(a) for a in self.embed(out, "--save-weights", w)],
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: os.umask(0o002))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o640)
        self.assertEqual(stat.S_IMODE(os.stat(w).st_mode), 0o640)



def main():
    global TOKEMB, WORKDIR
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokemb", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--shim", default=None)
    args, rest = parser.parse_known_args()
    global SHIM
    SHIM = os.path.abspath(args.shim) if args.shim else None
    TOKEMB = os.path.abspath(args.tokemb)
    WORKDIR = os.path.abspath(args.workdir)
    os.makedirs(WORKDIR, exist_ok=True)
    if os.name == "posix":
        # A runner started in the background by a non-interactive shell inherits SIGINT ignored,
        # and tokemb keeps an ignored SIGINT ignored (on purpose): give the runs under test the
        # default disposition, which the tests that send SIGINT expect.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
