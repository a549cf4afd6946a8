// Fuzzes the token-file readers and the sliding-window helpers. The first bytes choose the format
// (automatic, npy, raw uint16, llm.c), the file name given for detection, max_tokens and the
// window parameters; the rest is the file image. Checks:
//  - parse_token_file throws a tokemb::Error, or returns a concrete format, total_tokens >= 0 and
//    min(total_tokens, max_tokens) ids (all of them for a negative max_tokens);
//  - raw uint16: total = size / 2 and the ids are the little-endian words; llm.c: the size is
//    exactly 1024 + total * token size;
//  - window_count / tokens_for_windows agree with the formula of the book's data loader, and
//    cut_windows / sliding_windows copy exactly the windows they should, never writing outside
//    the destination (checked with canaries).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <tokemb/error.hpp>
#include <tokemb/token_files.hpp>

namespace {

[[noreturn]] void fail(const char* what, long long a = 0, long long b = 0) {
  std::fprintf(stderr, "fuzz_token_files: invariant violated: %s (%lld, %lld)\n", what, a, b);
  std::abort();
}
void check(bool cond, const char* what, long long a = 0, long long b = 0) {
  if (!cond) fail(what, a, b);
}

void fuzz_windows(const std::vector<std::int64_t>& ids, FuzzedDataProvider& in) {
  const std::int64_t L = in.ConsumeIntegralInRange<std::int64_t>(-1, 40);
  const std::int64_t S = in.ConsumeIntegralInRange<std::int64_t>(-1, 40);
  const auto n = static_cast<std::int64_t>(ids.size());
  std::int64_t count = -1;
  try {
    count = tokemb::window_count(n, L, S);
    check(L >= 1 && S >= 1, "window_count accepted a non-positive size", L, S);
    const std::int64_t want = n <= L ? 0 : (n - L - 1) / S + 1;
    check(count == want, "window_count", count, want);
    if (count > 0) {
      const std::int64_t span = tokemb::tokens_for_windows(count, L, S);
      check(span == (count - 1) * S + L + 1, "tokens_for_windows", span, count);
      check(span <= n, "windows span more ids than there are", span, n);
      check(tokemb::window_count(span, L, S) == count, "a prefix of span ids has count windows");
    }
  } catch (const tokemb::InvalidArgument&) {
    check(L < 1 || S < 1, "window_count rejected valid sizes", L, S);
    return;
  }
  // A random range of windows, possibly out of bounds.
  const std::int64_t first = in.ConsumeIntegralInRange<std::int64_t>(-2, count + 2);
  const std::int64_t take = in.ConsumeIntegralInRange<std::int64_t>(-1, count + 2);
  constexpr std::int64_t guard = 16, canary = 0x5a5a5a5a5a5a5a5a;
  const std::int64_t cells = take > 0 ? take * L : 0;
  std::vector<std::int64_t> out(static_cast<std::size_t>(cells + 2 * guard), canary);
  const bool valid = first >= 0 && take >= 0 && first + take <= count;
  try {
    tokemb::cut_windows(ids.data(), ids.size(), L, S, first, take, out.data() + guard);
    check(valid, "cut_windows accepted an out-of-range window", first, take);
    for (std::int64_t w = 0; w < take; ++w)
      for (std::int64_t t = 0; t < L; ++t)
        check(out[static_cast<std::size_t>(guard + w * L + t)] ==
                  ids[static_cast<std::size_t>((first + w) * S + t)],
              "cut_windows copied the wrong id", w, t);
  } catch (const tokemb::InvalidArgument&) {
    check(!valid, "cut_windows rejected a valid range", first, take);
    for (std::int64_t i = guard; i < guard + cells; ++i)
      check(out[static_cast<std::size_t>(i)] == canary, "cut_windows wrote before rejecting");
  }
  for (std::int64_t i = 0; i < guard; ++i) {
    check(out[static_cast<std::size_t>(i)] == canary, "cut_windows wrote before out");
    check(out[out.size() - 1 - static_cast<std::size_t>(i)] == canary,
          "cut_windows wrote past out");
  }
  if (count <= 4096) {
    const auto all = tokemb::sliding_windows(ids, L, S);
    check(static_cast<std::int64_t>(all.size()) == count * L, "sliding_windows size");
    for (std::int64_t w = 0; w < count; ++w)
      check(all[static_cast<std::size_t>(w * L)] == ids[static_cast<std::size_t>(w * S)],
            "sliding_windows start", w);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Parameters from the first 8 bytes (4 for the read, 4 for the windows), the file from the rest.
  if (size < 8) return 0;
  FuzzedDataProvider in(data, 4);
  const auto format = static_cast<tokemb::TokenFormat>(in.ConsumeIntegralInRange<int>(0, 3));
  static const char* const names[] = {"tokens.npy", "train.bin", "shard_000.bin", "tokens",
                                      "<memory>"};
  const std::string name = names[in.ConsumeIntegralInRange<int>(0, 4)];
  const std::int64_t max_tokens = in.ConsumeIntegralInRange<int>(0, 3) == 0
                                      ? in.ConsumeIntegralInRange<std::int64_t>(0, 64)
                                      : -1;
  const std::uint8_t* window_seed = data + 4;
  std::vector<std::uint8_t> file(data + 8, data + size);  // exact size: overreads are caught
  const void* bytes = file.empty() ? nullptr : file.data();

  try {
    (void)tokemb::detect_token_format(bytes == nullptr ? "" : bytes, file.size(), name);
  } catch (const tokemb::IoError&) {
  }

  tokemb::TokenFile tf;
  try {
    tf = tokemb::parse_token_file(bytes, file.size(), format, max_tokens, name);
  } catch (const tokemb::Error& e) {
    check(std::strlen(e.what()) > 0, "empty message");
    return 0;
  }
  check(tf.format != tokemb::TokenFormat::automatic, "format left automatic");
  check(format == tokemb::TokenFormat::automatic || tf.format == format, "format changed");
  check(tf.total_tokens >= 0, "negative token count", tf.total_tokens);
  const std::int64_t want =
      max_tokens < 0 ? tf.total_tokens : std::min<std::int64_t>(max_tokens, tf.total_tokens);
  check(static_cast<std::int64_t>(tf.ids.size()) == want, "number of ids",
        static_cast<long long>(tf.ids.size()), want);
  if (tf.format == tokemb::TokenFormat::raw_u16) {
    check(tf.total_tokens * 2 == static_cast<std::int64_t>(file.size()), "raw size");
    for (std::size_t i = 0; i < tf.ids.size(); ++i)
      check(tf.ids[i] == (file[2 * i] | (file[2 * i + 1] << 8)), "raw id",
            static_cast<long long>(i));
  }
  if (tf.format == tokemb::TokenFormat::llmc) {
    const std::int64_t tsize = tf.type == tokemb::TokenType::u16 ? 2 : 4;
    check(static_cast<std::int64_t>(file.size()) ==
              static_cast<std::int64_t>(tokemb::llmc_header_bytes) + tf.total_tokens * tsize,
          "llm.c size");
  }
  for (std::int64_t id : tf.ids) {
    if (tf.type == tokemb::TokenType::u16)
      check(id >= 0 && id <= 0xffff, "u16 id out of range", id);
    if (tf.type == tokemb::TokenType::u32) check(id >= 0 && id <= 0xffffffffll, "u32 id", id);
    if (tf.type == tokemb::TokenType::i32) check(id >= INT32_MIN && id <= INT32_MAX, "i32 id", id);
  }

  // Range check of the ids against a vocabulary.
  const std::int64_t vocab = 1 + (window_seed[0] * 257 + window_seed[1]) % 70000;
  bool all_in = true;
  for (std::int64_t id : tf.ids) all_in = all_in && id >= 0 && id < vocab;
  try {
    tokemb::check_token_ids(tf.ids, vocab, name);
    check(all_in, "check_token_ids accepted an id outside the vocabulary");
  } catch (const tokemb::IndexOutOfRange& e) {
    check(!all_in, "check_token_ids rejected valid ids");
    check(e.value() < 0 || e.value() >= vocab, "the reported id is valid", e.value());
    check(e.limit() == vocab, "limit", e.limit(), vocab);
  }

  FuzzedDataProvider win(window_seed, 4);
  fuzz_windows(tf.ids, win);
  return 0;
}
