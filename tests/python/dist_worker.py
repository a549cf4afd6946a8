"""One rank of tests/python/test_distributed.py: a real process in a torch.distributed gloo group
on 127.0.0.1. Runs the scenarios the test passes (JSON) on a vocabulary-parallel
TokenPositionEmbedding and saves what it saw (outputs, shards, gradients, the errors it raised)
to OUT/rank<r>.npz for the parent to compare with a one-process run.

Usage: dist_worker.py RANK WORLD PORT SCENARIOS_JSON OUT_DIR [BACKEND]
BACKEND: gloo (CPU tensors, the default) or nccl (CUDA tensors, rank r on GPU r).
"""

import datetime
import json
import os
import sys
import traceback

import numpy as np


def scenario_inputs(sc, torch):
    """ids, positions and dout of a scenario, from its seed (the parent builds the same)."""
    g = torch.Generator().manual_seed(sc["seed"])
    B, T, D = sc["B"], sc["T"], sc["D"]
    ids = torch.randint(0, sc["V"], (B, T), generator=g)
    if sc.get("bad_id"):  # one id past the vocabulary (the same on every rank)
        ids.view(-1)[int(torch.randint(0, B * T, (1,), generator=g))] = sc["V"]
    kw = {"position_offset": sc.get("position_offset", 0)}
    if sc.get("positions") == "ids":
        kw = {"position_ids": torch.randint(0, sc["P"], (B, T), generator=g)}
    elif sc.get("positions") == "cu_seqlens":
        kw = {"cu_seqlens": torch.tensor(sc["cu_seqlens"], dtype=torch.int32)}
    dout = torch.randn((B, T, D), generator=g)
    return ids, kw, dout


def dtype_of(sc, torch):
    return {"f32": torch.float32, "bf16": torch.bfloat16}[sc.get("dtype", "f32")]


def build(sc, torch, tt, group, device="cpu"):
    torch.manual_seed(sc["seed"])  # the same draws as the one-process module's
    return tt.TokenPositionEmbedding(
        sc["V"], sc["D"], sc["P"], padding_idx=sc.get("padding_idx"),
        dropout=sc.get("dropout", 0.0), dropout_mode=sc.get("dropout_mode", "element"),
        deterministic=True, dtype=dtype_of(sc, torch), process_group=group, device=device,
        sequence_parallel=sc.get("sequence_parallel", False))


def main():
    rank, world, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with open(sys.argv[4]) as f:
        scenarios = json.load(f)
    out_dir = sys.argv[5]
    backend = sys.argv[6] if len(sys.argv) > 6 else "gloo"

    import torch
    import torch.distributed as dist

    import tokemb
    import tokemb.torch as tt

    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=40))
    group = dist.group.WORLD

    def cpu(t):
        return t.detach().float().cpu().numpy()

    def dev(kw):
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in kw.items()}

    saved = {}
    for i, sc in enumerate(scenarios):
        m = build(sc, torch, tt, group, device)
        ids, kw, dout = scenario_inputs(sc, torch)
        ids, kw, dout = ids.to(device), dev(kw), dout.to(device)
        key = f"s{i}_"
        saved[key + "shard"] = cpu(m.tok_emb.weight)
        saved[key + "start"] = np.array(m.shard[0])
        if sc.get("expect_error"):
            # Every rank must raise, and none may be left waiting in a collective.
            try:
                m(ids, **{**kw, **sc.get("call", {})})
                m.check_errors()  # CUDA: recorded on the device, raised here (no-op on the CPU)
                saved[key + "error"] = np.array("none")
            except tokemb.Error as e:
                saved[key + "error"] = np.array(type(e).__name__)
                saved[key + "kind"] = np.array(str(getattr(e, "kind", "")))
            continue
        if sc.get("eval"):
            m.eval()
        # Ranks' generators differ from here on (Megatron seeds its ranks differently): the
        # dropout mask must still be rank 0's, which the parent's one-process run draws.
        torch.manual_seed(sc["seed"] + 1000 * rank)
        out = m(ids, **kw)
        saved[key + "out"] = cpu(out)
        # Sequence parallel: this rank's output is a slice, so is its part of dout.
        c = sc["T"] // world
        d = dout[:, rank * c:(rank + 1) * c] if sc.get("sequence_parallel") else dout
        out.backward(d.to(out.dtype))
        m.check_errors()
        saved[key + "grad_tok"] = cpu(m.tok_emb.weight.grad)
        saved[key + "grad_pos"] = cpu(m.pos_emb.weight.grad)
    dist.barrier()  # the group still works after the errors above
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **saved)
    dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
