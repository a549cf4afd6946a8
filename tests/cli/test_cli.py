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

    def test_commands(self):
        self.assertFails(2, [], "no command given")
        self.assertFails(2, ["frob"], "unknown command 'frob'")
        self.assertFails(2, ["demo", "--vocab", 3], "unknown option '--vocab'")


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
        self.assertFails(1, self.embed(f), "31 uint16 tokens", "(truncated)",
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
        # Deterministic: the process is stopped (SIGSTOP) as soon as its temporary output exists,
        # which is before its first window, so that SIGINT arrives with ~500000 windows (one
        # write each, at least a second of work on any machine) still to go; SIGCONT lets it see
        # the signal at its next window.
        f = self.path("big.bin")
        write_raw_u16(f, [(i * 7919) % 50257 for i in range(500001)])
        out = self.path("out.npy")
        p = subprocess.Popen([TOKEMB, "embed", "--ids", f, "--vocab", "50257", "--dim", "16",
                              "--context", "1", "--stride", "1", "--batch", "1", "--out", out,
                              "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(out + ".tmp") and p.poll() is None and time.monotonic() < deadline:
            pass  # busy wait: the stop must land early in the run
        p.send_signal(signal.SIGSTOP)
        try:
            self.assertIsNone(p.poll(), "the run ended before it could be stopped")
            self.assertFalse(os.path.exists(out), "the run finished before it could be stopped")
            p.send_signal(signal.SIGINT)
        finally:
            p.send_signal(signal.SIGCONT)
        so, se = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 130, se)
        self.assertIn("interrupted by signal", se)
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


def main():
    global TOKEMB, WORKDIR
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokemb", required=True)
    parser.add_argument("--workdir", required=True)
    args, rest = parser.parse_known_args()
    TOKEMB = os.path.abspath(args.tokemb)
    WORKDIR = os.path.abspath(args.workdir)
    os.makedirs(WORKDIR, exist_ok=True)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
