"""The vocabulary-parallel PyTorch module with real processes: torch.distributed's gloo backend on
127.0.0.1 (CPU tensors), 2 and 3 ranks (3 splits the vocabulary unevenly), tensor parallel and
sequence parallel, with and without dropout, against a one-process run of the same module. Each
rank is a separate process (tests/python/dist_worker.py); every wait is bounded, and children are
killed if the test fails or times out."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed")
import torch.distributed as dist  # noqa: E402

import tokemb.torch as tt  # noqa: E402
import dist_worker  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this PyTorch has no torch.distributed gloo backend", allow_module_level=True)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_worker.py")
TIMEOUT_S = 50  # per group of ranks: start-up (importing torch) included


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world, scenarios, tmp_path, backend="gloo"):
    """Runs `world` worker processes; returns each rank's saved arrays. Fails (never hangs) if a
    rank exits with an error or the group does not finish within TIMEOUT_S."""
    spec = tmp_path / "scenarios.json"
    spec.write_text(json.dumps(scenarios))
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    procs = []
    logs = []
    try:
        for r in range(world):
            log = open(tmp_path / f"rank{r}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, str(r), str(world), str(port), str(spec), str(tmp_path),
                 backend],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path)))
        deadline = time.monotonic() + TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = []
    for r, log in enumerate(logs):
        log.seek(0)
        text.append(f"--- rank {r} (exit {procs[r].returncode}) ---\n{log.read()[-3000:]}")
        log.close()
    codes = [p.returncode for p in procs]
    assert codes == [0] * world, (f"ranks did not all finish within {TIMEOUT_S} s or failed: "
                                  f"exit codes {codes}\n" + "\n".join(text))
    return [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]


def one_process(sc, device="cpu"):
    """The same scenario on the unsharded module (no process group)."""
    torch.manual_seed(sc["seed"])
    m = tt.TokenPositionEmbedding(sc["V"], sc["D"], sc["P"], padding_idx=sc.get("padding_idx"),
                                  dropout=sc.get("dropout", 0.0),
                                  dropout_mode=sc.get("dropout_mode", "element"),
                                  deterministic=True, dtype=dist_worker.dtype_of(sc, torch),
                                  device=device)
    ids, kw, dout = dist_worker.scenario_inputs(sc, torch)
    ids, dout = ids.to(device), dout.to(device)
    kw = {k: v.to(device) if hasattr(v, "to") else v for k, v in kw.items()}
    if sc.get("eval"):
        m.eval()
    torch.manual_seed(sc["seed"])  # what rank 0 of dist_worker.py draws the mask seed from
    out = m(ids, **kw)
    out.backward(dout.to(out.dtype))
    m.check_errors()
    return {"table": m.tok_emb.weight.detach().float().cpu().numpy(),
            "out": out.detach().float().cpu().numpy(),
            "grad_tok": m.tok_emb.weight.grad.float().cpu().numpy(),
            "grad_pos": m.pos_emb.weight.grad.float().cpu().numpy()}


def scenarios_for(rng, world):
    def base(**kw):
        B, k = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        T = world * k  # sequence parallel needs T divisible by the group size
        V = int(rng.integers(world, 60)) if world > 1 else 10
        if V % world == 0:
            V += 1  # an uneven split
        P = T + int(rng.integers(0, 4))
        sc = {"seed": int(rng.integers(0, 2**31)), "B": B, "T": T, "D": int(rng.integers(1, 24)),
              "V": V, "P": P, "padding_idx": int(rng.integers(0, V)),
              "position_offset": int(rng.integers(0, P - T + 1))}
        sc.update(kw)
        return sc

    def cu(sc):
        n = sc["B"] * sc["T"]
        cuts = sorted({0, n, *rng.integers(0, n + 1, 3).tolist()})
        cuts.insert(1, cuts[0])  # an empty sequence
        return cuts

    scs = [
        base(),                                                       # tensor parallel
        base(sequence_parallel=True),                                 # sequence parallel
        base(dropout=0.3),                                            # TP + dropout (elements)
        base(sequence_parallel=True, dropout=0.4, dropout_mode="token"),
        base(sequence_parallel=True, dropout=0.2, eval=True),         # eval: no dropout
        base(positions="ids"),
        base(dtype="bf16", sequence_parallel=True),
        base(dtype="bf16", dropout=0.3),
    ]
    sc = base(sequence_parallel=True, dropout=0.25)
    sc["positions"] = "cu_seqlens"
    sc["P"] = sc["B"] * sc["T"]  # room for a sequence of every length
    sc["cu_seqlens"] = cu(sc)
    scs.append(sc)
    # Errors: each must raise on every rank, before any collective (no hang).
    scs.append(base(expect_error="IndexOutOfRange", kind="token", bad_id=True))  # id == V
    # Positions past the table: only rank 0 adds positions, but every rank must raise.
    scs.append(base(expect_error="IndexOutOfRange", kind="position",
                    call={"position_offset": 10**6}))
    if world > 1:
        odd = base(expect_error="InvalidArgument", sequence_parallel=True)
        odd["T"] += 1  # not divisible by the group size
        odd["P"] += 1
        odd["position_offset"] = 0
        scs.append(odd)
    return scs


def check_against_one_process(ranks, scenarios, world, device="cpu", grad_tol=1e-6):
    for i, sc in enumerate(scenarios):
        key = f"s{i}_"
        if sc.get("expect_error"):
            errs = [str(r[key + "error"]) for r in ranks]
            if device != "cpu":  # CUDA: bad rows are recorded, raised by check_errors
                assert errs[0] != "none" and errs == [errs[0]] * world, (i, sc, errs)
                continue
            assert errs == [sc["expect_error"]] * world, (i, sc, errs)
            if "kind" in sc:
                assert [str(r[key + "kind"]) for r in ranks] == [sc["kind"]] * world, (i, sc)
            continue
        ref = one_process(sc, device)
        what = f"scenario {i}: {sc}"
        # The shards' union is the unsharded module's table (same seed), bitwise.
        starts = [int(r[key + "start"]) for r in ranks]
        rows = [r[key + "shard"].shape[0] for r in ranks]
        for k in range(world):
            assert (starts[k], rows[k]) == tt.vocab_shard(sc["V"], k, world)
        np.testing.assert_array_equal(np.concatenate([r[key + "shard"] for r in ranks]),
                                      ref["table"], err_msg=what)
        c = sc["T"] // world
        exact = sc.get("dtype", "f32") == "f32"
        for k, r in enumerate(ranks):
            want = ref["out"][:, k * c:(k + 1) * c] if sc.get("sequence_parallel") else ref["out"]
            if exact:
                np.testing.assert_array_equal(r[key + "out"], want, err_msg=f"rank {k}, {what}")
            elif not sc.get("dropout"):  # bf16 summed in f32 over gloo: rounded once, as fused
                np.testing.assert_array_equal(r[key + "out"], want, err_msg=f"rank {k}, {what}")
            else:  # bf16 + dropout: rows rank 0 rounded before the scaling, one rounding more
                np.testing.assert_allclose(r[key + "out"], want, rtol=2.0**-7, atol=0,
                                           err_msg=f"rank {k}, {what}")
            tol = grad_tol if exact else 1e-2
            s, n = starts[k], rows[k]
            np.testing.assert_allclose(r[key + "grad_tok"], ref["grad_tok"][s:s + n], rtol=tol,
                                       atol=tol, err_msg=f"rank {k} token grad, {what}")
            np.testing.assert_allclose(r[key + "grad_pos"], ref["grad_pos"], rtol=tol, atol=tol,
                                       err_msg=f"rank {k} position grad, {what}")
            # The replicated position gradient is the same bits on every rank.
            np.testing.assert_array_equal(r[key + "grad_pos"], ranks[0][key + "grad_pos"])
        if sc.get("dropout") and not sc.get("eval"):
            # Dropout was applied at all (unless dropping nothing had probability > e^-20).
            draws = sc["B"] * sc["T"] * (sc["D"] if sc.get("dropout_mode") != "token" else 1)
            if draws * -np.log1p(-sc["dropout"]) > 20:
                assert (ref["out"] == 0).any(), "dropout dropped nothing"



@pytest.mark.parametrize("world", [2, 3])
def test_vocab_parallel_module_equals_one_process(rng, tmp_path, world):
    scenarios = scenarios_for(rng, world)
    check_against_one_process(run_ranks(world, scenarios, tmp_path), scenarios, world)


def test_vocab_parallel_module_over_nccl(rng, tmp_path):
    """The same over NCCL with CUDA tensors: one rank per GPU (a one-rank group on one GPU)."""
    from conftest import gpu_or_skip
    gpu_or_skip()
    if not torch.cuda.is_available() or not dist.is_nccl_available():
        pytest.skip("this PyTorch has no CUDA device or no NCCL backend")
    world = min(torch.cuda.device_count(), 4)
    scenarios = scenarios_for(rng, world)
    ranks = run_ranks(world, scenarios, tmp_path, backend="nccl")
    # CPU and GPU sum gradients in other orders: f32 gradients agree to rounding.
    check_against_one_process(ranks, scenarios, world, device="cuda", grad_tol=1e-5)


def test_sequence_parallel_needs_a_group():
    with pytest.raises(tt._tk.InvalidArgument, match="process_group"):
        tt.TokenPositionEmbedding(10, 4, 3, sequence_parallel=True)


def test_vocab_shard_is_an_even_split(rng):
    for _ in range(20):
        world = int(rng.integers(1, 9))
        rows = int(rng.integers(world, 1000))
        shards = [tt.vocab_shard(rows, r, world) for r in range(world)]
        assert shards[0][0] == 0
        assert all(a[0] + a[1] == b[0] for a, b in zip(shards, shards[1:]))
        assert shards[-1][0] + shards[-1][1] == rows
        assert max(s[1] for s in shards) - min(s[1] for s in shards) <= 1
    with pytest.raises(tt._tk.InvalidArgument):
        tt.vocab_shard(2, 0, 3)
