#!/usr/bin/env python3
"""Turns tokemb_bench's Google Benchmark JSON (and, if present, bench/torch_baseline.py's JSON)
into a Markdown report and a PNG chart.

  report.py --bench bench.json [--torch torch.json] [--torch torch-cpu.json] [--env environment.txt]
            --out-md report.md [--out-png report.png] [--out-json merged.json]

--torch may be given twice: the GPU run of bench/torch_baseline.py and its --device cpu run, whose
cpu_fwd / cpu_bwd rows go beside tokemb's CPU-reference rows.

Standard library only; matplotlib is optional (without it the report says so and has no chart).
Works with our numbers alone (no PyTorch JSON, or one that says PyTorch was unavailable) and
with a CPU-only run (no GPU rows).
"""

import argparse
import json
import os
import sys

GPU_OPS = ("fwd", "bwd_atomic", "bwd_det")
CPU_OPS = ("cpu_fwd", "cpu_bwd")
TARGET_SHAPE = "gpt2_b64"
TARGET_CASES = [f"{TARGET_SHAPE}/{dt}/i64/{d}" for dt in ("f32", "bf16") for d in ("uniform", "zipf", "same")]
REGENERATE = "scripts/bench.sh RESULTS_DIR   # then copy RESULTS_DIR/report.md here"


def load_bench(path):
    with open(path) as f:
        doc = json.load(f)
    rows = {}
    for b in doc.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue  # with --benchmark_repetitions, keep the medians only
        name = b.get("run_name") or b["name"]
        name = name.replace("/manual_time", "")
        parts = name.split("/")
        if len(parts) != 5:
            continue
        op, key = parts[0], "/".join(parts[1:])
        r = {"op": op, "key": key, "shape": parts[1], "dtype": parts[2], "ids": parts[3], "dist": parts[4]}
        if b.get("error_occurred") or b.get("skipped"):
            r["error"] = b.get("error_message") or b.get("skip_message") or "skipped"
        else:
            scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
            r["mean_ms"] = b["real_time"] * scale
            r["iterations"] = b.get("iterations")
            for k, v in b.items():
                if isinstance(v, (int, float)) and k not in ("real_time", "cpu_time"):
                    r[k] = v
            r.setdefault("median_ms", r["mean_ms"])
        rows[(op, key)] = r
    return doc.get("context", {}), rows


def load_torch(path):
    if not path or not os.path.exists(path):
        return {"status": "no PyTorch JSON"}, {}
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        return {"status": f"PyTorch JSON unreadable ({e})"}, {}
    res = {}
    for r in doc.get("results", []):
        res[(r["case"], r["op"], r["variant"])] = r
    return doc.get("context", {}), res


def load_torch_runs(paths):
    """(GPU context, CPU context or None, merged results) of any number of torch_baseline.py
    JSON files: the --device cpu run is told apart by its context's "device"."""
    gpu_ctx, cpu_ctx, res = None, None, {}
    for path in paths or [None]:
        ctx, rows = load_torch(path)
        res.update(rows)
        if ctx.get("device") == "cpu":
            cpu_ctx = ctx
        elif gpu_ctx is None or gpu_ctx.get("status") != "ok":
            gpu_ctx = ctx
    return gpu_ctx or {"status": "no PyTorch JSON for the GPU"}, cpu_ctx, res


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v:.3f}" if v >= 0.1 else f"{v:.4f}"


def fmt(v, spec, suffix=""):
    return "—" if v is None else f"{v:{spec}}{suffix}"


def torch_ms(tres, key, op, variant):
    """(ms or None, note or None) for one PyTorch measurement."""
    r = tres.get((key, op, variant))
    if r is None:
        return None, None
    if r.get("ms") is None:
        return None, r.get("status", "not run")
    return r["ms"], None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="tokemb_bench --benchmark_out JSON")
    ap.add_argument("--torch", action="append",
                    help="bench/torch_baseline.py JSON (optional; twice for its GPU and --device cpu runs)")
    ap.add_argument("--env", help="text file with nvidia-smi output etc. (optional)")
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-png")
    ap.add_argument("--out-json", help="merged rows as JSON (optional)")
    args = ap.parse_args()

    ctx, rows = load_bench(args.bench)
    tctx, cpu_tctx, tres = load_torch_runs(args.torch)
    keys = []
    for (op, key) in rows:
        if key not in keys:
            keys.append(key)
    gpu_rows = [(op, k) for k in keys for op in GPU_OPS if (op, k) in rows]
    cpu_rows = [(op, k) for k in keys for op in CPU_OPS if (op, k) in rows]

    md = []
    gpu = ctx.get("gpu", "none")
    md.append("## Benchmarks")
    md.append("")
    md.append(f"- GPU: **{gpu}**, NVIDIA driver {ctx.get('nvidia_driver', 'n/a')}, "
              f"CUDA runtime {ctx.get('cuda_runtime', 'n/a')}; date {ctx.get('date', 'n/a')}; "
              f"host {ctx.get('host_name', 'n/a')} ({ctx.get('num_cpus', '?')} CPUs)")
    if ctx.get("gpu_rows", "").startswith("not registered"):
        md.append(f"- GPU rows {ctx['gpu_rows']}: CPU-reference numbers only.")
    if tctx.get("status") == "ok":
        md.append(f"- PyTorch {tctx.get('torch')} (CUDA {tctx.get('cuda')}, Triton {tctx.get('triton')}) on "
                  f"{tctx.get('gpu')}, timed with {tctx.get('timer')}")
    elif gpu_rows:
        md.append(f"- PyTorch columns empty: {tctx.get('status', 'no PyTorch JSON')}")
    if cpu_tctx and cpu_tctx.get("status") == "ok":
        md.append(f"- PyTorch {cpu_tctx.get('torch')} on the CPU ({cpu_tctx.get('cpu')}, "
                  f"{cpu_tctx.get('threads')} thread(s)) beside the CPU reference, timed with "
                  f"{cpu_tctx.get('timer')}")
    elif cpu_rows:
        md.append("- PyTorch CPU columns empty: "
                  + (cpu_tctx.get("status", "?") if cpu_tctx else
                     "no `torch_baseline.py --device cpu` JSON"))
    if args.env and os.path.exists(args.env):
        with open(args.env) as f:
            env = " / ".join(line.strip() for line in f if line.strip())
        md.append(f"- environment: {env[:400]}")
    md.append(f"- regenerate: `{REGENERATE}`")
    md.append("")

    merged = []
    if gpu_rows:
        md.append("Times are medians in ms; tokemb's backward rows include zeroing both f32 gradient tables, like "
                  "PyTorch's (which returns fresh gradients, in dout's dtype). GB/s counts the minimum bytes "
                  "(bench/cases.hpp); *% copy* is against a device-to-device copy of the same bytes in the "
                  "same run; *× base* is the speedup over the unfused forward / naive one-atomic-per-element "
                  "backward; *× CPU* over the single-threaded CPU reference at the same shape; *vs compiled* "
                  "is tokemb's time divided by torch.compile's (below 1 is faster).")
        md.append("")
        md.append("| case | op | tokemb ms | GB/s | % copy | baseline ms | × base | torch eager | torch compiled "
                  "| vs compiled | × CPU | check |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for op, key in gpu_rows:
            r = rows[(op, key)]
            tor_op = "fwd" if op == "fwd" else "bwd"
            te, te_note = torch_ms(tres, key, tor_op, "eager")
            tc, tc_note = torch_ms(tres, key, tor_op, "compiled")
            if "error" in r:
                md.append(f"| {key} | {op} | error: {r['error'][:120]} | | | | | {fmt_ms(te)} | {fmt_ms(tc)} | | | |")
                merged.append(dict(r, torch_eager_ms=te, torch_compiled_ms=tc))
                continue
            med = r.get("median_ms")
            vs = med / tc if (tc and med) else None
            check = "ok" if r.get("check_ok", 1) == 1 else f"WRONG ({int(r.get('check_bad', 0))} bad)"
            md.append(
                f"| {key} | {op} | {fmt_ms(med)} | {fmt(r.get('GBps'), '.0f')} | {fmt(r.get('pct_of_copy_bw'), '.1f')} "
                f"| {fmt_ms(r.get('baseline_ms'))} | {fmt(r.get('speedup_vs_baseline'), '.2f')} "
                f"| {fmt_ms(te) if te else (te_note or '—')[:24]} | {fmt_ms(tc) if tc else (tc_note or '—')[:24]} "
                f"| {fmt(vs, '.2f')} | {fmt(r.get('speedup_vs_cpu'), '.0f')} | {check} |")
            merged.append(dict(r, torch_eager_ms=te, torch_compiled_ms=tc, vs_compiled=vs))
        md.append("")
        md.extend(target_section(rows, tres))
        extra = [(k, rows[("bwd_atomic", k)]) for k in keys if ("bwd_atomic", k) in rows
                 and "bwd_only_ms" in rows[("bwd_atomic", k)]]
        if extra:
            md.append("Backward alone (accumulating into existing gradients, no zeroing; GB/s from ids + dout + "
                      "read-modify-write of the distinct token rows and the T position rows):")
            md.append("")
            md.append("| case | atomic ms | atomic GB/s | deterministic ms | deterministic GB/s "
                      "| atomic: memsets + accumulate ms | atomic: overwrite ms |")
            md.append("|---|---|---|---|---|---|---|")
            for k, r in extra:
                d = rows.get(("bwd_det", k), {})
                md.append(f"| {k} | {fmt_ms(r.get('bwd_only_ms'))} | {fmt(r.get('bwd_only_GBps'), '.0f')} "
                          f"| {fmt_ms(d.get('bwd_only_ms'))} | {fmt(d.get('bwd_only_GBps'), '.0f')} "
                          f"| {fmt_ms(r.get('memset_accumulate_ms'))} | {fmt_ms(r.get('median_ms'))} |")
            md.append("")
            md.append("The last two columns are two ways to get fresh gradients in atomic mode: zeroing "
                      "with memsets and then the accumulating kernel, or the overwrite (sorted ids, each "
                      "token row written once), which is what the backward rows above time.")
            md.append("")
        drops = [k for k in keys if ("fwd_drop", k) in rows or ("bwd_drop", k) in rows]
        if drops:
            md.append("Fused dropout, p = 0.1, against the same call at p = 0 (target: at most 5 % slower; "
                      "backward in atomic mode, zeroing included). PyTorch's `F.dropout(F.embedding(ids, wte) "
                      "+ wpe[:T], 0.1)`, where timed, is in the op `fwd_drop` / `bwd_drop` columns:")
            md.append("")
            md.append("| case | fwd ms | fwd vs p = 0 | bwd ms | bwd vs p = 0 | torch eager fwd | torch compiled fwd "
                      "| within 5 % |")
            md.append("|---|---|---|---|---|---|---|---|")
            for k in drops:
                f = rows.get(("fwd_drop", k), {})
                b = rows.get(("bwd_drop", k), {})
                te, _ = torch_ms(tres, k, "fwd_drop", "eager")
                tc, _ = torch_ms(tres, k, "fwd_drop", "compiled")
                ratios = [r.get("vs_no_dropout") for r in (f, b) if r.get("vs_no_dropout") is not None]
                ok = "—" if not ratios else ("PASS" if max(ratios) <= 1.05 else "MISS")
                md.append(f"| {k} | {fmt_ms(f.get('median_ms'))} | {fmt(f.get('vs_no_dropout'), '.3f')} "
                          f"| {fmt_ms(b.get('median_ms'))} | {fmt(b.get('vs_no_dropout'), '.3f')} "
                          f"| {fmt_ms(te)} | {fmt_ms(tc)} | {ok} |")
            md.append("")
        mism = []
        for k in keys:
            for op in ("fwd", "bwd"):
                t = tres.get((k, op, "eager"))
                o = rows.get(("fwd" if op == "fwd" else "bwd_atomic", k), {})
                if t and o.get("distinct_tokens") is not None and t.get("distinct_tokens") is not None \
                        and int(o["distinct_tokens"]) != int(t["distinct_tokens"]):
                    mism.append(k)
        if mism:
            md.append(f"**Warning:** PyTorch saw different ids (distinct-token counts differ) for: {', '.join(sorted(set(mism)))}")
            md.append("")

    if cpu_rows:
        md.append("CPU reference (single thread, same shapes; backward includes zeroing both gradient tables), "
                  "beside PyTorch eager on CPU tensors (`F.embedding(ids, wte) + wpe[off:off+T]`; "
                  "`embedding_dense_backward + dout.sum(0)`, fresh gradients in dout's dtype; "
                  "`bench/torch_baseline.py --device cpu`); *vs torch* is tokemb's time divided by "
                  "PyTorch's (below 1 is faster):")
        md.append("")
        md.append("| case | op | ms | GB/s | torch eager ms | vs torch |")
        md.append("|---|---|---|---|---|---|")
        for op, key in cpu_rows:
            r = rows[(op, key)]
            te, te_note = torch_ms(tres, key, op, "eager")
            torch_cell = fmt_ms(te) if te is not None else (te_note or "—")[:40]
            if "error" in r:
                md.append(f"| {key} | {op} | error: {r['error'][:120]} | | {torch_cell} | |")
                merged.append(dict(r, torch_eager_ms=te))
            else:
                med = r.get("median_ms")
                vs = med / te if (te and med) else None
                md.append(f"| {key} | {op} | {fmt_ms(med)} | {fmt(r.get('GBps'), '.2f')} | {torch_cell} "
                          f"| {fmt(vs, '.2f')} |")
                merged.append(dict(r, torch_eager_ms=te, vs_torch=vs))
        md.append("")

    # bench/torch_baseline.py's whole-step rows: forward + backward through autograd.
    steps = sorted({k for (k, op, _v) in tres if op == "fwdbwd"})
    if steps:
        md.append("PyTorch training step of the input layer (forward, then backward through autograd into fresh "
                  "`.grad` tensors), ms:")
        md.append("")
        md.append("| case | eager (F.embedding + add) | torch.compile | tokemb.torch module |")
        md.append("|---|---|---|---|")
        for key in steps:
            cells = []
            for variant in ("eager", "compiled", "tokemb"):
                ms, note = torch_ms(tres, key, "fwdbwd", variant)
                cells.append(fmt_ms(ms) if ms is not None else (note or "—")[:60])
            md.append(f"| {key} | " + " | ".join(cells) + " |")
        md.append("")

    if args.out_png:
        note = make_chart(args.out_png, rows, gpu_rows, cpu_rows, tres)
        if note:
            md.append(note)
        else:
            md.append(f"![tokemb benchmarks]({os.path.basename(args.out_png)})")
        md.append("")

    with open(args.out_md, "w") as f:
        f.write("\n".join(md))
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump({"context": ctx, "torch_context": tctx, "torch_cpu_context": cpu_tctx,
                       "rows": merged}, f, indent=1)
    print(f"report: {args.out_md} ({len(gpu_rows)} GPU rows, {len(cpu_rows)} CPU rows, "
          f"{sum(1 for r in tres.values() if r.get('ms') is not None)} PyTorch timings)")
    return 0


def target_section(rows, tres):
    """The issue's targets for GPT-2 small B=64, one line per check, misses included."""
    out = ["Targets (GPT-2 small, B = 64, int64 ids):", ""]
    out.append("| case | fwd ≥ 95 % copy | fwd ≤ compiled | bwd (atomic) ≤ ½ compiled | det ≤ 1.5 × atomic |")
    out.append("|---|---|---|---|---|")
    met = total = 0

    def verdict(ok, text):
        nonlocal met, total
        if ok is None:
            return f"n/a ({text})"
        total += 1
        met += ok
        return f"{'PASS' if ok else '**MISS**'} ({text})"

    for key in TARGET_CASES:
        f = rows.get(("fwd", key), {})
        a = rows.get(("bwd_atomic", key), {})
        d = rows.get(("bwd_det", key), {})
        if not (f or a or d):
            continue
        cells = []

        def wrong(r):
            """Why this row cannot pass (a wrong result or a failed run counts as a miss)."""
            if "error" in r:
                return "benchmark error"
            if r.get("check_ok", 1) != 1:
                return "result check failed"
            return None

        p = f.get("pct_of_copy_bw")
        if wrong(f):
            cells.append(verdict(False, wrong(f)))
        else:
            cells.append(verdict(None if p is None else p >= 95.0, f"{p:.1f} %" if p is not None else "not run"))
        tc, note = torch_ms(tres, key, "fwd", "compiled")
        m = f.get("median_ms")
        if wrong(f):
            cells.append(verdict(False, wrong(f)))
        else:
            cells.append(verdict(None if not (tc and m) else m <= tc,
                                 f"{fmt_ms(m)} vs {fmt_ms(tc)} ms" if (tc and m) else (note or "no PyTorch")[:40]))
        tc, note = torch_ms(tres, key, "bwd", "compiled")
        m = a.get("median_ms")
        if wrong(a):
            cells.append(verdict(False, wrong(a)))
        else:
            cells.append(verdict(None if not (tc and m) else m <= 0.5 * tc,
                                 f"{fmt_ms(m)} vs {fmt_ms(tc)} ms" if (tc and m) else (note or "no PyTorch")[:40]))
        ma, md_ = a.get("median_ms"), d.get("median_ms")
        if wrong(d) or wrong(a):
            cells.append(verdict(False, wrong(d) or wrong(a)))
        else:
            cells.append(verdict(None if not (ma and md_) else md_ <= 1.5 * ma,
                                 f"{md_ / ma:.2f} ×" if (ma and md_) else "not run"))
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(f"{met} of {total} evaluated targets met." + ("" if met == total else " Misses are listed above."))
    out.append("")
    return out


def make_chart(path, rows, gpu_rows, cpu_rows, tres):
    """Writes the PNG; returns a note for the report when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return f"(No chart: matplotlib is not available here ({type(e).__name__}); the table above is the report.)"

    def label(op, key):
        return f"{key.replace('/i64', '').replace('/', ' ')}  {op}"

    bw = [(op, k) for op, k in gpu_rows if "error" not in rows[(op, k)]] or \
         [(op, k) for op, k in cpu_rows if "error" not in rows[(op, k)]]
    timed = [k for k in dict.fromkeys(k for _, k in gpu_rows)
             if any(tres.get((k, o, v), {}).get("ms") for o in ("fwd", "bwd") for v in ("eager", "compiled"))]
    n_panels = 1 + (1 if timed else 0)
    heights = [max(2.5, 0.22 * len(bw) + 1.2)] + ([max(2.5, 0.44 * len(timed) + 1.2)] if timed else [])
    fig, axes = plt.subplots(n_panels, 1, figsize=(13, sum(heights) + 0.5),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)

    ax = axes[0][0]
    ys = list(range(len(bw)))[::-1]
    vals = [rows[r].get("GBps", 0) for r in bw]
    colors = [{"fwd": "tab:blue", "bwd_atomic": "tab:orange", "bwd_det": "tab:red"}.get(op, "tab:gray") for op, _ in bw]
    ax.barh(ys, vals, color=colors, height=0.7)
    ceil = [rows[r].get("copy_GBps") for r in bw]
    cy = [y for y, c in zip(ys, ceil) if c]
    if cy:
        from matplotlib.patches import Patch

        ax.scatter([c for c in ceil if c], cy, marker="|", s=200, color="black", zorder=3,
                   label="copy ceiling (same bytes, same run)")
        handles = [Patch(color=c, label=n) for n, c in (("forward", "tab:blue"),
                                                        ("zero + backward, atomic", "tab:orange"),
                                                        ("zero + backward, deterministic", "tab:red"))]
        handles.append(ax.collections[-1])
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([label(op, k) for op, k in bw], fontsize=7)
    ax.set_xlabel("achieved GB/s (minimum bytes / median time)")
    ax.set_title("tokemb: achieved bandwidth" + (" vs copy ceiling" if cy else " (CPU reference only)"))
    ax.grid(axis="x", alpha=0.3)

    if timed:
        ax = axes[1][0]
        series = [("tokemb fwd", lambda k: rows.get(("fwd", k), {}).get("median_ms"), "tab:blue"),
                  ("torch fwd eager", lambda k: tres.get((k, "fwd", "eager"), {}).get("ms"), "lightsteelblue"),
                  ("torch fwd compiled", lambda k: tres.get((k, "fwd", "compiled"), {}).get("ms"), "slategray"),
                  ("tokemb bwd (atomic)", lambda k: rows.get(("bwd_atomic", k), {}).get("median_ms"), "tab:orange"),
                  ("torch bwd eager", lambda k: tres.get((k, "bwd", "eager"), {}).get("ms"), "navajowhite"),
                  ("torch bwd compiled", lambda k: tres.get((k, "bwd", "compiled"), {}).get("ms"), "peru")]
        h = 0.8 / len(series)
        for i, (name, get, color) in enumerate(series):
            ys_ = [len(timed) - 1 - j + 0.4 - (i + 0.5) * h for j in range(len(timed))]
            v = [get(k) or 0 for k in timed]
            ax.barh(ys_, v, height=h, color=color, label=name)
        ax.set_yticks(list(range(len(timed)))[::-1])
        ax.set_yticklabels([k.replace("/i64", "").replace("/", " ") for k in timed], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("median time, ms (log scale; backward includes zeroing)")
        ax.set_title("tokemb vs PyTorch eager and torch.compile")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(axis="x", alpha=0.3, which="both")

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


if __name__ == "__main__":
    sys.exit(main())
