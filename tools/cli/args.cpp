// The tokemb CLI's command-line parser.
#include "tools/cli/args.hpp"

#include <algorithm>
#include <charconv>
#include <limits>

namespace tokemb::cli {

namespace {

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

// " (did you mean --vocab?)" for a near miss, "" otherwise.
std::string suggestion(const std::string& name, const std::vector<OptionSpec>& specs) {
  std::size_t best = 3;
  std::string hit;
  for (const OptionSpec& s : specs) {
    const std::size_t d = edit_distance(name, s.name);
    if (d < best) {
      best = d;
      hit = s.name;
    }
  }
  return hit.empty() ? std::string() : " (did you mean --" + hit + "?)";
}

}  // namespace

Args::Args(std::string command, const std::vector<OptionSpec>& specs, int argc, char** argv,
           int first)
    : command_(std::move(command)) {
  const std::string see = "; run 'tokemb " + command_ + " --help' for the options";
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      help_ = true;
      continue;
    }
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      throw UsageError("unexpected argument '" + arg + "'" + see);
    }
    const std::size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const auto spec = std::find_if(specs.begin(), specs.end(),
                                   [&](const OptionSpec& s) { return s.name == name; });
    if (spec == specs.end()) {
      throw UsageError("unknown option '--" + name + "'" + suggestion(name, specs) + see);
    }
    if (values_.count(name)) throw UsageError("option --" + name + " is given more than once");
    std::string value;
    if (!spec->takes_value) {
      if (eq != std::string::npos) throw UsageError("option --" + name + " takes no value");
    } else if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 >= argc) throw UsageError("option --" + name + " needs a value");
      value = argv[++i];
      if (value.size() >= 2 && value.compare(0, 2, "--") == 0) {
        throw UsageError("option --" + name + " needs a value, got the option '" + value + "'");
      }
    }
    if (spec->takes_value && value.empty()) {
      throw UsageError("option --" + name + " has an empty value");
    }
    values_[name] = value;
  }
}

std::optional<std::string> Args::get(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::require(const std::string& name) const {
  const auto v = get(name);
  if (!v) {
    throw UsageError("missing required option --" + name + "; run 'tokemb " + command_ +
                     " --help' for the options");
  }
  return *v;
}

std::int64_t Args::integer(const std::string& name, std::int64_t lo, std::int64_t hi,
                           std::optional<std::int64_t> fallback) const {
  const auto v = fallback ? get(name) : std::optional<std::string>(require(name));
  if (!v) return *fallback;
  std::int64_t x = 0;
  const char* end = v->data() + v->size();
  const auto [ptr, ec] = std::from_chars(v->data(), end, x);
  const std::string range =
      "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (ec == std::errc::result_out_of_range) {
    throw UsageError("--" + name + " " + *v + " is out of range; expected " + range);
  }
  if (ec != std::errc() || ptr != end) {
    throw UsageError("--" + name + " '" + *v + "' is not a number; expected " + range);
  }
  if (x < lo || x > hi) {
    throw UsageError("--" + name + " " + *v + " is out of range; expected " + range);
  }
  return x;
}

std::uint64_t Args::unsigned64(const std::string& name, std::uint64_t fallback) const {
  const auto v = get(name);
  if (!v) return fallback;
  std::uint64_t x = 0;
  const char* end = v->data() + v->size();
  const auto [ptr, ec] = std::from_chars(v->data(), end, x);
  const std::string range =
      "an integer in [0, " + std::to_string(std::numeric_limits<std::uint64_t>::max()) + "]";
  if (ec == std::errc::result_out_of_range) {
    throw UsageError("--" + name + " " + *v + " is out of range; expected " + range);
  }
  if (ec != std::errc() || ptr != end) {
    throw UsageError("--" + name + " '" + *v + "' is not a number; expected " + range);
  }
  return x;
}

std::string Args::choice(const std::string& name, const std::vector<std::string>& choices,
                         const std::string& fallback) const {
  const auto v = get(name);
  if (!v) return fallback;
  if (std::find(choices.begin(), choices.end(), *v) != choices.end()) return *v;
  std::string list;
  for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
  throw UsageError("--" + name + " '" + *v + "' is not one of: " + list);
}

}  // namespace tokemb::cli
