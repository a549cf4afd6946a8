// `tokemb embed`: token file -> sliding windows -> forward pass -> [N, T, D] .npy.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <exception>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <tokemb/init.hpp>
#include <tokemb/io.hpp>
#include <tokemb/tokemb.hpp>
#include <tokemb/token_files.hpp>

#include "tools/cli/commands.hpp"
#include "tools/cli/common.hpp"
#include "tools/cli/errors.hpp"
#include "tools/cli/outputs.hpp"

namespace tokemb::cli {

namespace {

// How often progress lines are printed, in seconds: the first after this long, then once per
// this long. 1 s; the tests set TOKEMB_TEST_PROGRESS_S (e.g. 0.001) to see the lines of a short run.
double progress_period() {
  const char* v = std::getenv("TOKEMB_TEST_PROGRESS_S");
  if (v == nullptr) return 1.0;
  const double p = std::strtod(v, nullptr);
  return p > 0.001 ? p : 0.001;
}

// Prints "embedded 1200/5000 windows (24%)" to stderr at most once a second, after the first
// second; nothing for short runs.
class Progress {
 public:
  Progress(std::int64_t total, bool enabled)
      : total_(total), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0),
        period_(progress_period()), next_(period_) {}
  void update(std::int64_t done) {
    if (!enabled_) return;
    const double now = clock_.seconds();
    if (now < next_ && done < total_) return;
    if (done == total_ && !printed_) return;
    next_ = now + period_;
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
  double period_;
  bool printed_ = false;
  double next_;
};

// While alive, a one-call step with no progress of its own (filling the tables like PyTorch
// does, loading them from a file: 15-30 s at GPT-2 size on a slow machine) says on stderr that
// it is still working: "tokemb embed: initialising the tables (...): 3 s elapsed", once a second
// after the first second, from a thread of its own; nothing for short steps. On a terminal the
// line is rewritten in place; the last one says "done in X s" (nothing more if the step fails).
class Heartbeat {
 public:
  Heartbeat(std::string what, bool enabled)
      : what_(std::move(what)), tty_(isatty(fileno(stderr)) != 0), period_(progress_period()) {
    if (enabled) thread_ = std::thread([this] { run(); });
  }
  ~Heartbeat() {
    if (!thread_.joinable()) return;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
    if (!printed_) return;
    if (std::uncaught_exceptions() > uncaught_) {
      // The step failed: its error follows on a line of its own; no "done".
      if (tty_) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "%stokemb embed: %s: done in %.1f s\n", tty_ ? "\r" : "",
                   what_.c_str(), clock_.seconds());
    }
    std::fflush(stderr);
  }
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (double next = period_;; next += period_) {
      const auto wait = std::chrono::duration<double>(next - clock_.seconds());
      if (wake_.wait_for(lock, wait, [this] { return stop_; })) return;
      std::fprintf(stderr, "%stokemb embed: %s: %.0f s elapsed%s", tty_ ? "\r" : "",
                   what_.c_str(), clock_.seconds(), tty_ ? "" : "\n");
      std::fflush(stderr);
      printed_ = true;
    }
  }

  Stopwatch clock_;
  std::string what_;
  bool tty_;
  double period_;
  int uncaught_ = std::uncaught_exceptions();
  bool printed_ = false;  // written by the thread, read after join()
  bool stop_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
};

volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_signal(int sig) { g_signal = sig; }
bool interrupt_requested() noexcept { return g_signal != 0; }

// While alive, SIGINT and SIGTERM only set g_signal, so that the batch loop and the library's
// writers (through set_write_interrupt_check) can stop and the staged outputs be removed; the
// previous handlers are restored afterwards. A signal the parent set to be ignored (nohup, a
// shell's background job) stays ignored.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal = 0;
    install(SIGINT, int_);
    install(SIGTERM, term_);
    set_write_interrupt_check(&interrupt_requested);
  }
  ~SignalGuard() {
    set_write_interrupt_check(nullptr);
    ::sigaction(SIGINT, &int_, nullptr);
    ::sigaction(SIGTERM, &term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  static void install(int sig, struct sigaction& previous) {
    ::sigaction(sig, nullptr, &previous);
    if (previous.sa_handler == SIG_IGN) return;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;  // as std::signal: reads and writes are not cut short
    sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
  struct sigaction int_ = {};
  struct sigaction term_ = {};
};

// Throws Interrupted when a signal has arrived, saying what was done and that nothing was left.
void stop_if_interrupted(const std::string& where) {
  if (g_signal != 0) {
    throw Interrupted("interrupted by signal " + std::to_string(g_signal) + " " + where +
                      "; no output was written and existing files were left as they were");
  }
}

// Runs \p f (a library call that writes); an IoError raised because a signal arrived becomes
// Interrupted (exit 130).
template <class F>
void interruptible(const std::string& where, F&& f) {
  try {
    f();
  } catch (const IoError&) {
    stop_if_interrupted(where);
    throw;
  }
  stop_if_interrupted(where);
}

// A host vector of \p n elements; allocation failure says what it was for and how large.
template <class T>
std::vector<T> host_vector(std::size_t n, const std::string& what) {
  try {
    return std::vector<T>(n);
  } catch (const std::exception&) {
    throw OutOfMemory("out of host memory allocating " + what + ": " + std::to_string(n) +
                      " elements of " + std::to_string(sizeof(T)) + " bytes (" +
                      format_bytes(static_cast<double>(n) * sizeof(T)) + ")");
  }
}

// Runs \p f; an allocation failure in it (the library's OutOfMemory, or std::bad_alloc) is
// rethrown as OutOfMemory saying what the run was allocating, and how large that is.
template <class F>
decltype(auto) allocating(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const OutOfMemory& e) {
    throw OutOfMemory("out of memory allocating " + what + ": " + e.what(), e.memory(), e.code());
  } catch (const std::bad_alloc&) {
    throw OutOfMemory("out of host memory allocating " + what);
  }
}

// Checks ids [0, count) of the file against the vocabulary, a chunk at a time (memory bounded
// by the chunk, not the file), before anything long starts. Reports the first id outside
// [0, V) by its index in the file, and how many there are.
void check_ids_in_file(const TokenReader& reader, std::int64_t count, std::int64_t V) {
  constexpr std::int64_t kChunk = 1 << 20;
  std::vector<std::int64_t> buf =
      host_vector<std::int64_t>(static_cast<std::size_t>(std::min(count, kChunk)),
                                "a chunk of token ids for the vocabulary check");
  std::uint64_t bad = 0;
  std::int64_t first_index = 0, first_value = 0;
  for (std::int64_t done = 0; done < count;) {
    stop_if_interrupted("while checking the token ids");
    const std::int64_t n = std::min(kChunk, count - done);
    reader.read(done, n, buf.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t id = buf[static_cast<std::size_t>(i)];
      if (id < 0 || id >= V) {
        if (bad++ == 0) {
          first_index = done + i;
          first_value = id;
        }
      }
    }
    done += n;
  }
  if (bad == 0) return;
  throw IndexOutOfRange(reader.path() + ": token id " + std::to_string(first_value) + " at index " +
                            std::to_string(first_index) + " is outside the vocabulary [0, " +
                            std::to_string(V) + "); " + std::to_string(bad) + " of " +
                            std::to_string(count) + " ids are out of range",
                        IndexOutOfRange::Kind::token, first_value, 0, first_index, V, bad);
}

// For the tests of interruption: raise SIGINT at a named point, so that a test can interrupt
// a given phase deterministically (TOKEMB_TEST_SIGINT_AT=save-weights or load-weights), and
// stop the process (SIGSTOP) at one, so that a test can act while it waits
// (TOKEMB_TEST_STOP_AT=first-window or before-publish).
void test_hook_raise_sigint(const char* point) {
  const char* at = std::getenv("TOKEMB_TEST_SIGINT_AT");
  if (at != nullptr && std::strcmp(at, point) == 0) std::raise(SIGINT);
  const char* stop = std::getenv("TOKEMB_TEST_STOP_AT");
  if (stop != nullptr && std::strcmp(stop, point) == 0) std::raise(SIGSTOP);
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
  const DType dtype = parse_dtype(options.dtype);  // f32, bf16 or f16: checked while parsing
  const TokenFormat format = parse_token_format(options.format);
  const bool quiet = options.quiet;
  const auto say = [quiet](const std::string& line) {
    if (!quiet) print_stdout(line + "\n");
  };
  const std::optional<std::string>& weights_path = options.weights;
  const std::optional<std::string>& save_path = options.save_weights;
  const std::optional<std::string>& device_flag = options.device;
  // No output may replace an input or the other output: compared as files, not spellings.
  std::vector<NamedFile> inputs = {{"--ids", ids_path}};
  if (weights_path) inputs.push_back({"--weights", *weights_path});
  std::vector<NamedFile> outputs = {{"--out", out_path}};
  if (save_path) outputs.push_back({"--save-weights", *save_path});
  // "-" is not standard output here: the output is a .npy that is published only when complete.
  for (const NamedFile& o : outputs) {
    if (o.path == "-") {
      throw UsageError(o.option +
                       " '-': tokemb writes its outputs to files (published only when "
                       "complete), not to standard output; for a file named '-', write ./-");
    }
  }
  check_distinct_files(inputs, outputs);

  // ---- data (errors from here on: exit 1) -------------------------------------------------------
  const Stopwatch clock;
  // From here on SIGINT / SIGTERM stop the run (exit 130); the staged outputs are removed.
  const SignalGuard signals;
  // Every output is opened in its directory first (tokemb::OutputFile), so that a missing or
  // unwritable directory or an overlong name is reported before anything is read; nothing is
  // published until everything succeeded.
  const NamedFile out_named{"--out", out_path};
  const std::unique_ptr<OutputFile> out_file = open_output(out_named);
  std::unique_ptr<OutputFile> weights_file;
  if (save_path) weights_file = open_output(NamedFile{"--save-weights", *save_path});

  const DeviceChoice choice = choose_device(device_flag);
  const Device dev = choice.device;
  say("tokemb embed: running on " + describe(dev) + " (" + choice.reason + ")");

  // The ids are streamed window by window: memory is bounded by the batch, not the file.
  const TokenReader reader(ids_path, format);
  const std::int64_t total = reader.size();
  const std::int64_t N = std::min(window_count(total, T, S), max_windows);
  if (N == 0) {
    throw IoError(ids_path + ": too short: it holds " + std::to_string(total) +
                  " token ids, but one window of --context " + std::to_string(T) +
                  " needs at least " + std::to_string(T + 1) +
                  " (the window and its next-token target, as in the book's data loader)");
  }
  // Every id of the file is checked, or with --max-windows those the windows and their
  // targets span.
  const std::int64_t used =
      max_windows == kMax ? total : std::min(total, tokens_for_windows(N, T, S));
  check_ids_in_file(reader, used, V);
  say("read " + std::to_string(total) + " token ids (" + token_type_name(reader.type()) +
      ", format " + token_format_name(reader.format()) + ") from " + ids_path +
      (used < total ? "; used the first " + std::to_string(used) : ""));

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
  const std::string tables = "the tables (" + Shape{V, D}.str() + " + " + Shape{T, D}.str() + " " +
                             dtype_name(dtype) + ", " +
                             format_bytes(static_cast<double>((V + T) * D) * dtype_size(dtype)) +
                             " on " + dev.str() + ")";
  Embedding module = allocating(tables, [&] { return Embedding(cfg, stream); });
  if (weights_path) {
    test_hook_raise_sigint("load-weights");
    interruptible("while loading the tables from " + *weights_path, [&] {
      const Heartbeat beat("loading the tables from " + *weights_path, !quiet);
      allocating(tables + " from " + *weights_path, [&] { load_weights(module, *weights_path); });
    });
    say("tables: loaded wte.weight " + Shape{V, D}.str() + " and wpe.weight " + Shape{T, D}.str() +
        " from " + *weights_path);
  } else {
    allocating(tables + " to initialise them", [&] {
      const Heartbeat beat("initialising " + tables + " like PyTorch", !quiet);
      init_module_pytorch(module, seed);
    });
    say("tables: token " + Shape{V, D}.str() + " + position " + Shape{T, D}.str() + " " +
        dtype_name(dtype) + ", initialised like torch.manual_seed(" + std::to_string(seed) +
        "); nn.Embedding");
  }
  stop_if_interrupted("while preparing the tables");

  const std::int64_t B = std::min(batch_arg, N);
  std::vector<std::int64_t> host_ids = host_vector<std::int64_t>(
      static_cast<std::size_t>(B * T), "the ids of one batch of " + std::to_string(B) + " windows");
  // Windows that overlap or touch (stride <= context) are read as one span per batch and cut
  // with cut_windows (one read, each id decoded once); sparser windows are read one by one, so
  // that the gaps between them are never read.
  const bool span_reads = S <= T;
  std::vector<std::int64_t> span;
  if (span_reads)
    span = host_vector<std::int64_t>(
        static_cast<std::size_t>(tokens_for_windows(B, T, S)),
        "the ids spanned by one batch of " + std::to_string(B) + " windows");
  Buffer dev_ids, host_out;
  if (dev.is_cuda()) {
    dev_ids = allocating("the ids of one batch on the device", [&] {
      return Buffer(DType::i64, Shape{B, T}, dev);
    });
    host_out = allocating("the host copy of one batch's output", [&] {
      return Buffer(dtype, Shape{B, T, D}, Device::cpu());
    });
  }
  Buffer out = allocating("the output of one batch of " + std::to_string(B) + " windows", [&] {
    return Buffer(dtype, Shape{B, T, D}, dev);
  });
  const std::size_t row_bytes = static_cast<std::size_t>(T * D) * dtype_size(dtype);

  {
    NpyWriter writer(*out_file, dtype, out_shape);
    Progress progress(N, !quiet);
    test_hook_raise_sigint("first-window");
    for (std::int64_t w = 0; w < N; w += B) {
      stop_if_interrupted("after " + std::to_string(w) + " of " + std::to_string(N) + " windows");
      const std::int64_t b = std::min(B, N - w);
      if (span_reads) {
        const std::int64_t n = tokens_for_windows(b, T, S);
        reader.read(w * S, n, span.data());
        cut_windows(span.data(), static_cast<std::size_t>(n), T, S, 0, b, host_ids.data());
      } else {
        for (std::int64_t k = 0; k < b; ++k) reader.read((w + k) * S, T, host_ids.data() + k * T);
      }
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
      interruptible("while writing " + out_path,
                    [&] { writer.write(result, static_cast<std::size_t>(b) * row_bytes); });
      progress.update(w + b);
    }
    interruptible("while writing " + out_path, [&] { writer.commit(); });
  }
  char took[32];
  std::snprintf(took, sizeof took, "%.2f s", clock.seconds());
  say("wrote " + out_path + ": " + out_shape.str() + " " + stored + " (" + format_bytes(out_bytes) +
      ") in " + took);

  if (weights_file) {
    test_hook_raise_sigint("save-weights");
    interruptible("while saving the tables to " + *save_path, [&] {
      allocating("the host copy of " + tables + " to save them",
                 [&] { save_weights(module, *weights_file); });
    });
    say("saved the tables to " + *save_path);
  }

  // Publish last: only when every output is complete and stdout took every line; every output
  // is flushed to disk and checked again before the first is renamed into place, in a fixed
  // order (--out, then --save-weights), and each directory is flushed after its rename.
  test_hook_raise_sigint("before-publish");
  stop_if_interrupted("before publishing the outputs");
  flush_stdout();
  stop_if_interrupted("before publishing the outputs");
  std::vector<std::pair<NamedFile, OutputFile*>> ready = {{out_named, out_file.get()}};
  if (weights_file) ready.push_back({NamedFile{"--save-weights", *save_path}, weights_file.get()});
  interruptible("before publishing the outputs", [&] { publish_all(ready); });
  return 0;
}

}  // namespace tokemb::cli
