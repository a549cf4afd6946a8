// The tokemb CLI's command line: every command and option declared once with CLI11 (type, range,
// default, description), which parses argv and generates the help text. CLI11's own error
// messages are translated into tokemb's wording (see usage_error), which tests and scripts rely
// on; every malformed command line becomes a UsageError, exit code 2.
#include "tools/cli/command_line.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <tokemb/tokemb.hpp>

#include "tools/cli/errors.hpp"

namespace tokemb::cli {

std::string version_line() {
  char buf[128];
  std::snprintf(buf, sizeof buf, "tokemb %d.%d.%d (CUDA backend: %s; CUDA devices visible: %d)",
                TOKEMB_VERSION_MAJOR, TOKEMB_VERSION_MINOR, TOKEMB_VERSION_PATCH,
                TOKEMB_WITH_CUDA ? "yes" : "no", cuda_device_count());
  return buf;
}

namespace {

constexpr std::size_t kHelpColumn = 26;  // where the option descriptions start in the help

// ---- checks of single values (CLI11 validators) ------------------------------------------------
// A validator returns "" or what is wrong with the value; CLI11 raises it as "--name: <text>",
// which usage_error turns into "--name <text>".

// CLI11 takes the next argument as an option's value even when it is another option
// ("--batch --quiet"), and takes "" as a value; both are mistakes on tokemb's command line.
std::string value_problem(const std::string& v) {
  if (v.empty()) return "has an empty value";
  if (v.size() >= 2 && v.compare(0, 2, "--") == 0) {
    return "needs a value, got the option '" + v + "'";
  }
  return "";
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string s;
  for (const std::string& item : items) s += (s.empty() ? "" : sep) + item;
  return s;
}

// A decimal integer of type T in [lo, hi]. The value is rewritten in plain decimal, because CLI11
// converts with base 0 ("010" would be 8, "0x10" 16).
template <typename T>
CLI::Validator integer_in(T lo, T hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& v) -> std::string {
        if (std::string p = value_problem(v); !p.empty()) return p;
        const std::string expected = "; expected an integer in " + range;
        T x{};
        const char* end = v.data() + v.size();
        const auto [ptr, ec] = std::from_chars(v.data(), end, x);
        if (ec == std::errc::result_out_of_range) return v + " is out of range" + expected;
        if (ec != std::errc() || ptr != end) return "'" + v + "' is not a number" + expected;
        if (x < lo || x > hi) return v + " is out of range" + expected;
        v = std::to_string(x);
        return "";
      },
      "");
}

// \p description followed by "; an integer in [lo, hi]" ("an integer >= lo" when hi is T's
// maximum), on a line of its own where the last line would pass 100 columns in the help.
template <typename T>
std::string with_range(const std::string& description, T lo, T hi) {
  const std::string range =
      hi == std::numeric_limits<T>::max()
          ? "an integer >= " + std::to_string(lo)
          : "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  const std::size_t last_line = description.size() - (description.rfind('\n') + 1);
  return description + (kHelpColumn + last_line + 2 + range.size() > 100 ? ";\n" : "; ") + range;
}

CLI::Validator any_value() {
  return CLI::Validator([](std::string& v) { return value_problem(v); }, "");
}

CLI::Validator one_of(std::vector<std::string> choices) {
  return CLI::Validator(
      [choices](std::string& v) -> std::string {
        if (std::string p = value_problem(v); !p.empty()) return p;
        if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
        return "'" + v + "' is not one of: " + join(choices, ", ");
      },
      "");
}

// cpu, cuda or cuda:N. Whether that device exists is a data error found later (choose_device).
CLI::Validator device_name() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (std::string p = value_problem(v); !p.empty()) return p;
        if (v == "cpu" || v == "cuda") return "";
        if (v.compare(0, 5, "cuda:") != 0) return "'" + v + "' is not one of: cpu, cuda, cuda:N";
        if (v.size() == 5 || v.find_first_not_of("0123456789", 5) != std::string::npos) {
          return "'" + v + "': expected cuda:N with N a device index >= 0";
        }
        return "";
      },
      "");
}

// ---- help ---------------------------------------------------------------------------------------

// CLI11's formatter, except that a command's entry in the list of commands shows only the first
// line of its description (the rest, the details, is in the command's own help).
class Formatter : public CLI::Formatter {
 public:
  std::string make_subcommand(const CLI::App* sub) const override {
    const std::string& d = sub->get_description();
    std::stringstream out;
    CLI::detail::format_help(out, sub->get_display_name(true), d.substr(0, d.find('\n')),
                             get_column_width());
    return out.str();
  }
};

// ---- declarations ------------------------------------------------------------------------------

// \p var is a T or a std::optional<T> (absent unless given).
template <typename T, typename Var>
CLI::Option* add_integer(CLI::App& app, const std::string& name, Var& var, const std::string& label,
                         T lo, T hi, const std::string& description) {
  return app.add_option(name, var, with_range(description, lo, hi))
      ->type_name(label)
      ->transform(integer_in(lo, hi));
}

CLI::Option* add_choice(CLI::App& app, const std::string& name, std::string& var,
                        const std::vector<std::string>& choices, const std::string& description) {
  return app.add_option(name, var, description)
      ->type_name(join(choices, "|"))
      ->check(one_of(choices))
      ->capture_default_str();
}

const char* const kDeviceHelp =
    "cpu, cuda or cuda:N (default: cuda:0 if a GPU is visible, else cpu)";

void declare_demo(CLI::App& app, DemoOptions& o) {
  app.description(
      R"TXT(the book's chapter-2 embeddings, on a GPU if present, else on the CPU

Walks through the book's chapter-2 embeddings (Raschka, "Build a Large Language Model (From
Scratch)") with tokemb, on the first CUDA device when there is one, otherwise on the CPU
reference backend (it says which):
  1. torch.manual_seed(123); nn.Embedding(6, 3): the 6x3 token table, initialised
     PyTorch-compatibly, printed; then the embedding of token 3 and of tokens [2, 3, 5, 1].
  2. vocab 50257, dim 256: 8 sequences of 4 tokens cut from a built-in sample (windows of
     max_length 4, stride 4, like the book's data loader), and the shapes of the token,
     positional and combined embeddings ([8, 4, 256]).
  3. A backward pass with an all-ones output gradient, checked against its closed form.
  4. With a GPU: forward and backward repeated on the CPU reference and compared (the error is
     printed). On the CPU this check is skipped, saying why.

The built-in sample is the opening of Edith Wharton's "The Verdict" (1908, public domain),
tokenised byte-level (one token id per UTF-8 byte, ids in [0, 256)): a stand-in for GPT-2's
BPE, which tokemb does not ship. The ids therefore differ from the ones the book prints.
)TXT");
  app.add_option("--device", o.device, kDeviceHelp)->type_name("DEV")->check(device_name());
  app.footer("Exit codes: 0 success, 1 a check failed or a runtime error, 2 a usage error.");
}

void declare_embed(CLI::App& app, EmbedOptions& o) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t kMaxInt = std::numeric_limits<std::int32_t>::max();
  app.description(
      R"TXT(embed token ids (.npy, nanoGPT .bin, llm.c shard) into an [N, T, D] .npy

Reads token ids, cuts them into sliding windows like the book's data loader (GPTDatasetV1:
a window starts at every i = 0, S, 2S, ... with i + T < number of ids, so each window keeps room
for its next-token target), runs the token + positional embedding forward pass batch by batch
and writes the embeddings as a NumPy .npy of shape [N, T, D] (N = number of windows).
)TXT");
  const std::string req = "Required";
  app.add_option("--ids", o.ids,
                 "token ids, in one of these formats (see --format):\n"
                 ".npy: NumPy int32, int64 or uint16 (C order, any shape, flattened)\n"
                 ".bin: raw little-endian uint16, no header (nanoGPT's train.bin)\n"
                 "llm.c shard: 256 int32 header (magic, version, count) + tokens;\n"
                 "  magic 20240520 v1 = uint16 (GPT-2), 20240801 v7 = uint32 (Llama 3)")
      ->type_name("FILE")
      ->required()
      ->check(any_value())
      ->group(req);
  add_integer<std::int64_t>(app, "--vocab", o.vocab, "V", 1, kMax,
                            "vocabulary size, every id in [0, V) (GPT-2: 50257)")
      ->required()
      ->group(req);
  add_integer<std::int64_t>(app, "--dim", o.dim, "D", 1, kMaxInt,
                            "embedding width (GPT-2 small: 768)")
      ->required()
      ->group(req);
  add_integer<std::int64_t>(app, "--context", o.context, "T", 1, kMaxInt,
                            "window length = rows of the position table (GPT-2: 1024)")
      ->required()
      ->group(req);
  app.add_option("--out", o.out,
                 "output .npy (via a new temporary file, renamed into place on success)")
      ->type_name("FILE.npy")
      ->required()
      ->check(any_value())
      ->group(req);

  const std::string opt = "Optional";
  add_integer<std::int64_t>(app, "--stride", o.stride, "S", 1, kMax,
                            "distance between window starts (default: T, windows do not overlap)")
      ->group(opt);
  add_integer<std::int64_t>(app, "--batch", o.batch, "B", 1, kMax,
                            "windows per forward pass (does not change the result)")
      ->capture_default_str()
      ->group(opt);
  CLI::Option* seed = add_integer<std::uint64_t>(
      app, "--seed", o.seed, "N", 0, std::numeric_limits<std::uint64_t>::max(),
      "initialise the tables like torch.manual_seed(N); nn.Embedding(V, D);\n"
      "nn.Embedding(T, D) on the CPU");
  seed->capture_default_str()->group(opt);
  CLI::Option* weights =
      app.add_option("--weights", o.weights,
                     "load the tables from safetensors instead of --seed: \"wte.weight\" [V, D]\n"
                     "and \"wpe.weight\" [T, D] (GPT-2 checkpoint names)")
          ->type_name("FILE")
          ->check(any_value())
          ->group(opt);
  // The tables are either initialised from a seed or loaded from a file.
  seed->excludes(weights);
  weights->excludes(seed);
  add_choice(app, "--dtype", o.dtype, {"f32", "bf16", "f16"},
             "table and output dtype. NumPy has no bfloat16: bf16 results are stored\n"
             "widened, exactly, to float32 '<f4'; f16 as '<f2'")
      ->group(opt);
  app.add_option("--device", o.device, kDeviceHelp)
      ->type_name("DEV")
      ->check(device_name())
      ->group(opt);
  add_choice(app, "--format", o.format, {"auto", "npy", "bin", "llmc"},
             "token file format (bin: raw uint16). auto looks at the magic (.npy or\n"
             "llm.c), then the name: *.bin without an llm.c magic is raw uint16")
      ->group(opt);
  add_integer<std::int64_t>(app, "--max-windows", o.max_windows, "N", 1, kMax,
                            "embed only the first N windows (reads only the ids they need)")
      ->group(opt);
  app.add_option("--save-weights", o.save_weights,
                 "also save the tables used as safetensors (published with the output)")
      ->type_name("FILE")
      ->check(any_value())
      ->group(opt);
  app.add_flag("--quiet", o.quiet, "no progress or summary output (errors are still printed)")
      ->multi_option_policy(CLI::MultiOptionPolicy::Throw)  // like every other option: once
      ->group(opt);
  app.footer(
      R"TXT(Exit codes: 0 success; 2 usage error (bad or missing option: nothing is read or written);
1 data or runtime error (missing, unreadable or malformed file, wrong magic, an id >= V, too few
ids for one window, no CUDA device for --device cuda, ...); 130 interrupted (SIGINT/SIGTERM).
No output may be the same file as an input or as the other output (usage error). Outputs are
published (renamed into place) only after every output was written and every line printed:
whatever the error or interruption, no output file nor temporary file is left behind, and
existing files are left as they were. Progress goes to stderr on runs longer than a second.)TXT");
}

// ---- CLI11's errors in tokemb's words -----------------------------------------------------------
// CLI11 (2.1.2, as pinned in cmake/TokembDependencies.cmake) starts the message of an error about
// one option with "--name: "; where a message cannot be placed, CLI11's own words are kept.

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// " (did you mean --vocab?)" for a near miss among \p app's options, "" otherwise.
std::string suggestion(const std::string& name, const CLI::App& app) {
  std::size_t best = 3;
  std::string hit;
  for (const CLI::Option* o : app.get_options()) {
    for (const std::string& lname : o->get_lnames()) {
      const std::size_t d = edit_distance(name, "--" + lname);
      if (d < best) {
        best = d;
        hit = "--" + lname;
      }
    }
  }
  return hit.empty() ? std::string() : " (did you mean " + hit + "?)";
}

// "; run 'tokemb embed --help' for the options".
std::string see_help(const CLI::App& app) {
  const bool root = app.get_parent() == nullptr;
  return "; run 'tokemb" + (root ? std::string() : " " + app.get_name()) +
         " --help' for the options";
}

std::string command_list(const CLI::App& root) {
  std::vector<std::string> names;
  for (const CLI::App* sub : root.get_subcommands([](const CLI::App*) { return true; })) {
    names.push_back(sub->get_name());
  }
  std::string last = names.back();
  names.pop_back();
  return "the commands are " + join(names, ", ") + " and " + last + " (run 'tokemb --help')";
}

// Arguments CLI11 could not place (allow_extras keeps them instead of raising ExtrasError, so
// that the message can say which one and suggest a near miss). "" when there are none.
std::string extras_problem(const CLI::App& root, const CLI::App* sub) {
  for (const CLI::App* app : {sub, &root}) {
    if (app == nullptr) continue;
    const std::vector<std::string> rest = app->remaining();
    if (rest.empty()) continue;
    const std::string& arg = rest.front();
    if (arg.size() > 1 && arg[0] == '-') {
      const std::string name = arg.substr(0, arg.find('='));
      return "unknown option '" + name + "'" + suggestion(name, *app) + see_help(*app);
    }
    if (app == &root) return "unknown command '" + arg + "'; " + command_list(root);
    if (app->get_options().size() == 1) {  // only --help: help, version
      return "'tokemb " + app->get_name() + "' takes no arguments, got '" + arg + "'";
    }
    return "unexpected argument '" + arg + "'" + see_help(*app);
  }
  return "";
}

// CLI11 reads "--stride=" like "--stride" (taking the next argument as the value) and accepts
// "--quiet=true"; tokemb rejects both, as it always has. "" when argv has neither.
std::string equals_problem(const CLI::App& sub, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    const std::size_t eq = arg.find('=');
    if (arg.compare(0, 2, "--") != 0 || eq == std::string::npos) continue;
    const std::string name = arg.substr(0, eq);
    const CLI::Option* o = sub.get_option_no_throw(name);
    if (o == nullptr) continue;
    if (o->get_expected_max() == 0) return name + " takes no value";
    if (eq + 1 == arg.size()) return name + " has an empty value";
  }
  return "";
}

// The option named at the start of a CLI11 message ("--batch: ..."), or nullptr.
const CLI::Option* named_option(const CLI::App& app, const std::string& what) {
  const std::size_t colon = what.find(": ");
  if (colon == std::string::npos || what.compare(0, 2, "--") != 0) return nullptr;
  return app.get_option_no_throw(what.substr(0, colon));
}

// tokemb's message for a CLI11 parse error raised while parsing \p app's options.
std::string usage_error(const CLI::App& app, const CLI::ParseError& e) {
  const std::string what = e.what();
  if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
    for (const CLI::Option* o : app.get_options()) {
      if (o->get_required() && o->count() == 0) {
        return "missing required option " + o->get_name() + see_help(app);
      }
    }
  } else if (dynamic_cast<const CLI::ExcludesError*>(&e) != nullptr) {
    for (const CLI::Option* o : app.get_options()) {
      for (const CLI::Option* other : o->get_excludes()) {
        if (o->count() > 0 && other->count() > 0) {
          return o->get_name() + " and " + other->get_name() + " are mutually exclusive" +
                 see_help(app);
        }
      }
    }
  } else if (dynamic_cast<const CLI::ValidationError*>(&e) != nullptr) {
    // "--batch: 0 is out of range; ..." -> "--batch 0 is out of range; ...".
    if (const CLI::Option* o = named_option(app, what)) {
      return o->get_name() + " " + what.substr(o->get_name().size() + 2);
    }
  } else if (dynamic_cast<const CLI::ArgumentMismatch*>(&e) != nullptr) {
    // Raised for an option given twice (a single-value option keeps one) and for an option
    // that is the last argument, with no value after it.
    if (const CLI::Option* o = named_option(app, what)) {
      if (o->count() > 1) return o->get_name() + " is given more than once";
      return o->get_name() + " needs a value";
    }
  }
  return what;  // anything else: CLI11's own words
}

}  // namespace

Invocation parse_command_line(int argc, char** argv, std::string& command) {
  Invocation inv;
  CLI::App app(
      "tokemb: fused token + learned positional embedding for GPT-style models (forward and\n"
      "backward), with CUDA kernels and a CPU reference backend.\n",
      "tokemb");
  app.formatter(std::make_shared<Formatter>());  // the commands inherit it
  app.get_formatter()->column_width(kHelpColumn);
  app.get_formatter()->label("SUBCOMMAND", "COMMAND");
  app.set_help_flag("-h,--help", "this text");
  app.set_version_flag("--version", version_line, "version and backends");
  app.require_subcommand(0, 1);
  app.allow_extras();
  app.footer(
      "Run 'tokemb <command> --help' for a command's options.\n"
      "Exit codes: 0 success, 1 data or runtime error, 2 usage error, 130 interrupted (embed).");

  CLI::App* demo = app.add_subcommand("demo");
  declare_demo(*demo, inv.demo);
  CLI::App* embed = app.add_subcommand("embed");
  declare_embed(*embed, inv.embed);
  CLI::App* help = app.add_subcommand(
      "help", "this text, followed by the help of every command (also: tokemb --help)");
  CLI::App* version =
      app.add_subcommand("version", "version and backends (also: tokemb --version)");
  for (CLI::App* sub : {demo, embed, help, version}) {
    sub->group("Commands");
    sub->allow_extras();
    // After the command's own options, so that it is listed last.
    sub->set_help_flag();
    sub->set_help_flag("-h,--help", "this text")->group(sub == embed ? "Optional" : "Options");
  }

  const auto help_of = [](const CLI::App* a, const std::string& name) {
    return a->get_formatter()->make_help(a, name, CLI::AppFormatMode::Normal);
  };
  const auto everything = [&] {
    return help_of(&app, "tokemb") + "\n---- tokemb demo --help\n" + help_of(demo, "tokemb demo") +
           "\n---- tokemb embed --help\n" + help_of(embed, "tokemb embed");
  };
  const auto selected = [&]() -> CLI::App* {
    const std::vector<CLI::App*> subs = app.get_subcommands();
    return subs.empty() ? nullptr : subs.front();
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    CLI::App* sub = selected();
    inv.command = sub != nullptr ? sub->get_name() : "help";
    inv.help =
        sub == demo || sub == embed ? help_of(sub, "tokemb " + sub->get_name()) : everything();
    return inv;
  } catch (const CLI::CallForVersion&) {
    inv.command = "version";
    return inv;
  } catch (const CLI::ParseError& e) {
    CLI::App* sub = selected();
    if (sub != nullptr) command = sub->get_name();
    // CLI11 checks the values before it looks at --help; a request for help still gets it.
    if ((sub == demo || sub == embed) && sub->get_help_ptr()->count() > 0) {
      inv.command = sub->get_name();
      inv.help = help_of(sub, "tokemb " + sub->get_name());
      return inv;
    }
    std::string problem = extras_problem(app, sub);
    if (problem.empty() && sub != nullptr) problem = equals_problem(*sub, argc, argv);
    if (problem.empty()) problem = usage_error(sub != nullptr ? *sub : app, e);
    throw UsageError(problem);
  }
  CLI::App* sub = selected();
  if (sub == nullptr) {
    if (!app.remaining().empty()) throw UsageError(extras_problem(app, nullptr));
    throw UsageError("no command given; " + command_list(app));
  }
  command = inv.command = sub->get_name();
  std::string problem = extras_problem(app, sub);
  if (problem.empty()) problem = equals_problem(*sub, argc, argv);
  if (!problem.empty()) throw UsageError(problem);
  if (sub == help) inv.help = everything();
  return inv;
}

}  // namespace tokemb::cli
