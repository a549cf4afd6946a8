// `tokemb demo`: the book's chapter-2 embedding walk-through, on the GPU when there is one,
// otherwise on the CPU reference backend.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <tokemb/init.hpp>
#include <tokemb/tokemb.hpp>
#include <tokemb/token_files.hpp>

#include "tools/cli/commands.hpp"
#include "tools/cli/common.hpp"
#include "tools/cli/sample_text.hpp"

namespace tokemb::cli {

namespace {

// PyTorch-like rendering of a [rows, cols] matrix with 4 decimals.
std::string matrix_text(const float* v, std::int64_t rows, std::int64_t cols,
                        const std::string& prefix) {
  std::vector<std::string> cells;
  std::size_t width = 0;
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", static_cast<double>(v[i]));
    cells.emplace_back(buf);
    width = std::max(width, cells.back().size());
  }
  std::string s = prefix + "[";
  for (std::int64_t r = 0; r < rows; ++r) {
    if (r) s += ",\n" + std::string(prefix.size() + 1, ' ');
    s += "[";
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::string& cell = cells[static_cast<std::size_t>(r * cols + c)];
      if (c) s += ", ";
      s += std::string(width - cell.size(), ' ') + cell;
    }
    s += "]";
  }
  return s + "])";
}

// "tensor([[ 73,  32,  72,  65],   # "I HA"" ... with the rows aligned under \p prefix.
std::string ids_text(const std::vector<std::int64_t>& ids, std::int64_t rows, std::int64_t cols,
                     const std::string& prefix) {
  std::string s = prefix + "[";
  for (std::int64_t r = 0; r < rows; ++r) {
    if (r) s += "\n" + std::string(prefix.size() + 1, ' ');
    s += "[";
    std::string text;
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::int64_t id = ids[static_cast<std::size_t>(r * cols + c)];
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%3lld", c ? ", " : "", static_cast<long long>(id));
      s += buf;
      text += (id >= 32 && id < 127) ? static_cast<char>(id) : '?';
    }
    s += r + 1 == rows ? "]])  " : "],   ";
    s += "# \"" + text + "\"";
  }
  return s;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  float m = 0.0f;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<float> to_host_floats(const TensorView& v, StreamView stream) {
  std::vector<float> out(static_cast<std::size_t>(v.numel()));
  copy(TensorView(out.data(), DType::f32, v.shape, Device::cpu()), v, stream);
  synchronize(stream);
  return out;
}

}  // namespace

int run_demo(const DemoOptions& options) {
  const Stopwatch clock;
  const DeviceChoice choice = choose_device(options.device);
  const Device dev = choice.device;
  const StreamHolder holder(dev);
  const StreamView stream = holder.view();
  bool ok = true;

  std::printf("tokemb demo: the book's chapter-2 embeddings on %s (%s)\n\n", describe(dev).c_str(),
              choice.reason.c_str());

  // ---- 1. The 6 x 3 example --------------------------------------------------------------------
  std::printf("[1] torch.manual_seed(123); embedding_layer = torch.nn.Embedding(6, 3)\n");
  EmbeddingConfig small_cfg;
  small_cfg.vocab_size = 6;
  small_cfg.dim = 3;
  small_cfg.device = dev;
  Embedding small(small_cfg, stream);
  init_module_pytorch(small, 123);
  const std::vector<float> weight = small.token_table_to_host();
  std::printf("    embedding_layer.weight:\n%s\n\n",
              matrix_text(weight.data(), 6, 3, "    tensor(").c_str());

  std::printf("    embedding_layer(torch.tensor([3])):\n");
  {
    const Buffer ids = ids_on(dev, {3}, Shape{1, 1}, stream);
    Buffer out(DType::f32, Shape{1, 1, 3}, dev);
    small.forward(ids, out);
    const std::vector<float> row = to_host_floats(out, stream);
    small.synchronize();
    std::printf("%s\n", matrix_text(row.data(), 1, 3, "    tensor(").c_str());
    std::printf("    (the book prints [-0.4015, 0.9666, -1.1481] for this row)\n\n");
  }
  std::printf("    embedding_layer(torch.tensor([2, 3, 5, 1])):\n");
  {
    const Buffer ids = ids_on(dev, {2, 3, 5, 1}, Shape{1, 4}, stream);
    Buffer out(DType::f32, Shape{1, 4, 3}, dev);
    small.forward(ids, out);
    const std::vector<float> rows = to_host_floats(out, stream);
    small.synchronize();
    std::printf("%s\n\n", matrix_text(rows.data(), 4, 3, "    tensor(").c_str());
  }

  // ---- 2. GPT-2 sized tables, a batch from the sample ------------------------------------------
  const std::int64_t V = 50257, D = 256, T = 4, S = 4, B = 8;
  const std::vector<std::int64_t> sample = sample_token_ids();
  const std::int64_t available = window_count(static_cast<std::int64_t>(sample.size()), T, S);
  std::vector<std::int64_t> batch(static_cast<std::size_t>(B * T));
  cut_windows(sample.data(), sample.size(), T, S, 0, B, batch.data());
  check_token_ids(batch, V, "built-in sample");
  std::printf(
      "[2] vocab_size = %lld, output_dim = %lld; a batch of %lld sequences of max_length "
      "%lld, stride %lld\n",
      static_cast<long long>(V), static_cast<long long>(D), static_cast<long long>(B),
      static_cast<long long>(T), static_cast<long long>(S));
  std::printf(
      "    built-in sample: the opening of \"The Verdict\" as %zu byte-level token ids\n"
      "    (one id per byte: a stand-in for GPT-2's BPE); %lld windows, the first batch:\n",
      sample.size(), static_cast<long long>(available));
  std::printf("%s\n", ids_text(batch, B, T, "    inputs = tensor(").c_str());

  EmbeddingConfig cfg;
  cfg.vocab_size = V;
  cfg.dim = D;
  cfg.context_length = T;
  cfg.device = dev;
  Embedding big(cfg, stream);
  init_module_pytorch(big, 123);

  const Buffer ids = ids_on(dev, batch, Shape{B, T}, stream);
  Buffer token_emb(DType::f32, Shape{B, T, D}, dev);
  forward(ids, big.token_table(), TensorView(), token_emb, Options(), stream);
  std::printf("    token_embeddings = token_embedding_layer(inputs)        shape %s\n",
              token_emb.shape().str().c_str());

  std::vector<std::int64_t> arange(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) arange[static_cast<std::size_t>(t)] = t;
  const Buffer positions = ids_on(dev, arange, Shape{1, T}, stream);
  Buffer pos_emb(DType::f32, Shape{1, T, D}, dev);
  forward(positions, big.position_table(), TensorView(), pos_emb, Options(), stream);
  std::printf("    pos_embeddings = pos_embedding_layer(torch.arange(%lld))   shape %s\n",
              static_cast<long long>(T), Shape{T, D}.str().c_str());

  Buffer input_emb(DType::f32, Shape{B, T, D}, dev);
  big.forward(ids, input_emb);
  std::printf(
      "    input_embeddings = token_embeddings + pos_embeddings    shape %s "
      "(one fused kernel)\n",
      input_emb.shape().str().c_str());
  const std::vector<float> tok_h = to_host_floats(token_emb, stream);
  const std::vector<float> pos_h = to_host_floats(pos_emb, stream);
  const std::vector<float> fused_h = to_host_floats(input_emb, stream);
  big.synchronize();
  float fused_err = 0.0f;
  for (std::int64_t i = 0; i < B * T * D; ++i) {
    const std::size_t k = static_cast<std::size_t>(i);
    const float expect = tok_h[k] + pos_h[static_cast<std::size_t>(i % (T * D))];
    fused_err = std::max(fused_err, std::fabs(fused_h[k] - expect));
  }
  const bool fused_ok = fused_err == 0.0f;
  ok = ok && fused_ok;
  std::printf("    check: fused output == token + positional, max |diff| = %g  %s\n\n",
              static_cast<double>(fused_err), fused_ok ? "OK" : "MISMATCH");

  // ---- 3. Backward ------------------------------------------------------------------------------
  std::printf("[3] backward with d(loss)/d(input_embeddings) = ones %s\n",
              input_emb.shape().str().c_str());
  const std::vector<float> ones(static_cast<std::size_t>(B * T * D), 1.0f);
  Buffer dout(DType::f32, Shape{B, T, D}, dev);
  copy(dout, TensorView(ones.data(), DType::f32, Shape{B, T, D}, Device::cpu()), stream);
  big.backward(ids, dout);
  const std::vector<float> grad_tok = big.token_grad_to_host();
  const std::vector<float> grad_pos = big.position_grad_to_host();
  // Closed form: every position row gets B ones; token row k gets (count of k in the batch) ones.
  std::vector<float> count(static_cast<std::size_t>(V), 0.0f);
  for (std::int64_t id : batch) count[static_cast<std::size_t>(id)] += 1.0f;
  float tok_err = 0.0f, pos_err = 0.0f;
  std::int64_t touched = 0;
  for (std::int64_t v = 0; v < V; ++v) {
    const float c = count[static_cast<std::size_t>(v)];
    if (c > 0) ++touched;
    for (std::int64_t d = 0; d < D; ++d)
      tok_err = std::max(tok_err, std::fabs(grad_tok[static_cast<std::size_t>(v * D + d)] - c));
  }
  for (float g : grad_pos) pos_err = std::max(pos_err, std::fabs(g - static_cast<float>(B)));
  const auto most = std::max_element(count.begin(), count.end()) - count.begin();
  const bool grad_ok = tok_err == 0.0f && pos_err == 0.0f;
  ok = ok && grad_ok;
  std::printf(
      "    token table gradient: %lld of %lld rows non-zero (the distinct ids in the "
      "batch);\n      row %lld ('%c', %g occurrences in the batch) = %g everywhere\n",
      static_cast<long long>(touched), static_cast<long long>(V), static_cast<long long>(most),
      most >= 32 && most < 127 ? static_cast<char>(most) : '?',
      static_cast<double>(count[static_cast<std::size_t>(most)]),
      static_cast<double>(grad_tok[static_cast<std::size_t>(most * D)]));
  std::printf("    position table gradient: every entry = %g (one per sequence)\n",
              static_cast<double>(grad_pos[0]));
  std::printf("    check: gradients match the closed form, max |diff| = %g  %s\n\n",
              static_cast<double>(std::max(tok_err, pos_err)), grad_ok ? "OK" : "MISMATCH");

  // ---- 4. GPU versus CPU reference ---------------------------------------------------------
  if (dev.is_cuda()) {
    std::printf("[4] GPU versus CPU reference: same tables and ids, a random output gradient\n");
    EmbeddingConfig cpu_cfg = cfg;
    cpu_cfg.device = Device::cpu();
    Embedding ref(cpu_cfg, StreamView::legacy_default());
    const std::vector<float> tok_table = big.token_table_to_host();
    const std::vector<float> pos_table = big.position_table_to_host();
    ref.load_token_table(tok_table.data(), tok_table.size() * sizeof(float));
    ref.load_position_table(pos_table.data(), pos_table.size() * sizeof(float));
    Buffer ref_out(DType::f32, Shape{B, T, D}, Device::cpu());
    const TensorView ref_ids(batch.data(), DType::i64, Shape{B, T}, Device::cpu());
    ref.forward(ref_ids, ref_out);

    // dout uniform in [-1, 1): the gradients are sums of up to B * T different values, so the
    // check exercises the GPU's accumulation order, not just counting.
    std::vector<float> g(static_cast<std::size_t>(B * T * D));
    std::mt19937 rng(2024);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (float& x : g) x = uniform(rng);
    const TensorView g_host(g.data(), DType::f32, Shape{B, T, D}, Device::cpu());
    Buffer g_dev(DType::f32, Shape{B, T, D}, dev);
    copy(g_dev, g_host, stream);
    big.zero_grad();
    big.backward(ids, g_dev);
    ref.backward(ref_ids, g_host);
    ref.synchronize();
    const float* ro = static_cast<const float*>(ref_out.data());
    const std::vector<float> ref_fwd(ro, ro + B * T * D);
    const float fwd_err = max_abs_diff(fused_h, ref_fwd);
    const float bwd_err =
        std::max(max_abs_diff(big.token_grad_to_host(), ref.token_grad_to_host()),
                 max_abs_diff(big.position_grad_to_host(), ref.position_grad_to_host()));
    // Forward is one f32 add on both sides: exact. Backward: the GPU sums in f32 in its own
    // order, the CPU in double; sums of at most B * T = 32 terms of magnitude < 1.
    const float bwd_tol = 1e-5f;
    const bool gpu_ok = fwd_err == 0.0f && bwd_err <= bwd_tol;
    ok = ok && gpu_ok;
    std::printf(
        "    forward: max |GPU - CPU| = %g (expected 0); backward: max |GPU - CPU| = %g "
        "(tolerance %g)  %s\n\n",
        static_cast<double>(fwd_err), static_cast<double>(bwd_err), static_cast<double>(bwd_tol),
        gpu_ok ? "OK" : "MISMATCH");
  } else {
    std::printf(
        "[4] GPU versus CPU reference check: skipped, because this run is on the CPU reference\n"
        "    backend itself (%s)\n\n",
        choice.reason.c_str());
  }

  std::printf("%s in %.2f s\n", ok ? "demo finished" : "demo FAILED a check", clock.seconds());
  return ok ? 0 : 1;
}

}  // namespace tokemb::cli
