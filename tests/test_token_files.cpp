// Token-id file readers (.npy, raw uint16, llm.c shards) and the book's sliding windows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <tokemb/error.hpp>
#include <tokemb/io.hpp>
#include <tokemb/token_files.hpp>

namespace tokemb {
namespace {

using Bytes = std::vector<unsigned char>;

void put_le(Bytes& b, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

Bytes npy(const std::string& descr, const std::string& shape, const Bytes& payload,
          bool fortran = false) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                     ", 'shape': " + shape + ", }";
  while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  put_le(b, dict.size(), 2);
  b.insert(b.end(), dict.begin(), dict.end());
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

template <class T>
Bytes le_values(const std::vector<T>& v) {
  Bytes b;
  for (T x : v) put_le(b, static_cast<std::uint64_t>(x), sizeof(T));
  return b;
}

Bytes llmc(std::int32_t magic, std::int32_t version, std::int32_t count, const Bytes& tokens) {
  Bytes b;
  put_le(b, static_cast<std::uint32_t>(magic), 4);
  put_le(b, static_cast<std::uint32_t>(version), 4);
  put_le(b, static_cast<std::uint32_t>(count), 4);
  b.resize(llmc_header_bytes, 0);
  b.insert(b.end(), tokens.begin(), tokens.end());
  return b;
}

TokenFile parse(const Bytes& b, TokenFormat f = TokenFormat::automatic, std::int64_t max = -1,
                const std::string& name = "t.bin") {
  return parse_token_file(b.data(), b.size(), f, max, name);
}

template <class Exc>
std::string message_of(const Bytes& b, TokenFormat f, const std::string& name) {
  try {
    parse(b, f, -1, name);
  } catch (const Exc& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception for " << name;
  return "";
}

const std::vector<std::int64_t> kIds = {5, 0, 65535, 17, 3, 42, 9, 1000};

// ---- formats ------------------------------------------------------------------------------------

TEST(TokenFiles, NpyInt32Int64Uint16) {
  const std::vector<std::int32_t> i32(kIds.begin(), kIds.end());
  const std::vector<std::uint16_t> u16(kIds.begin(), kIds.end());
  struct Case {
    Bytes bytes;
    TokenType type;
  } cases[] = {{npy("<i4", "(8,)", le_values(i32)), TokenType::i32},
               {npy("<i8", "(8,)", le_values(kIds)), TokenType::i64},
               {npy("<u2", "(8,)", le_values(u16)), TokenType::u16}};
  for (const Case& c : cases) {
    const TokenFile f = parse(c.bytes, TokenFormat::automatic, -1, "ids.npy");
    EXPECT_EQ(f.format, TokenFormat::npy);
    EXPECT_EQ(f.type, c.type);
    EXPECT_EQ(f.total_tokens, 8);
    EXPECT_EQ(f.ids, kIds);
  }
}

TEST(TokenFiles, NpyNegativeAndLargeValuesAreKept) {
  const std::vector<std::int64_t> v = {-1, INT64_MAX, INT64_MIN, 7};
  EXPECT_EQ(parse(npy("<i8", "(4,)", le_values(v))).ids, v);
  const std::vector<std::int32_t> w = {-5, INT32_MAX, INT32_MIN};
  EXPECT_EQ(parse(npy("<i4", "(3,)", le_values(w))).ids,
            (std::vector<std::int64_t>{-5, INT32_MAX, INT32_MIN}));
}

TEST(TokenFiles, NpyShapesFlattenInCOrder) {
  const std::vector<std::int32_t> v = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(parse(npy("<i4", "(2, 3)", le_values(v))).ids,
            (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(parse(npy("<i4", "(6, 1)", le_values(v), true)).total_tokens, 6);  // one real dim
  EXPECT_EQ(parse(npy("<i4", "()", le_values(std::vector<std::int32_t>{9}))).ids,
            (std::vector<std::int64_t>{9}));
  EXPECT_EQ(parse(npy("<i4", "(0,)", {})).total_tokens, 0);
  const std::string m =
      message_of<IoError>(npy("<i4", "(2, 3)", le_values(v), true), TokenFormat::npy, "f.npy");
  EXPECT_NE(m.find("Fortran order"), std::string::npos) << m;
}

TEST(TokenFiles, NpyUnsupportedDtypes) {
  // Four elements of the descr's own item size, so that only the dtype is wrong.
  for (const auto& [d, item] :
       {std::pair<const char*, std::size_t>{"<f4", 4}, {"<u4", 4}, {"|u1", 1}, {"<i2", 2}}) {
    const std::string m =
        message_of<IoError>(npy(d, "(4,)", Bytes(4 * item, 0)), TokenFormat::npy, "f.npy");
    EXPECT_NE(m.find("f.npy"), std::string::npos) << m;
    EXPECT_NE(m.find("'<i4'"), std::string::npos) << m;
  }
  const std::string m =
      message_of<IoError>(npy(">i4", "(4,)", Bytes(16, 0)), TokenFormat::npy, "f.npy");
  EXPECT_NE(m.find("big-endian"), std::string::npos) << m;
}

TEST(TokenFiles, NpyTruncatedAndWrongMagic) {
  Bytes b = npy("<i4", "(8,)", Bytes(32, 0));
  b.resize(b.size() - 1);
  EXPECT_THROW(parse(b, TokenFormat::npy), IoError);
  Bytes bad = npy("<i4", "(8,)", Bytes(32, 0));
  bad[1] = 'X';
  const std::string m = message_of<IoError>(bad, TokenFormat::automatic, "ids.npy");
  EXPECT_NE(m.find("wrong magic"), std::string::npos) << m;
  EXPECT_THROW(parse(bad, TokenFormat::npy), IoError);
}

TEST(TokenFiles, RawUint16) {
  const std::vector<std::uint16_t> u16(kIds.begin(), kIds.end());
  const TokenFile f = parse(le_values(u16), TokenFormat::automatic, -1, "train.BIN");
  EXPECT_EQ(f.format, TokenFormat::raw_u16);
  EXPECT_EQ(f.ids, kIds);
  EXPECT_EQ(parse(le_values(u16), TokenFormat::raw_u16, -1, "x.dat").ids, kIds);
  EXPECT_EQ(parse(Bytes{}, TokenFormat::raw_u16).total_tokens, 0);
  const std::string m = message_of<IoError>(Bytes(7, 1), TokenFormat::raw_u16, "a.bin");
  EXPECT_NE(m.find("odd size of 7 bytes"), std::string::npos) << m;
}

TEST(TokenFiles, LlmcVersion1Uint16) {
  const std::vector<std::uint16_t> u16(kIds.begin(), kIds.end());
  const TokenFile f = parse(llmc(llmc_magic_gpt2, 1, 8, le_values(u16)));
  EXPECT_EQ(f.format, TokenFormat::llmc);
  EXPECT_EQ(f.type, TokenType::u16);
  EXPECT_EQ(f.total_tokens, 8);
  EXPECT_EQ(f.ids, kIds);
}

TEST(TokenFiles, LlmcVersion7Uint32) {
  const std::vector<std::uint32_t> u32 = {0, 128255, 70000, 0xFFFFFFFFu};
  const TokenFile f = parse(llmc(llmc_magic_llama3, 7, 4, le_values(u32)), TokenFormat::llmc);
  EXPECT_EQ(f.type, TokenType::u32);
  EXPECT_EQ(f.ids, (std::vector<std::int64_t>{0, 128255, 70000, 4294967295LL}));
}

TEST(TokenFiles, LlmcErrors) {
  const Bytes two = le_values(std::vector<std::uint16_t>{1, 2});
  auto msg = [](const Bytes& b, TokenFormat f = TokenFormat::automatic) {
    return message_of<IoError>(b, f, "shard.bin");
  };
  EXPECT_NE(msg(llmc(llmc_magic_gpt2, 7, 2, two)).find("version 7; expected version 1"),
            std::string::npos);
  EXPECT_NE(msg(llmc(llmc_magic_llama3, 1, 1, two)).find("version 1; expected version 7"),
            std::string::npos);
  EXPECT_NE(msg(llmc(llmc_magic_gpt2, 1, 3, two)).find("truncated"), std::string::npos);
  EXPECT_NE(msg(llmc(llmc_magic_gpt2, 1, 1, two)).find("should be 1026 bytes"), std::string::npos);
  EXPECT_NE(msg(llmc(llmc_magic_gpt2, 1, -1, two)).find("negative token count"), std::string::npos);
  // Wrong magic: explicit format, and automatic detection of an llm.c-shaped header.
  EXPECT_NE(msg(llmc(123, 1, 2, two), TokenFormat::llmc).find("wrong magic 123"),
            std::string::npos);
  EXPECT_NE(msg(llmc(123, 1, 2, two)).find("looks like an llm.c token shard"), std::string::npos);
  // ... which can still be read as raw uint16 when asked to.
  EXPECT_EQ(parse(llmc(123, 1, 2, two), TokenFormat::raw_u16).total_tokens, 514);
  Bytes short_header = llmc(llmc_magic_gpt2, 1, 0, {});
  short_header.resize(100);
  EXPECT_NE(msg(short_header).find("shorter than its 1024-byte header"), std::string::npos);
  EXPECT_EQ(parse(llmc(llmc_magic_gpt2, 1, 0, {})).total_tokens, 0);
}

TEST(TokenFiles, DetectionNeedsMagicOrName) {
  const Bytes raw = le_values(std::vector<std::uint16_t>{1, 2, 3});
  EXPECT_EQ(detect_token_format(raw.data(), raw.size(), "x.bin"), TokenFormat::raw_u16);
  EXPECT_THROW(detect_token_format(raw.data(), raw.size(), "x.txt"), IoError);
  EXPECT_THROW(detect_token_format(raw.data(), raw.size(), ""), IoError);
  EXPECT_THROW(detect_token_format(nullptr, 0, "x.npy"), IoError);
  EXPECT_EQ(detect_token_format(nullptr, 0, "x.bin"), TokenFormat::raw_u16);
  const Bytes n = npy("<i4", "(0,)", {});
  EXPECT_EQ(detect_token_format(n.data(), n.size(), "any.bin"), TokenFormat::npy);
  const Bytes l = llmc(llmc_magic_gpt2, 1, 0, {});
  EXPECT_EQ(detect_token_format(l.data(), l.size(), "x.npy"), TokenFormat::llmc);
  EXPECT_THROW(detect_token_format(nullptr, 5, "x.bin"), InvalidArgument);
  EXPECT_THROW(parse_token_file(nullptr, 5, TokenFormat::raw_u16), InvalidArgument);
}

TEST(TokenFiles, FormatNames) {
  for (TokenFormat f :
       {TokenFormat::automatic, TokenFormat::npy, TokenFormat::raw_u16, TokenFormat::llmc})
    EXPECT_EQ(parse_token_format(token_format_name(f)), f);
  EXPECT_EQ(parse_token_format("raw"), TokenFormat::raw_u16);
  EXPECT_THROW(parse_token_format("csv"), InvalidArgument);
  EXPECT_STREQ(token_type_name(TokenType::u32), "uint32");
}

TEST(TokenFiles, MaxTokensDecodesAPrefixButChecksTheWhole) {
  const std::vector<std::uint16_t> u16(kIds.begin(), kIds.end());
  const TokenFile f = parse(llmc(llmc_magic_gpt2, 1, 8, le_values(u16)), TokenFormat::llmc, 3);
  EXPECT_EQ(f.total_tokens, 8);
  EXPECT_EQ(f.ids, (std::vector<std::int64_t>{5, 0, 65535}));
  EXPECT_EQ(parse(le_values(u16), TokenFormat::raw_u16, 0).ids.size(), 0u);
  EXPECT_EQ(parse(le_values(u16), TokenFormat::raw_u16, 100).ids, kIds);
  EXPECT_THROW(parse(llmc(llmc_magic_gpt2, 1, 9, le_values(u16)), TokenFormat::llmc, 3), IoError);
}

// Every truncation and many corruptions of valid files either parse or raise a tokemb::Error:
// no other exception, no read outside the image (run under ASan to check the latter).
TEST(TokenFiles, TruncatedAndCorruptImagesOnlyRaiseTokembErrors) {
  const std::vector<std::uint16_t> u16(kIds.begin(), kIds.end());
  const std::vector<Bytes> images = {
      npy("<i4", "(8,)", le_values(std::vector<std::int32_t>(kIds.begin(), kIds.end()))),
      npy("<u2", "(2, 4)", le_values(u16)), llmc(llmc_magic_gpt2, 1, 8, le_values(u16)),
      llmc(llmc_magic_llama3, 7, 2, Bytes(8, 0xff))};
  std::mt19937 rng(7);
  for (const Bytes& full : images) {
    for (std::size_t n = 0; n <= full.size(); ++n) {
      const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      for (TokenFormat f :
           {TokenFormat::automatic, TokenFormat::npy, TokenFormat::raw_u16, TokenFormat::llmc}) {
        // A prefix that parses (as a raw file: npy and llmc declare their sizes, so a cut one
        // fails) must read as the first ids of the whole image read in that format.
        try {
          const TokenFile t = parse(cut, f, -1, "x.bin");
          EXPECT_LE(t.ids.size(), n);
          if (n < full.size()) {
            SCOPED_TRACE("image of " + std::to_string(full.size()) + " bytes cut to " +
                         std::to_string(n) + ", format " + token_format_name(f));
            TokenFile whole;
            ASSERT_NO_THROW(whole = parse(full, t.format, -1, "x.bin"))
                << "a cut image parsed where the whole one does not";
            EXPECT_EQ(t.format, TokenFormat::raw_u16) << "only a raw file can be cut and parse";
            ASSERT_LE(t.ids.size(), whole.ids.size());
            EXPECT_TRUE(std::equal(t.ids.begin(), t.ids.end(), whole.ids.begin()));
          }
        } catch (const Error&) {
        }
      }
    }
    for (int trial = 0; trial < 2000; ++trial) {
      Bytes b = full;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<unsigned char>(rng());
      try {
        parse(b, TokenFormat::automatic, -1, "x.bin");
      } catch (const Error&) {
      }
    }
  }
}

// ---- reading from disk -------------------------------------------------------------------------

class TokenFilesOnDisk : public ::testing::Test {
 protected:
  std::string path(const std::string& name) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return ::testing::TempDir() + "tokemb_" + info->name() + "_" + name;
  }
  void write(const std::string& p, const Bytes& b) {
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    created_.push_back(p);
  }
  void TearDown() override {
    for (const std::string& p : created_) std::remove(p.c_str());
  }
  std::vector<std::string> created_;
};

TEST_F(TokenFilesOnDisk, ReadsEveryFormat) {
  const std::vector<std::uint16_t> u16(kIds.begin(), kIds.end());
  const std::string a = path("ids.npy"), b = path("train.bin"), c = path("shard.bin");
  write(a, npy("<i8", "(8,)", le_values(kIds)));
  write(b, le_values(u16));
  write(c, llmc(llmc_magic_gpt2, 1, 8, le_values(u16)));
  EXPECT_EQ(read_token_file(a).ids, kIds);
  EXPECT_EQ(read_token_file(b).format, TokenFormat::raw_u16);
  EXPECT_EQ(read_token_file(b).ids, kIds);
  EXPECT_EQ(read_token_file(c).format, TokenFormat::llmc);
  EXPECT_EQ(read_token_file(c, TokenFormat::automatic, 2).ids, (std::vector<std::int64_t>{5, 0}));
  const std::string empty = path("empty.bin");
  write(empty, {});
  EXPECT_EQ(read_token_file(empty).total_tokens, 0);
}

TEST_F(TokenFilesOnDisk, MissingFileAndDirectory) {
  try {
    read_token_file(path("missing.npy"));
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.npy"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_token_file(::testing::TempDir()), IoError);
}

// Issue 13 item 11: the token reader applies parse_npy's rule to bytes after the data.
TEST(TokenFiles, NpyTrailingBytesAreRejectedLikeParseNpy) {
  std::mt19937_64 rng(std::random_device{}());
  const std::size_t extra = 1 + rng() % 16;
  Bytes b = npy("<i4", "(3,)", le_values(std::vector<std::int32_t>{4, 5, 6}));
  EXPECT_EQ(parse(b, TokenFormat::npy).ids, (std::vector<std::int64_t>{4, 5, 6}));
  b.resize(b.size() + extra, 0);
  const std::string m = message_of<IoError>(b, TokenFormat::npy, "f.npy");
  EXPECT_NE(m.find(std::to_string(extra) + " unexpected bytes"), std::string::npos) << m;
  EXPECT_THROW(parse_npy(b.data(), b.size()), IoError);
}

// Issue 13 item 7: any range of ids is read on demand, equal to what read_token_file decodes.
TEST_F(TokenFilesOnDisk, TokenReaderReadsAnyRangeOfEveryFormat) {
  std::mt19937_64 rng(std::random_device{}());
  const std::size_t n = 1000 + rng() % 200000;  // spans several of the reader's chunks
  std::vector<std::uint16_t> u16(n);
  std::vector<std::uint32_t> u32(n);
  std::vector<std::int64_t> i64(n);
  for (std::size_t i = 0; i < n; ++i) {
    u16[i] = static_cast<std::uint16_t>(rng());
    u32[i] = static_cast<std::uint32_t>(rng());
    i64[i] = static_cast<std::int64_t>(rng());
  }
  struct Case {
    std::string path;
    Bytes bytes;
    TokenFormat format;
    TokenType type;
  };
  const std::vector<Case> cases = {
      {path("a.npy"), npy("<i8", "(" + std::to_string(n) + ",)", le_values(i64)), TokenFormat::npy,
       TokenType::i64},
      {path("a.bin"), le_values(u16), TokenFormat::raw_u16, TokenType::u16},
      {path("s.bin"), llmc(llmc_magic_llama3, 7, static_cast<std::int32_t>(n), le_values(u32)),
       TokenFormat::llmc, TokenType::u32}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    write(c.path, c.bytes);
    const TokenFile whole = read_token_file(c.path);
    const TokenReader r(c.path);
    EXPECT_EQ(r.format(), c.format);
    EXPECT_EQ(r.type(), c.type);
    ASSERT_EQ(r.size(), static_cast<std::int64_t>(n));
    for (int k = 0; k < 20; ++k) {
      const std::int64_t first = static_cast<std::int64_t>(rng() % n);
      const std::int64_t count = static_cast<std::int64_t>(rng() % (n - first + 1));
      std::vector<std::int64_t> got(static_cast<std::size_t>(count));
      r.read(first, count, got.data());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), whole.ids.begin() + first));
    }
    std::int64_t one = 0;
    EXPECT_THROW(r.read(r.size(), 1, &one), InvalidArgument);
    EXPECT_THROW(r.read(-1, 1, &one), InvalidArgument);
  }
}

// Issue 13 item 6: a file truncated by another process while it is read is an IoError, not a
// SIGBUS (which killed the process when token files were memory-mapped).
TEST_F(TokenFilesOnDisk, FileThatShrinksWhileReadIsAnIoError) {
  const std::string p = path("shrinks.bin");
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::uint16_t> ids(4096 + rng() % 4096);
  for (auto& x : ids) x = static_cast<std::uint16_t>(rng());
  write(p, le_values(ids));
  const TokenReader r(p);
  ASSERT_EQ(r.size(), static_cast<std::int64_t>(ids.size()));
  std::filesystem::resize_file(p, 100);
  std::vector<std::int64_t> out(ids.size());
  try {
    r.read(0, r.size(), out.data());
    FAIL() << "reading a shrunk file succeeded";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("changed while reading"), std::string::npos) << e.what();
  }
}

// ---- id range ----------------------------------------------------------------------------------

TEST(TokenFiles, CheckTokenIds) {
  EXPECT_NO_THROW(check_token_ids(kIds, 65536, "f"));
  EXPECT_NO_THROW(check_token_ids({}, 1, "f"));
  try {
    check_token_ids({1, 2, 70000, -1, 3}, 50257, "ids.bin");
    FAIL();
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::token);
    EXPECT_EQ(e.value(), 70000);
    EXPECT_EQ(e.time(), 2);
    EXPECT_EQ(e.limit(), 50257);
    EXPECT_EQ(e.count(), 2u);
    const std::string m = e.what();
    EXPECT_NE(m.find("ids.bin: token id 70000 at index 2 is outside the vocabulary [0, 50257)"),
              std::string::npos)
        << m;
  }
  EXPECT_THROW(check_token_ids({0}, 0, "f"), InvalidArgument);
}

// ---- windows -----------------------------------------------------------------------------------

// The book's loop, literally: for i in range(0, n - max_length, stride).
std::vector<std::int64_t> book_starts(std::int64_t n, std::int64_t max_length,
                                      std::int64_t stride) {
  std::vector<std::int64_t> starts;
  for (std::int64_t i = 0; i < n - max_length; i += stride) starts.push_back(i);
  return starts;
}

TEST(TokenFiles, WindowCountFollowsTheBooksLoader) {
  for (std::int64_t n = 0; n < 40; ++n)
    for (std::int64_t T = 1; T < 10; ++T)
      for (std::int64_t S = 1; S < 12; ++S)
        ASSERT_EQ(window_count(n, T, S), static_cast<std::int64_t>(book_starts(n, T, S).size()))
            << n << " " << T << " " << S;
  EXPECT_EQ(window_count(5145, 4, 4), 1286);
  EXPECT_EQ(window_count(INT64_MAX, 1, 1), INT64_MAX - 1);
  EXPECT_THROW(window_count(10, 0, 1), InvalidArgument);
  EXPECT_THROW(window_count(10, 1, 0), InvalidArgument);
  EXPECT_THROW(window_count(-1, 1, 1), InvalidArgument);
}

TEST(TokenFiles, TokensForWindowsIsTheShortestPrefix) {
  for (std::int64_t c = 0; c < 20; ++c)
    for (std::int64_t T = 1; T < 6; ++T)
      for (std::int64_t S = 1; S < 7; ++S) {
        const std::int64_t n = tokens_for_windows(c, T, S);
        ASSERT_EQ(window_count(n, T, S), c);
        if (n > 0) {
          ASSERT_LT(window_count(n - 1, T, S), c);
        }
      }
  EXPECT_THROW(tokens_for_windows(INT64_MAX, 2, 2), InvalidArgument);
  EXPECT_THROW(tokens_for_windows(1, 0, 1), InvalidArgument);
}

TEST(TokenFiles, CutWindows) {
  std::vector<std::int64_t> ids(11);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(100 + i);
  // n = 11, T = 4, S = 3: starts 0, 3, 6 (9 + 4 = 13 > 10).
  EXPECT_EQ(sliding_windows(ids, 4, 3), (std::vector<std::int64_t>{100, 101, 102, 103, 103, 104,
                                                                   105, 106, 106, 107, 108, 109}));
  std::vector<std::int64_t> out(4, -1);
  cut_windows(ids.data(), ids.size(), 4, 3, 2, 1, out.data());
  EXPECT_EQ(out, (std::vector<std::int64_t>{106, 107, 108, 109}));
  EXPECT_THROW(cut_windows(ids.data(), ids.size(), 4, 3, 2, 2, out.data()), InvalidArgument);
  EXPECT_THROW(cut_windows(ids.data(), ids.size(), 4, 3, -1, 1, out.data()), InvalidArgument);
  EXPECT_THROW(cut_windows(ids.data(), ids.size(), 4, 3, 0, 1, nullptr), InvalidArgument);
  EXPECT_NO_THROW(cut_windows(nullptr, 0, 4, 3, 0, 0, nullptr));
  EXPECT_TRUE(sliding_windows({1, 2, 3}, 3, 1).empty());
}

}  // namespace
}  // namespace tokemb
