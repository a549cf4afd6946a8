#!/usr/bin/env python3
"""Mutation check of the CPU code (issue 17): is every listed bug caught by some cpu test?

    scripts/mutate.py [--list scripts/mutants.txt] [--work DIR] [--jobs 2] [--only SUBSTRING]

Copies the repository's tracked files, as they are in the working tree, to a scratch directory
(never touching the working tree), configures a CPU-only Release build there and builds the test
binary once. Then, for each mutant of the list: applies it (its search text must occur exactly
once in its file), rebuilds incrementally, runs the tests named by the mutant's filter and, if
they all pass, every cpu test of the binary; restores the file. A mutant is "killed" when a test
fails (or the run times out), "survived" when every cpu test passes, "error" when its search text
is missing or ambiguous or it does not compile (a stale list entry, to be fixed).

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", default=os.path.join(ROOT, "scripts", "mutants.txt"))
    ap.add_argument("--work", help="scratch directory to keep between runs (default: a temp dir)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", help="run only the mutants whose name contains this")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test run")
    args = ap.parse_args()

    mutants = parse_list(args.list)
    if args.only:
        mutants = [m for m in mutants if args.only in m["name"]]
    work = args.work or tempfile.mkdtemp(prefix="tokemb-mutate-")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    src = copy_tree(work)
    build = os.path.join(work, "build")
    binary = os.path.join(build, "tests", "tokemb_tests")
    print(f"== mutate: {len(mutants)} mutants, scratch copy in {work}", flush=True)
    if not os.path.isfile(os.path.join(build, "build.ninja")):
        rc, out = run(["cmake", "-S", src, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                       "-DTOKEMB_WITH_CUDA=OFF", "-DTOKEMB_BUILD_BENCHMARKS=OFF"])
        if rc != 0:
            sys.exit("configure failed:\n" + out)
    ninja = ["cmake", "--build", build, "-j", str(args.jobs), "--target", "tokemb_tests"]
    rc, out = run(ninja)
    if rc != 0:
        sys.exit("the unmutated build fails:\n" + out[-4000:])
    rc, out = run([binary, f"--gtest_filter={CPU_FILTER}"], timeout=args.timeout)
    if rc != 0:
        sys.exit("the unmutated cpu tests fail:\n" + out[-4000:])
    print(f"   baseline build and cpu tests: {time.time() - t0:.0f} s", flush=True)

    results = []
    for i, m in enumerate(mutants, 1):
        t = time.time()
        path = os.path.join(src, m["file"])
        status, note = None, ""
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
                rc, out = run(ninja)
                if rc != 0:
                    status, note = "error", "does not compile"
                else:
                    rc, out = run([binary, f"--gtest_filter={m['tests']}"], timeout=args.timeout)
                    if rc == "timeout" or rc != 0:
                        status, note = "killed", f"by {m['tests']}" + (" (timeout)" if rc == "timeout" else "")
                    else:
                        rc, out = run([binary, f"--gtest_filter={CPU_FILTER}"], timeout=args.timeout)
                        if rc == "timeout" or rc != 0:
                            status, note = "killed", f"by the cpu suite, not by {m['tests']}"
                        else:
                            status = "survived"
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
        results.append((m, status, note))
        print(f"[{i}/{len(mutants)}] {status.upper():8} {m['name']}  ({m['file']}, "
              f"{time.time() - t:.0f} s) {note}", flush=True)

    # Leave the scratch build matching the unmutated sources.
    run(ninja)
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
