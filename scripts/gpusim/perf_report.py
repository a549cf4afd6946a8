#!/usr/bin/env python3
"""Summarises tokemb_sim_perf's run under GPGPU-Sim's performance model (scripts/sim-check.sh
--perf): for each measured part (between "@@sim_perf begin NAME" and "@@sim_perf end NAME"), the
simulated cycles of every kernel launched in it (the simulator prints "kernel_name = ..." and
"gpu_sim_cycle = N" after each kernel), then each case's total relative to the copy of the same
minimum bytes that ran just before it.

Usage: perf_report.py SIMULATOR_OUTPUT [--markdown FILE]
Cycles are the simulator's (an RTX 2060-like configuration, SM75_RTX2060), not an H200's: the
ratio to the copy is the signal, not the absolute number."""
import argparse
import re
import subprocess
import sys


def short(kernel):
    """A readable kernel name from the mangled one (c++filt, from binutils): the function's own
    name and its template arguments, e.g. tile_reduce<float, 4, false, false>."""
    try:
        name = subprocess.run(["c++filt", kernel], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return kernel
    # Cut the parameter list: the '(' at template depth 0 after the name.
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0 and name[i - 1] not in " :":
            name = name[:i]
            break
    name = name.split(" ", 1)[1] if name.startswith("void ") else name
    head = name.split("<", 1)[0]
    base = head.rsplit("::", 1)[-1]
    args = name[len(head):]
    return base + (args if len(args) <= 40 else "<...>")


def parse(lines):
    parts = []  # (name, min_bytes, [(kernel, cycles)])
    current = None
    kernel = None
    for line in lines:
        m = re.match(r"@@sim_perf begin (\S+)(?: min_bytes=(\d+))?", line)
        if m:
            current = (m.group(1), float(m.group(2) or 0), [])
            continue
        if line.startswith("@@sim_perf end"):
            if current is not None:
                parts.append(current)
            current = None
            continue
        m = re.match(r"kernel_name = (\S+)", line)
        if m:
            kernel = m.group(1)
            continue
        m = re.match(r"gpu_sim_cycle = (\d+)", line)
        if m and current is not None and kernel is not None:
            current[2].append((short(kernel), int(m.group(1))))
            kernel = None
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    with open(a.log, errors="replace") as f:
        parts = parse(f)
    if not parts:
        print("perf_report: no @@sim_perf sections in " + a.log, file=sys.stderr)
        return 1
    copies = {name[len("copy/"):]: sum(c for _, c in ks) for name, _, ks in parts
              if name.startswith("copy/")}
    rows = []
    for name, min_bytes, kernels in parts:
        if name.startswith("copy/"):
            continue
        total = sum(c for _, c in kernels)
        copy = copies.get(name)
        ratio = total / copy if copy else float("nan")
        rows.append((name, min_bytes, total, copy, ratio, kernels))
    out = ["| case | min bytes | cycles | copy cycles | cycles / copy | kernels (cycles) |",
           "|---|---|---|---|---|---|"]
    for name, min_bytes, total, copy, ratio, kernels in rows:
        ks = ", ".join(f"{k} {c}" for k, c in kernels)
        out.append(f"| {name} | {min_bytes:.0f} | {total} | {copy} | {ratio:.2f} | {ks} |")
    text = "\n".join(out)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
