"""tokemb.torch on CPU tensors against the book's nn.Embedding pair."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed")
from torch import nn  # noqa: E402

import tokemb  # noqa: E402
import tokemb.torch as tt  # noqa: E402
from conftest import assert_grads_close  # noqa: E402

# The book's chapter-2 text: the opening of Edith Wharton's "The Verdict" (public domain),
# tokenised one byte per token as `tokemb demo` does (tokemb ships no BPE tokenizer).
VERDICT = (b"I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough"
           b"--so it was no great surprise to me to hear that, in the height of his glory, he had "
           b"dropped his painting, married a rich widow, and established himself in a villa on "
           b"the Riviera.")


class BookPair(nn.Module):
    """The book's input layer: tok_emb(ids) + pos_emb(arange(T))."""

    def __init__(self, V, D, P, padding_idx=None, dtype=None):
        super().__init__()
        self.tok_emb = nn.Embedding(V, D, padding_idx=padding_idx, dtype=dtype)
        self.pos_emb = nn.Embedding(P, D, dtype=dtype)

    def forward(self, ids, offset=0):
        T = ids.shape[1]
        return self.tok_emb(ids) + self.pos_emb(torch.arange(offset, offset + T))


class GPTModel(nn.Module):
    """The book's GPTModel (chapter 4) with small stand-ins for the transformer blocks."""

    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(nn.Linear(cfg["emb_dim"], cfg["emb_dim"]), nn.GELU())
        self.final_norm = nn.LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        batch_size, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)


class TokembGPTModel(GPTModel):
    """The README's swap: same parameters and state_dict keys, tokemb as the input layer."""

    def forward(self, in_idx):
        x = tt.token_position_embedding(in_idx, self.tok_emb.weight, self.pos_emb.weight)
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)


def seed_from(rng):
    return int(rng.integers(0, 2**31))


def test_same_init_as_nn_embedding_under_manual_seed(rng):
    V, D, P = int(rng.integers(2, 500)), int(rng.integers(1, 64)), int(rng.integers(1, 64))
    pad = int(rng.integers(-V, V))
    s = seed_from(rng)
    torch.manual_seed(s)
    ref = BookPair(V, D, P, padding_idx=pad)
    torch.manual_seed(s)
    emb = tt.TokenPositionEmbedding(V, D, P, padding_idx=pad)
    assert torch.equal(emb.tok_emb.weight, ref.tok_emb.weight)
    assert torch.equal(emb.pos_emb.weight, ref.pos_emb.weight)
    assert emb.padding_idx == ref.tok_emb.padding_idx
    assert set(emb.state_dict()) == {"tok_emb.weight", "pos_emb.weight"}


@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_forward_and_gradients_match_nn_embedding(rng, id_dtype):
    V, D, P = int(rng.integers(2, 300)), int(rng.integers(1, 48)), int(rng.integers(8, 32))
    B, T = int(rng.integers(1, 6)), int(rng.integers(1, 8))
    off = int(rng.integers(0, P - T + 1))
    torch.manual_seed(seed_from(rng))
    ref = BookPair(V, D, P)
    emb = tt.TokenPositionEmbedding.from_embeddings(copy.deepcopy(ref.tok_emb),
                                                    copy.deepcopy(ref.pos_emb))
    ids = torch.from_numpy(rng.integers(0, V, (B, T))).to(id_dtype)
    out = emb(ids, position_offset=off)
    want = ref(ids.long(), offset=off)
    assert out.dtype == torch.float32 and out.shape == (B, T, D)
    assert torch.equal(out, want)  # exact for f32

    dout = torch.from_numpy(rng.standard_normal((B, T, D)).astype(np.float32))
    out.backward(dout)
    want.backward(dout)
    assert emb.tok_emb.weight.grad.dtype == torch.float32
    assert_grads_close(emb.tok_emb.weight.grad.numpy(), ids.numpy(), dout.numpy(), V, P,
                       emb.pos_emb.weight.grad.numpy(), offset=off)
    # and against autograd through nn.Embedding, to the same tolerance
    torch.testing.assert_close(emb.tok_emb.weight.grad, ref.tok_emb.weight.grad,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb.pos_emb.weight.grad, ref.pos_emb.weight.grad,
                               rtol=1e-5, atol=1e-5)

    # A second backward accumulates into .grad, as PyTorch does.
    g1 = emb.tok_emb.weight.grad.clone()
    emb(ids, position_offset=off).backward(dout)
    torch.testing.assert_close(emb.tok_emb.weight.grad, 2 * g1, rtol=1e-6, atol=1e-6)


def test_padding_idx_identical_to_nn_embedding(rng):
    V, D, P, B, T = 40, 8, 10, 4, 6
    for pad in (int(rng.integers(0, V)), -int(rng.integers(1, V + 1))):
        torch.manual_seed(seed_from(rng))
        ref = BookPair(V, D, P, padding_idx=pad)
        with torch.no_grad():
            ref.tok_emb.weight[ref.tok_emb.padding_idx] = 3.5  # forward reads the row as is
        emb = tt.TokenPositionEmbedding.from_embeddings(copy.deepcopy(ref.tok_emb),
                                                        copy.deepcopy(ref.pos_emb))
        ids = torch.from_numpy(rng.integers(0, V, (B, T)))
        ids[0, :2] = ref.tok_emb.padding_idx
        out, want = emb(ids), ref(ids)
        assert torch.equal(out, want)
        dout = torch.randn(B, T, D)
        out.backward(dout)
        want.backward(dout)
        assert (emb.tok_emb.weight.grad[ref.tok_emb.padding_idx] == 0).all()
        torch.testing.assert_close(emb.tok_emb.weight.grad, ref.tok_emb.weight.grad,
                                   rtol=1e-5, atol=1e-5)


def test_position_ids_and_no_position_table(rng):
    V, D, P, B, T = 30, 6, 12, 3, 5
    emb = tt.TokenPositionEmbedding(V, D, P)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    pids = torch.from_numpy(rng.integers(0, P, (B, T)))
    want = emb.tok_emb(ids) + emb.pos_emb(pids)
    assert torch.equal(emb(ids, position_ids=pids), want)
    tok_only = tt.TokenPositionEmbedding(V, D, 0)
    assert tok_only.pos_emb is None
    out = tok_only(ids)
    assert torch.equal(out, tok_only.tok_emb(ids))
    out.sum().backward()
    want_grad = torch.zeros(V, D).index_add_(0, ids.reshape(-1), torch.ones(B * T, D))
    torch.testing.assert_close(tok_only.tok_emb.weight.grad, want_grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tables_get_grads_in_their_dtype(rng, dtype):
    V, D, P, B, T = 50, 16, 8, 3, 4
    torch.manual_seed(seed_from(rng))
    emb = tt.TokenPositionEmbedding(V, D, P, dtype=dtype)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    out = emb(ids)
    assert out.dtype == dtype
    want = (emb.tok_emb.weight.float()[ids] + emb.pos_emb.weight.float()[:T]).to(dtype)
    assert torch.equal(out, want)  # f32 sum, one rounding
    dout = torch.randn(B, T, D).to(dtype)
    out.backward(dout)
    assert emb.tok_emb.weight.grad.dtype == dtype and emb.pos_emb.weight.grad.dtype == dtype
    ref_t = torch.zeros(V, D).index_add_(0, ids.reshape(-1), dout.float().reshape(-1, D))
    torch.testing.assert_close(emb.tok_emb.weight.grad, ref_t.to(dtype))
    ref_p = torch.zeros(P, D)
    ref_p[:T] = dout.float().sum(0)
    torch.testing.assert_close(emb.pos_emb.weight.grad, ref_p.to(dtype))


def test_deterministic_algorithms_select_the_deterministic_backward(rng, monkeypatch):
    seen = []
    real = tokemb.backward

    def spy(*a, **kw):
        seen.append(kw["deterministic"])
        return real(*a, **kw)

    monkeypatch.setattr(tokemb, "backward", spy)
    emb = tt.TokenPositionEmbedding(20, 4, 6)
    ids = torch.from_numpy(rng.integers(0, 20, (2, 3)))
    emb(ids).sum().backward()
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        emb(ids).sum().backward()
    finally:
        torch.use_deterministic_algorithms(prev)
    tt.TokenPositionEmbedding(20, 4, 6, deterministic=True)(ids).sum().backward()
    assert seen == [False, True, True]


def test_book_chapter2_through_tokemb(rng):
    # Section 2.7: torch.manual_seed(123); embedding_layer = torch.nn.Embedding(6, 3)
    torch.manual_seed(123)
    book = nn.Embedding(6, 3)
    np.testing.assert_allclose(book.weight[3].detach().numpy(), [-0.4015, 0.9666, -1.1481],
                               atol=1e-4)
    table = np.zeros((6, 3), np.float32)
    tokemb.init_pytorch(table, seed=123)  # the same draw without PyTorch
    np.testing.assert_allclose(table, book.weight.detach().numpy(), rtol=2e-6, atol=2e-6)
    emb = tt.TokenPositionEmbedding.from_embeddings(book)
    assert torch.equal(emb(torch.tensor([[2, 3, 5, 1]])), book(torch.tensor([[2, 3, 5, 1]])))

    # Section 2.8: vocab 50257, output_dim 256, batches of 8 windows of max_length 4, stride 4.
    vocab_size, output_dim, max_length = 50257, 256, 4
    ids = np.frombuffer(VERDICT, np.uint8).astype(np.int64)
    windows = tokemb.sliding_windows(ids, max_length, stride=max_length)
    assert windows.shape[0] == tokemb.window_count(len(ids), max_length, max_length)
    inputs = torch.from_numpy(windows[:8].copy())
    torch.manual_seed(123)
    token_embedding_layer = nn.Embedding(vocab_size, output_dim)
    pos_embedding_layer = nn.Embedding(max_length, output_dim)
    token_embeddings = token_embedding_layer(inputs)
    pos_embeddings = pos_embedding_layer(torch.arange(max_length))
    input_embeddings = token_embeddings + pos_embeddings
    assert input_embeddings.shape == (8, 4, 256)

    torch.manual_seed(123)
    emb = tt.TokenPositionEmbedding(vocab_size, output_dim, max_length)
    fused = emb(inputs)
    assert fused.shape == (8, 4, 256)
    assert torch.equal(fused, input_embeddings)


def test_state_dict_round_trip_with_the_books_keys(rng, tmp_path):
    cfg = {"vocab_size": 97, "emb_dim": 16, "context_length": 12, "drop_rate": 0.0}
    torch.manual_seed(seed_from(rng))
    model = GPTModel(cfg)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    sd = torch.load(path, weights_only=True)

    # Build the fused layer from the book model's checkpoint, and from the model itself.
    emb = tt.TokenPositionEmbedding.from_state_dict(sd)
    assert torch.equal(emb.tok_emb.weight, model.tok_emb.weight)
    assert torch.equal(emb.pos_emb.weight, model.pos_emb.weight)
    shared = tt.TokenPositionEmbedding.from_model(model)
    assert shared.tok_emb.weight is model.tok_emb.weight  # shared: nothing copied or retrained

    # The module's own state_dict uses the book's key names both ways.
    fresh = BookPair(cfg["vocab_size"], cfg["emb_dim"], cfg["context_length"])
    fresh.load_state_dict(emb.state_dict())
    assert torch.equal(fresh.tok_emb.weight, model.tok_emb.weight)
    emb2 = tt.TokenPositionEmbedding(cfg["vocab_size"], cfg["emb_dim"], cfg["context_length"])
    emb2.load_state_dict(fresh.state_dict())
    assert torch.equal(emb2.pos_emb.weight, model.pos_emb.weight)

    # The book's GPTModel with tokemb as its input layer loads the checkpoint unchanged and
    # computes the same logits and gradients.
    swapped = TokembGPTModel(cfg)
    swapped.load_state_dict(sd)  # strict: same keys
    ids = torch.from_numpy(rng.integers(0, cfg["vocab_size"], (3, cfg["context_length"])))
    a, b = model(ids), swapped(ids)
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(swapped.tok_emb.weight.grad, model.tok_emb.weight.grad,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swapped.pos_emb.weight.grad, model.pos_emb.weight.grad,
                               rtol=1e-5, atol=1e-5)


def test_optimizer_step_matches_nn_embedding(rng):
    V, D, P, B, T = 64, 12, 8, 4, 8
    torch.manual_seed(seed_from(rng))
    ref = BookPair(V, D, P)
    emb = tt.TokenPositionEmbedding.from_embeddings(copy.deepcopy(ref.tok_emb),
                                                    copy.deepcopy(ref.pos_emb))
    head = nn.Linear(D, V)
    head_ref = copy.deepcopy(head)
    opt = torch.optim.AdamW(list(emb.parameters()) + list(head.parameters()), lr=1e-2)
    opt_ref = torch.optim.AdamW(list(ref.parameters()) + list(head_ref.parameters()), lr=1e-2)
    for _ in range(3):
        ids = torch.from_numpy(rng.integers(0, V, (B, T)))
        tgt = torch.from_numpy(rng.integers(0, V, (B, T)))
        for m, h, o in ((emb, head, opt), (ref, head_ref, opt_ref)):
            o.zero_grad()
            loss = nn.functional.cross_entropy(h(m(ids)).flatten(0, 1), tgt.flatten())
            loss.backward()
            o.step()
    torch.testing.assert_close(emb.tok_emb.weight, ref.tok_emb.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.pos_emb.weight, ref.pos_emb.weight, rtol=1e-4, atol=1e-5)


def test_bad_id_raises_index_error(rng):
    emb = tt.TokenPositionEmbedding(10, 4, 4)
    ids = torch.tensor([[1, 2, 10]])
    with pytest.raises(tokemb.IndexOutOfRange) as ei:
        emb(ids)
    assert (ei.value.batch, ei.value.time, ei.value.value, ei.value.limit) == (0, 2, 10, 10)
    with pytest.raises(tokemb.IndexOutOfRange) as ei:  # T > context_length
        emb(torch.zeros(1, 5, dtype=torch.long))
    assert ei.value.kind == "position"


def test_functional_api_on_torch_tensors(rng):
    V, D, P, B, T = 30, 8, 6, 2, 3
    tok = torch.randn(V, D, requires_grad=True)  # the functional API ignores autograd
    pos = torch.randn(P, D)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    out = tokemb.forward(ids, tok, pos)
    assert isinstance(out, torch.Tensor) and not out.requires_grad
    assert torch.equal(out, tok.detach()[ids] + pos[:T])
    gt = torch.zeros(V, D)
    gp = torch.zeros(P, D)
    dout = torch.randn(B, T, D)
    tokemb.backward(ids, dout, gt, gp, accumulate=False)
    torch.testing.assert_close(gp, torch.cat([dout.sum(0), torch.zeros(P - T, D)]))
    # A transposed view is read in place (issue 21); a transposed table is refused.
    idt = torch.from_numpy(rng.integers(0, V, (T, B))).t()
    assert torch.equal(tokemb.forward(idt, tok, pos), tok.detach()[idt] + pos[:T])
    with pytest.raises(tokemb.InvalidArgument, match="token_table of shape .* must be contiguous"):
        tokemb.forward(ids, tok.detach().t().contiguous().t(), pos)


@pytest.mark.skipif(not tt.USES_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_without_graph_breaks(rng):
    V, D, P, B, T = 40, 8, 8, 2, 6
    emb = tt.TokenPositionEmbedding(V, D, P)
    head = nn.Linear(D, 3)

    def step(ids):
        return head(emb(ids)).square().mean()

    compiled = torch.compile(step, fullgraph=True)  # fails on any graph break
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    loss = compiled(ids)
    loss.backward()
    g = emb.tok_emb.weight.grad.clone()
    emb.zero_grad()
    step(ids).backward()
    torch.testing.assert_close(g, emb.tok_emb.weight.grad)


@pytest.mark.skipif(not tt.USES_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_custom_op_passes_opcheck(rng):
    V, D, P, B, T = 20, 4, 6, 2, 3
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    tok = torch.randn(V, D, requires_grad=True)
    pos = torch.randn(P, D, requires_grad=True)
    # (ids, token_weight, pos_weight, position_offset, position_ids, cu_seqlens, padding_idx,
    #  dropout_p, dropout_mode, seed_offset, deterministic)
    torch.library.opcheck(torch.ops.tokemb.forward.default,
                          (ids, tok, pos, 0, None, None, None, 0.0, "element", None, False))
    cu = torch.tensor([0, 2, 2, B * T], dtype=torch.int32)
    so = tt.draw_seed_offset("cpu")
    torch.library.opcheck(torch.ops.tokemb.forward.default,
                          (ids, tok, pos, 0, None, cu, None, 0.3, "token", so, False))


@pytest.mark.skipif(not tt.USES_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_with_dropout_applies_the_forward_mask_in_backward(rng):
    V, D, P, B, T = 40, 8, 8, 2, 6
    emb = tt.TokenPositionEmbedding(V, D, P, dropout=0.5)
    with torch.no_grad():  # tables in [1, 2]: an output is 0 exactly where it was dropped
        emb.tok_emb.weight.uniform_(1.0, 2.0)
        emb.pos_emb.weight.uniform_(1.0, 2.0)
    compiled = torch.compile(emb, fullgraph=True)  # the seed draw traces too
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    out = compiled(ids)
    dout = torch.randn(B, T, D)
    out.backward(dout)
    keep = (out != 0).float() * 2.0  # 1 / (1 - 0.5)
    ref = nn.Embedding(V, D)
    with torch.no_grad():
        ref.weight.copy_(emb.tok_emb.weight)
    (ref(ids) * keep).backward(dout)
    torch.testing.assert_close(emb.tok_emb.weight.grad, ref.weight.grad)
    a, b = compiled(ids), compiled(ids)
    assert not torch.equal(a == 0, b == 0), "consecutive compiled forwards drew the same mask"


def test_from_state_dict_draws_nothing_from_the_global_rng(rng):
    V, D, P = int(rng.integers(2, 50)), int(rng.integers(1, 16)), int(rng.integers(1, 12))
    sd = {"tok_emb.weight": torch.randn(V, D), "pos_emb.weight": torch.randn(P, D)}
    torch.manual_seed(0)
    emb = tt.TokenPositionEmbedding.from_state_dict(sd, padding_idx=-1)
    after = torch.rand(8)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(8))  # as if the call had not happened
    assert torch.equal(emb.tok_emb.weight, sd["tok_emb.weight"])
    assert torch.equal(emb.pos_emb.weight, sd["pos_emb.weight"])
    # An independent copy, not a view of the state_dict's tensors.
    assert emb.tok_emb.weight.data_ptr() != sd["tok_emb.weight"].data_ptr()
    assert emb.padding_idx == V - 1
    with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
        tt.TokenPositionEmbedding.from_state_dict(sd, padding_idx=V)


def test_padding_idx_passes_through_unchanged(rng):
    V, D, P, B, T = 10, 4, 6, 2, 3
    tw, pw = torch.randn(V, D), torch.randn(P, D)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    # The library names the valid range for the value the caller gave, not a shifted one.
    with pytest.raises(tokemb.InvalidArgument, match="-100") as ei:
        tt.token_position_embedding(ids, tw, pw, padding_idx=-100)
    assert "-90" not in str(ei.value)
    with pytest.raises(tokemb.InvalidArgument, match="padding_idx"):
        tt.token_position_embedding(ids, tw, pw, padding_idx=1.5)
    with pytest.raises(tokemb.InvalidArgument, match="position_offset"):
        tt.token_position_embedding(ids, tw, pw, position_offset=1.7)
    # A negative index still counts from the end, in the forward and the backward.
    tw.requires_grad_(True)
    ids[0, 0] = V - 1
    out = tt.token_position_embedding(ids, tw, pw, padding_idx=-1)
    out.sum().backward()
    assert (tw.grad[V - 1] == 0).all()


def test_parallel_backward_leaves_position_gradient_to_rank_0(monkeypatch, rng):
    """Ranks other than 0 pass no grad_pos (no work thrown away) and all_reduce zeros."""
    import torch.distributed as dist
    V, D, P, B, T = 12, 4, 5, 2, 3
    tw = torch.randn(V, D, requires_grad=True)
    pw = torch.randn(P, D, requires_grad=True)
    ids = torch.from_numpy(rng.integers(0, V, (B, T)))
    monkeypatch.setattr(dist, "all_reduce", lambda t, group=None: None)  # a group of one
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    seen = []
    real_backward = tokemb.backward

    def spy(ids, dout, grad_token, grad_pos=None, **kw):
        seen.append(grad_pos)
        return real_backward(ids, dout, grad_token, grad_pos, **kw)

    monkeypatch.setattr(tt._tk, "backward", spy)
    pids = torch.from_numpy(rng.integers(0, P, (B, T)))
    for rank, position_ids in ((0, None), (1, None), (0, pids), (1, pids)):
        par = tt._Parallel(None, rank, 2, 0, V, None, False, False)
        tw.grad = pw.grad = None
        out = tt._ParallelFunction.apply(ids, tw, pw, par, 0, position_ids, None, 0.0,
                                         "element", None)
        out.backward(torch.ones_like(out))
        if rank == 0:
            assert seen[-1] is not None
            pos = torch.arange(T).repeat(B) if position_ids is None else position_ids.reshape(-1)
            want = torch.zeros(P, D).index_add_(0, pos, torch.ones(B * T, D))
            assert torch.equal(pw.grad, want)
        else:
            assert seen[-1] is None
            assert torch.equal(pw.grad, torch.zeros(P, D))
