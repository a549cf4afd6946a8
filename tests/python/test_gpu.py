"""CUDA tensors: every test skips (with the reason) where no CUDA device is present or tokemb was
built without its CUDA backend; scripts/gpu-check.sh runs them on a GPU machine."""

import numpy as np
import pytest

import tokemb
from conftest import gpu_or_skip

torch = pytest.importorskip("torch", reason="PyTorch not installed")
import tokemb.torch as tt  # noqa: E402


@pytest.fixture(autouse=True)
def _needs_gpu():
    gpu_or_skip()
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA support")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("deterministic", [False, True])
def test_module_on_cuda_matches_cpu(rng, dtype, id_dtype, deterministic):
    V, D, P, B, T = 5000, 200, 64, 8, 64
    cpu = tt.TokenPositionEmbedding(V, D, P, dtype=dtype)
    gpu = tt.TokenPositionEmbedding(V, D, P, dtype=dtype, device="cuda",
                                    deterministic=deterministic)
    gpu.load_state_dict(cpu.state_dict())
    ids = torch.from_numpy(rng.integers(0, V, (B, T))).to(id_dtype)
    ids[0, :16] = 7  # duplicates
    out_c, out_g = cpu(ids), gpu(ids.cuda())
    assert out_g.is_cuda and out_g.dtype == dtype
    assert torch.equal(out_g.cpu(), out_c)  # forward is bit-exact
    dout = torch.randn(B, T, D).to(dtype)
    out_c.backward(dout)
    out_g.backward(dout.cuda())
    gpu.check_errors()
    assert gpu.tok_emb.weight.grad.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(gpu.tok_emb.weight.grad.cpu(), cpu.tok_emb.weight.grad,
                               rtol=tol, atol=tol)
    torch.testing.assert_close(gpu.pos_emb.weight.grad.cpu(), cpu.pos_emb.weight.grad,
                               rtol=tol, atol=tol)


def test_deterministic_is_bitwise_repeatable_on_cuda(rng):
    V, D, P, B, T = 1000, 96, 128, 16, 128
    emb = tt.TokenPositionEmbedding(V, D, P, device="cuda", deterministic=True)
    ids = torch.from_numpy(rng.integers(0, 8, (B, T))).cuda()
    dout = torch.randn(B, T, D, device="cuda")
    grads = []
    for _ in range(3):
        emb.zero_grad(set_to_none=True)
        emb(ids).backward(dout)
        grads.append(emb.tok_emb.weight.grad.clone())
    assert all(torch.equal(g, grads[0]) for g in grads)


def test_bad_id_on_cuda_is_recorded_not_a_crash(rng):
    emb = tt.TokenPositionEmbedding(100, 16, 8, device="cuda")
    ids = torch.tensor([[1, 2, 3], [4, 100, 6]], device="cuda")
    out = emb(ids)  # no synchronisation: the kernel zeroes the row and records it
    assert (out[1, 1] == 0).all()
    with pytest.raises(tokemb.IndexOutOfRange) as ei:
        emb.check_errors()
    assert (ei.value.batch, ei.value.time, ei.value.value, ei.value.limit) == (1, 1, 100, 100)
    emb.check_errors()  # cleared; the module and the CUDA context stay usable
    assert torch.equal(emb(ids[:1]), emb(ids[:1].cpu().cuda()))


def test_explicit_stream_and_functional_api(rng):
    V, D, P, B, T = 300, 64, 32, 4, 32
    tok = torch.randn(V, D, device="cuda")
    pos = torch.randn(P, D, device="cuda")
    ids = torch.from_numpy(rng.integers(0, V, (B, T))).cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    out = tokemb.forward(ids, tok, pos, stream=s.cuda_stream)
    gt = torch.zeros(V, D, device="cuda")
    dout = torch.randn(B, T, D, device="cuda")
    s.wait_stream(torch.cuda.current_stream())
    tokemb.backward(ids, dout, gt, accumulate=False, deterministic=True, stream=s.cuda_stream)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(out, tok[ids] + pos[:T])
    ref = torch.zeros(V, D, device="cuda").index_add_(0, ids.reshape(-1), dout.reshape(-1, D))
    torch.testing.assert_close(gt, ref, rtol=1e-5, atol=1e-5)
    # Under a torch stream context the current stream is used.
    with torch.cuda.stream(s):
        out2 = tokemb.forward(ids, tok, pos)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(out2, out)


def test_cuda_graph_capture_of_forward_and_backward(rng):
    V, D, P, B, T = 2000, 128, 64, 4, 64
    emb = tt.TokenPositionEmbedding(V, D, P, device="cuda")
    ids = torch.from_numpy(rng.integers(0, V, (B, T))).cuda()
    dout = torch.randn(B, T, D, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up, as torch.cuda.graphs requires
        for _ in range(2):
            emb.zero_grad(set_to_none=False)
            emb(ids).backward(dout)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    emb.zero_grad(set_to_none=False)
    with torch.cuda.graph(g):
        out = emb(ids)
        out.backward(dout)
    new_ids = torch.from_numpy(rng.integers(0, V, (B, T))).cuda()
    ids.copy_(new_ids)
    emb.zero_grad(set_to_none=False)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, emb.tok_emb.weight[new_ids] + emb.pos_emb.weight[:T])
    ref = torch.zeros(V, D, device="cuda").index_add_(0, new_ids.reshape(-1), dout.reshape(-1, D))
    torch.testing.assert_close(emb.tok_emb.weight.grad, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not tt.USES_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_on_cuda(rng):
    V, D, P, B, T = 1000, 64, 32, 4, 32
    emb = tt.TokenPositionEmbedding(V, D, P, device="cuda", dtype=torch.bfloat16)
    f = torch.compile(lambda ids: emb(ids).float().square().mean(), fullgraph=True)
    ids = torch.from_numpy(rng.integers(0, V, (B, T))).cuda()
    f(ids).backward()
    g = emb.tok_emb.weight.grad.clone()
    emb.zero_grad()
    emb(ids).float().square().mean().backward()
    torch.testing.assert_close(g, emb.tok_emb.weight.grad)


def test_cupy_arrays_if_installed(rng):
    cp = pytest.importorskip("cupy", reason="CuPy not installed")
    V, D, P, B, T = 100, 32, 16, 2, 8
    tok = cp.asarray(rng.standard_normal((V, D)).astype(np.float32))
    pos = cp.asarray(rng.standard_normal((P, D)).astype(np.float32))
    ids = cp.asarray(rng.integers(0, V, (B, T)))
    out = tokemb.forward(ids, tok, pos)
    assert isinstance(out, cp.ndarray)
    cp.testing.assert_array_equal(out, tok[ids] + pos[:T])
    gt = cp.zeros((V, D), cp.float32)
    tokemb.backward(ids, cp.ones((B, T, D), cp.float32), gt, deterministic=True)
    assert float(gt.sum()) == B * T * D


@pytest.mark.parametrize("mode", ["element", "token"])
def test_dropout_and_cu_seqlens_on_cuda_match_cpu(rng, mode):
    """The mask is a function of (seed, offset, index): the GPU draws the CPU's mask, also when
    (seed, offset) is read from device memory (seed_offset)."""
    V, D, P, B, T = 3000, 64, 96, 4, 48
    tok = torch.randn(V, D)
    pos = torch.randn(P, D)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    cu = torch.tensor([0, 10, 10, 70, B * T], dtype=torch.int32)
    seed, offset = int(rng.integers(0, 2**63)), int(rng.integers(0, 2**63))
    kw = dict(dropout_p=0.3, dropout_mode=mode, cu_seqlens=cu)
    ref = tokemb.forward(ids, tok, pos, seed=seed, offset=offset, **kw)
    so = torch.tensor([seed, offset], dtype=torch.int64, device="cuda")
    kw["cu_seqlens"] = cu.cuda()
    got = tokemb.forward(ids.cuda(), tok.cuda(), pos.cuda(), seed_offset=so, **kw)
    tokemb.check_errors(got)
    assert torch.equal(got.cpu(), ref)
    dout = torch.randn(B, T, D)
    gt, gp = torch.zeros(V, D), torch.zeros(P, D)
    tokemb.backward(ids, dout, gt, gp, seed=seed, offset=offset, **{**kw, "cu_seqlens": cu})
    gtg, gpg = torch.zeros(V, D, device="cuda"), torch.zeros(P, D, device="cuda")
    tokemb.backward(ids.cuda(), dout.cuda(), gtg, gpg, seed_offset=so, **kw)
    tokemb.check_errors(gtg)
    torch.testing.assert_close(gtg.cpu(), gt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpg.cpu(), gp, rtol=1e-5, atol=1e-5)


def test_module_dropout_on_cuda_reproducible_under_manual_seed(rng):
    emb = tt.TokenPositionEmbedding(500, 64, 32, device="cuda", dropout=0.2)
    ids = torch.from_numpy(rng.integers(0, 500, (4, 32))).cuda()
    torch.manual_seed(5)
    a, b = emb(ids), emb(ids)
    torch.manual_seed(5)
    assert torch.equal(emb(ids), a) and not torch.equal(a, b)
    a.sum().backward()
    emb.check_errors()


@pytest.mark.parametrize("accumulate,deterministic", [(True, False), (True, True), (False, False)])
def test_backward_asks_the_allocator_only_for_a_needed_workspace(rng, monkeypatch, accumulate,
                                                                 deterministic):
    from tokemb import _arrays
    V, P, D, B, T = 300, 16, 8, 4, 16
    ids = torch.from_numpy(rng.integers(0, V, (B, T))).cuda()
    dout = torch.randn(B, T, D, device="cuda")
    gt = torch.zeros(V, D, device="cuda")
    gp = torch.zeros(P, D, device="cuda")
    sizes = []
    real = _arrays.Call.workspace

    def spy(self, nbytes):
        sizes.append(nbytes)
        return real(self, nbytes)

    monkeypatch.setattr(_arrays.Call, "workspace", spy)
    tokemb.backward(ids, dout, gt, gp, accumulate=accumulate, deterministic=deterministic)
    # The sorting pass (deterministic, or overwriting) needs a workspace, from PyTorch's
    # allocator; the accumulating atomic one needs none and the allocator is not called.
    if deterministic or not accumulate:
        assert len(sizes) == 1 and sizes[0] > 0
    else:
        assert sizes == []
    ref = torch.zeros(V, D, device="cuda").index_add_(0, ids.reshape(-1), dout.reshape(-1, D))
    torch.testing.assert_close(gt, ref, rtol=1e-5, atol=1e-5)
    refp = torch.zeros(P, D, device="cuda").index_add_(
        0, torch.arange(T, device="cuda").repeat(B), dout.reshape(-1, D))
    torch.testing.assert_close(gp, refp, rtol=1e-5, atol=1e-5)
