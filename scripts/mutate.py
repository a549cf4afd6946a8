#!/usr/bin/env python3
"""Mutation check of the CPU code (issue 17): is every listed bug caught by some cpu test?

    scripts/mutate.py [--list scripts/mutants.txt] [--work DIR] [--jobs 2] [--only SUBSTRING]

Copies the repository's tracked files, as they are in the working tree, to a scratch directory
(never touching the working tree), configures a CPU-only Release build there and builds the test
binary, the `tokemb` CLI and the Python package once (the package into a venv of Debian's
interpreter made in the scratch directory, linked against the scratch build, as scripts/test.sh
does). Then, for each mutant of the list: applies it (its search text must occur exactly once in
its file), rebuilds incrementally (the C++ targets, and the Python extension when the mutant is
in the library or the bindings; a mutant in python/tokemb/ is copied into the installed
package), runs the tests named by the mutant and, if they all pass, the whole cpu suite: the cpu
tests of the binary, the CLI tests (tests/cli/test_cli.py) and pytest (tests/python); restores
the file. A mutant is "killed" when a test fails (or the run times out), "survived" when the
whole suite passes, "error" when its search text is missing or ambiguous or it does not compile
(a stale list entry, to be fixed).

A mutant's "tests:" are whitespace-separated items: a --gtest_filter of tokemb_tests, "cli" or
"cli:PATTERN" (test_cli.py's unittest -k PATTERN), "pytest" or "pytest:ARGS" (pytest on
tests/python with ARGS, e.g. pytest:test_files.py or pytest:-k=nul). --no-python skips the
Python package (mutants whose tests are all pytest then count as errors; the fallback suite
leaves pytest out).

Exit status 0 only when every mutant is killed. Not run in CI. Measured on 2 shared cores: the
first (full) build about 5 minutes, then 2-25 s per mutant (8 s on average: one or two objects,
a link and the tests), so about 10-11 minutes for the 40 mutants of the list, 6 minutes with a
kept --work build. --work keeps the scratch build between runs (only changed files are recopied).
The list names source files by path: when files move, update the "file:" lines of the list.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_FILTER = "-Gpu*:*/Gpu*"


def parse_list(path):
    mutants, cur = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            if line.strip() == "---":
                if cur:
                    mutants.append(cur)
                cur = {}
                continue
            if not line.strip():
                continue
            key, sep, value = line.partition(":")
            if not sep or key not in ("name", "file", "find", "replace", "tests"):
                sys.exit(f"{path}:{lineno}: expected 'field: value', got {line!r}")
            value = value[1:] if value.startswith(" ") else value
            cur[key] = value.replace("\\n", "\n")
            cur.setdefault("line", lineno)
    if cur:
        mutants.append(cur)
    for m in mutants:
        missing = [k for k in ("name", "file", "find", "replace", "tests") if k not in m]
        if missing:
            sys.exit(f"{path}:{m['line']}: mutant lacks {', '.join(missing)}")
    return mutants


def copy_tree(work):
    """Copies tracked files (working-tree contents) into work/src; only changed files are rewritten."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    src = os.path.join(work, "src")
    for rel in filter(None, files):
        a, b = os.path.join(ROOT, rel), os.path.join(src, rel)
        if not os.path.isfile(a):
            continue
        if os.path.isfile(b):
            with open(a, "rb") as fa, open(b, "rb") as fb:
                if fa.read() == fb.read():
                    continue
        os.makedirs(os.path.dirname(b), exist_ok=True)
        shutil.copy2(a, b)
    return src


def run(cmd, timeout=None, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", ""


# Where a mutant lives decides what must be rebuilt for the tests to see it.
LIBRARY_DIRS = ("host/", "core/", "include/", "kernels/", "python/src/", "CMakeLists.txt", "cmake/")


class Suite:
    """Builds and runs the three test suites of the scratch copy: the cpu tests of tokemb_tests,
    the CLI tests and pytest (in a venv with the package installed from the scratch build)."""

    def __init__(self, src, build, work, args):
        self.src, self.build, self.work, self.args = src, build, work, args
        self.binary = os.path.join(build, "tests", "tokemb_tests")
        self.cli = os.path.join(build, "tools", "tokemb")
        self.shim = os.path.join(build, "tools", "cli_tests", "tokemb_fsync_shim.so")
        self.venv = os.path.join(work, "venv")
        self.vpy = os.path.join(self.venv, "bin", "python")
        self.site_pkg = None
        self.python_dirty = False

    def fallback_items(self):
        return ["cli"] + ([] if self.args.no_python else ["pytest"])

    def install_python(self, first=False):
        """(Re)installs the package from the scratch copy; returns the error output or ''."""
        if first and not os.path.isfile(self.vpy):
            rc, out = run([self.args.python, "-m", "venv", "--system-site-packages", self.venv])
            if rc != 0:
                return out
        if first:
            rc, _ = run([self.vpy, "-c", "import nanobind, scikit_build_core"])
            if rc != 0:
                rc, out = run([self.vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "scikit-build-core>=0.10", "nanobind>=2.4"])
                if rc != 0:
                    return out
        prefix = os.path.join(self.build, "prefix")
        rc, out = run(["cmake", "--install", self.build, "--prefix", prefix])
        if rc != 0:
            return out
        rc, out = run([self.vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                       "--no-build-isolation", "--no-deps",
                       "--config-settings=build-dir=" + os.path.join(self.work, "python"),
                       "--config-settings=cmake.define.TOKEMB_PYTHON_PREBUILT=" + prefix, self.src])
        if rc != 0:
            return out
        rc, out = run([self.vpy, "-c", "import os, tokemb; print(os.path.dirname(tokemb.__file__))"],
                      cwd=self.work)
        if rc != 0:
            return out
        self.site_pkg = out.strip().splitlines()[-1]
        return ""

    def rebuild(self, rel, ninja):
        """Rebuilds what a change to the file rel affects; returns the error output or ''."""
        rc, out = run(ninja)
        if rc != 0:
            return out or "build failed"
        if self.args.no_python:
            return ""
        if rel.startswith("python/tokemb/"):
            # Pure Python: the installed copy is replaced (restore() puts the original back).
            shutil.copy2(os.path.join(self.src, rel),
                         os.path.join(self.site_pkg, os.path.relpath(rel, "python/tokemb")))
        elif rel.startswith(LIBRARY_DIRS):
            self.python_dirty = True  # the installed extension holds the mutant
            return self.install_python()
        return ""

    def restore(self, rel, ninja):
        """After the file rel was restored: puts the unmutated code back where the tests see it."""
        if self.args.no_python or self.site_pkg is None:
            return
        if rel.startswith("python/tokemb/"):
            shutil.copy2(os.path.join(self.src, rel),
                         os.path.join(self.site_pkg, os.path.relpath(rel, "python/tokemb")))
        elif self.python_dirty:
            # The extension links the library statically: rebuild it unmutated, then reinstall,
            # so that the next mutant's pytest run does not see this one.
            run(ninja)
            if not self.install_python():
                self.python_dirty = False

    def run_items(self, items):
        """Runs each item; returns (item, output) for the first that fails, else None."""
        for item in items:
            if item == "*":
                cmd, label = [self.binary, f"--gtest_filter={CPU_FILTER}"], "the cpu tests"
            elif item == "cli" or item.startswith("cli:"):
                cmd = [sys.executable, os.path.join(self.src, "tests", "cli", "test_cli.py"),
                       "--tokemb", self.cli, "--shim", self.shim,
                       "--workdir", os.path.join(self.work, "cli-work")]
                if item.startswith("cli:"):
                    cmd += ["-k", item[4:]]
                label = "the CLI tests" if item == "cli" else item
            elif item == "pytest" or item.startswith("pytest:"):
                cmd = [self.vpy, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x"]
                extra = item[7:].split(",") if item.startswith("pytest:") else []
                paths = [e for e in extra if e and not e.startswith("-")]
                opts = [e.replace("=", " ", 1).split(" ", 1) if e.startswith("-k=") else [e]
                        for e in extra if e.startswith("-")]
                cmd += [x for o in opts for x in o]
                cmd += [os.path.join(self.src, "tests", "python", p) for p in paths] or \
                    [os.path.join(self.src, "tests", "python")]
                label = "pytest" if item == "pytest" else item
            else:
                cmd, label = [self.binary, f"--gtest_filter={item}"], item
            rc, out = run(cmd, timeout=self.args.timeout, cwd=self.work)
            if rc == "timeout":
                return (label + " (timeout)", out)
            if rc != 0:
                return (label, out)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", default=os.path.join(ROOT, "scripts", "mutants.txt"))
    ap.add_argument("--work", help="scratch directory to keep between runs (default: a temp dir)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", help="run only the mutants whose name contains this")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test run")
    ap.add_argument("--no-python", action="store_true",
                    help="do not build the Python package nor run pytest")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for the venv (Debian's, with its torch/numpy/pytest)")
    args = ap.parse_args()

    mutants = parse_list(args.list)
    if args.only:
        mutants = [m for m in mutants if args.only in m["name"]]
    work = args.work or tempfile.mkdtemp(prefix="tokemb-mutate-")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    src = copy_tree(work)
    build = os.path.join(work, "build")
    print(f"== mutate: {len(mutants)} mutants, scratch copy in {work}", flush=True)
    if not os.path.isfile(os.path.join(build, "build.ninja")):
        rc, out = run(["cmake", "-S", src, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                       "-DTOKEMB_WITH_CUDA=OFF", "-DTOKEMB_BUILD_BENCHMARKS=OFF"])
        if rc != 0:
            sys.exit("configure failed:\n" + out)
    ninja = ["cmake", "--build", build, "-j", str(args.jobs), "--target", "tokemb_tests",
             "tokemb_cli", "tokemb_fsync_shim"]
    rc, out = run(ninja)
    if rc != 0:
        sys.exit("the unmutated build fails:\n" + out[-4000:])
    suite = Suite(src, build, work, args)
    if not args.no_python:
        err = suite.install_python(first=True)
        if err:
            sys.exit("the Python package does not build:\n" + err[-4000:])
    failed = suite.run_items(["*"] + suite.fallback_items())
    if failed:
        sys.exit("the unmutated cpu tests fail (" + failed[0] + "):\n" + failed[1][-4000:])
    print(f"   baseline build and cpu tests: {time.time() - t0:.0f} s", flush=True)

    results = []
    for i, m in enumerate(mutants, 1):
        t = time.time()
        path = os.path.join(src, m["file"])
        status, note = None, ""
        items = m["tests"].split()
        if args.no_python and items and all(it.startswith("pytest") for it in items):
            status, note = "error", "its tests are pytest's, and --no-python was given"
        try:
            with open(path, encoding="utf-8") as f:
                original = f.read()
        except OSError as e:
            status, note = "error", f"cannot read {m['file']}: {e.strerror}"
        if status is None:
            n = original.count(m["find"])
            if n != 1:
                status, note = "error", f"search text occurs {n} times in {m['file']}"
        if status is None:
            try:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original.replace(m["find"], m["replace"]))
                err = suite.rebuild(m["file"], ninja)
                if err:
                    status, note = "error", "does not compile"
                else:
                    targeted = [it for it in items if not (args.no_python and it.startswith("pytest"))]
                    failed = suite.run_items(targeted)
                    if failed:
                        status, note = "killed", f"by {failed[0]}"
                    else:
                        failed = suite.run_items(["*"] + suite.fallback_items())
                        if failed:
                            status, note = "killed", f"by {failed[0]}, not by {m['tests']}"
                        else:
                            status = "survived"
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
                suite.restore(m["file"], ninja)
        results.append((m, status, note))
        print(f"[{i}/{len(mutants)}] {status.upper():8} {m['name']}  ({m['file']}, "
              f"{time.time() - t:.0f} s) {note}", flush=True)

    # Leave the scratch build (and the installed package) matching the unmutated sources.
    run(ninja)
    if not args.no_python and suite.python_dirty:
        suite.install_python()  # (restore() failed to; try once more)
    counts = {s: sum(1 for _, st, _ in results if st == s) for s in ("killed", "survived", "error")}
    print(f"== mutate: {counts['killed']} killed, {counts['survived']} survived, "
          f"{counts['error']} error(s) in {time.time() - t0:.0f} s")
    for m, st, note in results:
        if st != "killed":
            print(f"   {st}: {m['name']} ({m['file']}, list line {m['line']}) {note}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if counts["survived"] == 0 and counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
