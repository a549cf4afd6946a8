// `tokemb embed`: token file -> sliding windows -> forward pass -> [N, T, D] .npy.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <tokemb/init.hpp>
#include <tokemb/io.hpp>
#include <tokemb/tokemb.hpp>
#include <tokemb/token_files.hpp>

#include "tools/cli/commands.hpp"
#include "tools/cli/common.hpp"
#include "tools/cli/errors.hpp"

namespace tokemb::cli {

namespace {

// Prints "embedded 1200/5000 windows (24%)" to stderr at most once a second, after the first
// second; nothing for short runs.
class Progress {
 public:
  Progress(std::int64_t total, bool enabled)
      : total_(total), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0) {}
  void update(std::int64_t done) {
    if (!enabled_) return;
    const double now = clock_.seconds();
    if (now < next_ && done < total_) return;
    if (done == total_ && !printed_) return;
    next_ = now + 1.0;
    printed_ = true;
    const double left = done > 0 ? now * static_cast<double>(total_ - done) / done : 0.0;
    std::fprintf(stderr,
                 "%stokemb embed: %lld/%lld windows (%.0f%%), %.1f s elapsed, ~%.0f s left%s",
                 tty_ ? "\r" : "", static_cast<long long>(done), static_cast<long long>(total_),
                 100.0 * static_cast<double>(done) / static_cast<double>(total_), now, left,
                 tty_ && done < total_ ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  Stopwatch clock_;
  std::int64_t total_;
  bool enabled_, tty_;
  bool printed_ = false;
  double next_ = 1.0;
};

volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int sig) { g_signal = sig; }

// While alive, SIGINT and SIGTERM only set g_signal, so that the batch loop can stop and the
// NpyWriter remove its temporary file; the previous handlers are restored afterwards.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal = 0;
    int_ = std::signal(SIGINT, on_signal);
    term_ = std::signal(SIGTERM, on_signal);
  }
  ~SignalGuard() {
    std::signal(SIGINT, int_ == SIG_ERR ? SIG_DFL : int_);
    std::signal(SIGTERM, term_ == SIG_ERR ? SIG_DFL : term_);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  void (*int_)(int);
  void (*term_)(int);
};

DType table_dtype(const std::string& name) {
  if (name == "f32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  return DType::f16;
}

}  // namespace

int run_embed(const EmbedOptions& options) {
  constexpr std::int64_t kMax = INT64_MAX;
  // ---- the command line: types, ranges and exclusions were checked while parsing it
  // (command_line.cpp); what remains here is a usage error too, exit 2, before touching a file.
  const std::string& ids_path = options.ids;
  const std::int64_t V = options.vocab;
  const std::int64_t D = options.dim;
  const std::int64_t T = options.context;
  const std::string& out_path = options.out;
  const std::int64_t S = options.stride.value_or(T);
  const std::int64_t batch_arg = options.batch;
  const std::int64_t max_windows = options.max_windows.value_or(kMax);
  const std::uint64_t seed = options.seed;
  const DType dtype = table_dtype(options.dtype);
  const TokenFormat format = parse_token_format(options.format);
  const bool quiet = options.quiet;
  const auto say = [quiet](const std::string& line) {
    if (!quiet) std::printf("%s\n", line.c_str());
  };
  if (out_path == ids_path) throw UsageError("--out must not be the --ids file");
  const std::optional<std::string>& device_flag = options.device;

  // ---- data (errors from here on: exit 1) -------------------------------------------------------
  const Stopwatch clock;
  const DeviceChoice choice = choose_device(device_flag);
  const Device dev = choice.device;
  say("tokemb embed: running on " + describe(dev) + " (" + choice.reason + ")");

  // Read only the prefix the requested windows need (all of the file without --max-windows).
  std::int64_t limit = -1;
  if (max_windows != kMax) {
    std::int64_t span = 0;
    if (!__builtin_mul_overflow(max_windows - 1, S, &span) &&
        !__builtin_add_overflow(span, T + 1, &span)) {
      limit = span;
    }
  }
  const TokenFile file = read_token_file(ids_path, format, limit);
  const std::int64_t n_read = static_cast<std::int64_t>(file.ids.size());
  const std::int64_t N = std::min(window_count(n_read, T, S), max_windows);
  if (N == 0) {
    throw IoError(ids_path + ": too short: it holds " + std::to_string(file.total_tokens) +
                  " token ids, but one window of --context " + std::to_string(T) +
                  " needs at least " + std::to_string(T + 1) +
                  " (the window and its next-token target, as in the book's data loader)");
  }
  check_token_ids(file.ids, V, ids_path);
  say("read " + std::to_string(file.total_tokens) + " token ids (" + token_type_name(file.type) +
      ", format " + token_format_name(file.format) + ") from " + ids_path +
      (n_read < file.total_tokens ? "; used the first " + std::to_string(n_read) : ""));

  const Shape out_shape{N, T, D};
  // NumPy has no bfloat16: NpyWriter stores bf16 values widened (exactly) to float32.
  const std::string stored = dtype == DType::bf16 ? "bf16 values stored as f32" : dtype_name(dtype);
  const double out_bytes =
      static_cast<double>(out_shape.numel()) * (dtype == DType::bf16 ? 4 : dtype_size(dtype));
  say("windows: " + std::to_string(N) + " of " + std::to_string(T) + " ids, stride " +
      std::to_string(S) + " -> output " + out_shape.str() + " " + stored + " (" +
      format_bytes(out_bytes) + ")");

  const StreamHolder holder(dev);
  const StreamView stream = holder.view();
  EmbeddingConfig cfg;
  cfg.vocab_size = V;
  cfg.dim = D;
  cfg.context_length = T;
  cfg.dtype = dtype;
  cfg.device = dev;
  Embedding module(cfg, stream);
  if (const auto& weights = options.weights) {
    load_weights(module, *weights);
    say("tables: loaded wte.weight " + Shape{V, D}.str() + " and wpe.weight " + Shape{T, D}.str() +
        " from " + *weights);
  } else {
    init_module_pytorch(module, seed);
    say("tables: token " + Shape{V, D}.str() + " + position " + Shape{T, D}.str() + " " +
        dtype_name(dtype) + ", initialised like torch.manual_seed(" + std::to_string(seed) +
        "); nn.Embedding");
  }

  const std::int64_t B = std::min(batch_arg, N);
  std::vector<std::int64_t> host_ids(static_cast<std::size_t>(B * T));
  Buffer dev_ids, host_out;
  if (dev.is_cuda()) {
    dev_ids = Buffer(DType::i64, Shape{B, T}, dev);
    host_out = Buffer(dtype, Shape{B, T, D}, Device::cpu());
  }
  Buffer out(dtype, Shape{B, T, D}, dev);
  const std::size_t row_bytes = static_cast<std::size_t>(T * D) * dtype_size(dtype);

  const SignalGuard signals;
  NpyWriter writer(out_path, dtype, out_shape);
  Progress progress(N, !quiet);
  for (std::int64_t w = 0; w < N; w += B) {
    if (g_signal != 0) {
      throw Interrupted("interrupted by signal " + std::to_string(g_signal) + " after " +
                        std::to_string(w) + " of " + std::to_string(N) +
                        " windows; nothing was written to " + out_path);
    }
    const std::int64_t b = std::min(B, N - w);
    cut_windows(file.ids.data(), file.ids.size(), T, S, w, b, host_ids.data());
    const TensorView ids_host(host_ids.data(), DType::i64, Shape{b, T}, Device::cpu());
    const TensorView out_view(out.data(), dtype, Shape{b, T, D}, dev);
    const void* result = out.data();
    if (dev.is_cuda()) {
      const TensorView ids_dev(dev_ids.data(), DType::i64, Shape{b, T}, dev);
      copy(ids_dev, ids_host, stream);
      module.forward(ids_dev, out_view);
      copy(TensorView(host_out.data(), dtype, Shape{b, T, D}, Device::cpu()), out_view, stream);
      result = host_out.data();
    } else {
      module.forward(ids_host, out_view);
    }
    module.synchronize();  // raises any out-of-range id recorded on the device
    writer.write(result, static_cast<std::size_t>(b) * row_bytes);
    progress.update(w + b);
  }
  writer.commit();
  char took[32];
  std::snprintf(took, sizeof took, "%.2f s", clock.seconds());
  say("wrote " + out_path + ": " + out_shape.str() + " " + stored + " (" + format_bytes(out_bytes) +
      ") in " + took);

  if (const auto& save = options.save_weights) {
    save_weights(module, *save);
    say("saved the tables to " + *save);
  }
  return 0;
}

}  // namespace tokemb::cli
