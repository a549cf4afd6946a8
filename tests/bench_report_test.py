"""CTest: bench/report.py puts PyTorch's CPU rows (bench/torch_baseline.py --device cpu, ops
cpu_fwd / cpu_bwd) beside tokemb's CPU-reference rows, with the ratio; reads two --torch files
(a GPU run that found no device, and the CPU run); and still renders without any PyTorch JSON.

    python3 tests/bench_report_test.py REPORT_PY WORKDIR
"""
import json
import os
import shutil
import subprocess
import sys

report, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)


def path(name):
    return os.path.join(work, name)


def bench_row(op, key, ms, gbps):
    return {"name": f"{op}/{key}/manual_time", "run_name": f"{op}/{key}/manual_time",
            "run_type": "iteration", "iterations": 3, "real_time": ms, "cpu_time": ms,
            "time_unit": "ms", "GBps": gbps, "distinct_tokens": 32}


with open(path("bench.json"), "w") as f:
    json.dump({"context": {"gpu_rows": "not registered: this build of tokemb has no CUDA backend",
                           "num_cpus": 2},
               "benchmarks": [bench_row("cpu_fwd", "book/f32/i64/uniform", 0.002, 60.0),
                              bench_row("cpu_bwd", "book/f32/i64/uniform", 2.0, 30.0),
                              bench_row("cpu_fwd", "book/f32/i32/uniform", 0.002, 60.0)]}, f)
with open(path("torch-cpu.json"), "w") as f:
    json.dump({"context": {"status": "ok", "device": "cpu", "torch": "9.9", "cpu": "x86_64",
                           "threads": 1, "timer": "perf_counter"},
               "results": [{"case": "book/f32/i64/uniform", "op": "cpu_fwd", "variant": "eager",
                            "ms": 0.008, "status": "ok"},
                           {"case": "book/f32/i64/uniform", "op": "cpu_bwd", "variant": "eager",
                            "ms": None, "status": "failed: RuntimeError: no bwd"}]}, f)
with open(path("torch-gpu.json"), "w") as f:
    json.dump({"context": {"status": "PyTorch has no CUDA device", "device": "cuda"}, "results": []}, f)


def render(*torch_files):
    args = [sys.executable, report, "--bench", path("bench.json"), "--out-md", path("report.md"),
            "--out-json", path("merged.json")]
    for t in torch_files:
        args += ["--torch", path(t)]
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(path("report.md")) as f:
        return f.read()


md = render("torch-gpu.json", "torch-cpu.json")
assert "| case | op | ms | GB/s | torch eager ms | vs torch |" in md, md
assert "| book/f32/i64/uniform | cpu_fwd | 0.0020 | 60.00 | 0.0080 | 0.25 |" in md, md
assert "| book/f32/i64/uniform | cpu_bwd | 2.000 | 30.00 | failed: RuntimeError: no bwd | — |" in md, md
assert "| book/f32/i32/uniform | cpu_fwd | 0.0020 | 60.00 | — | — |" in md, md
assert "- PyTorch 9.9 on the CPU (x86_64, 1 thread(s)) beside the CPU reference" in md, md
with open(path("merged.json")) as f:
    merged = json.load(f)
assert merged["torch_cpu_context"]["device"] == "cpu"
assert [r.get("vs_torch") for r in merged["rows"]] == [0.25, None, None], merged["rows"]

md = render()  # no PyTorch at all: the CPU table still renders, saying why its column is empty
assert "| book/f32/i64/uniform | cpu_fwd | 0.0020 | 60.00 | — | — |" in md, md
assert "- PyTorch CPU columns empty: no `torch_baseline.py --device cpu` JSON" in md, md
shutil.rmtree(work)
print("report.py: PyTorch CPU rows beside the CPU reference; renders without them")
