// The byte and file layers under every format (host/io/bytes.hpp, host/io/file.hpp): the
// little-endian loads and stores, the one data-size rule, and the writers' temporary files
// (unique, exclusive, never through a link), concurrent writers and interruption.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <tokemb/io.hpp>
#include <tokemb/token_files.hpp>

#include "host/io/bytes.hpp"
#include "host/io/file.hpp"
#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

namespace fs = std::filesystem;
using detail::checked_data_bytes;
using detail::Trailing;

// ---- byte layer --------------------------------------------------------------------------------

TEST(ByteLayer, LittleEndianLoadsAndStoresMatchTheByteOrder) {
  std::mt19937_64 rng(fresh_seed());
  for (int k = 0; k < 1000; ++k) {
    const std::uint64_t v = rng();
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));  // the definition
    EXPECT_EQ(detail::load_u16_le(b), static_cast<std::uint16_t>(v));
    EXPECT_EQ(detail::load_u32_le(b), static_cast<std::uint32_t>(v));
    EXPECT_EQ(detail::load_u64_le(b), v);
    EXPECT_EQ(detail::load_i32_le(b), static_cast<std::int32_t>(static_cast<std::uint32_t>(v)));
    EXPECT_EQ(detail::load_i64_le(b), static_cast<std::int64_t>(v));
    unsigned char s[8] = {};
    detail::store_u64_le(s, v);
    EXPECT_EQ(std::memcmp(s, b, 8), 0);
    std::memset(s, 0, 8);
    detail::store_u32_le(s, static_cast<std::uint32_t>(v));
    EXPECT_EQ(std::memcmp(s, b, 4), 0);
    detail::store_u16_le(s, static_cast<std::uint16_t>(v));
    EXPECT_EQ(std::memcmp(s, b, 2), 0);
  }
}

TEST(ByteLayer, MagicNeedsAllItsBytes) {
  const unsigned char good[] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1};
  EXPECT_TRUE(detail::has_magic(good, 7, detail::npy_magic));
  EXPECT_TRUE(detail::has_magic(good, 6, detail::npy_magic));
  EXPECT_FALSE(detail::has_magic(good, 5, detail::npy_magic));  // too short
  unsigned char bad[7];
  std::memcpy(bad, good, 7);
  bad[std::random_device{}() % 6] ^= 1;
  EXPECT_FALSE(detail::has_magic(bad, 7, detail::npy_magic));
}

std::string rule_message(std::uint64_t count, std::uint64_t item, std::uint64_t offset,
                         std::uint64_t total, Trailing t) {
  try {
    checked_data_bytes(count, item, offset, total, t, "f.bin");
  } catch (const IoError& e) {
    return e.what();
  }
  return "";
}

// The rule the .npy, token-file and llm.c readers share: tested here once, directly, against
// arithmetic done in 128 bits.
TEST(ByteLayer, CheckedDataBytesIsTheOneDataSizeRule) {
  std::mt19937_64 rng(fresh_seed());
  for (int k = 0; k < 20000; ++k) {
    // Mix small and huge values so that both the fits and the overflows are reached.
    auto pick = [&](int bits) {
      return rng() % 3 == 0 ? rng() : rng() % (std::uint64_t{1} << (rng() % bits + 1));
    };
    const std::uint64_t count = pick(40), item = 1 + pick(4), offset = pick(20);
    const unsigned __int128 bytes = static_cast<unsigned __int128>(count) * item;
    const unsigned __int128 end = bytes + offset;
    const std::uint64_t total =
        (end < (static_cast<unsigned __int128>(1) << 64) && rng() % 2)
            ? static_cast<std::uint64_t>(end) + (rng() % 3) - 1  // just short, exact, or one over
            : rng();
    const bool fits = end <= total;
    const bool exact = end == total;
    for (Trailing t : {Trailing::allowed, Trailing::rejected}) {
      const bool ok = fits && (t == Trailing::allowed || exact);
      const std::string m = rule_message(count, item, offset, total, t);
      ASSERT_EQ(m.empty(), ok) << count << " x " << item << " at " << offset << " in " << total
                               << ": " << m;
      if (ok) {
        EXPECT_EQ(checked_data_bytes(count, item, offset, total, t, "f"),
                  static_cast<std::uint64_t>(bytes));
      } else {
        EXPECT_EQ(m.rfind("f.bin: ", 0), 0u) << m;  // names the source first
      }
    }
  }
  // The messages say which rule was broken.
  EXPECT_NE(rule_message(3, 4, 10, 21, Trailing::allowed).find("truncated"), std::string::npos);
  EXPECT_NE(rule_message(3, 4, 10, 25, Trailing::rejected).find("3 unexpected bytes"),
            std::string::npos);
  EXPECT_NE(rule_message(UINT64_MAX, 2, 0, UINT64_MAX, Trailing::allowed).find("overflows"),
            std::string::npos);
  EXPECT_NE(rule_message(1, 16, UINT64_MAX - 8, UINT64_MAX, Trailing::allowed).find("2^64"),
            std::string::npos);
}

TEST(ByteLayer, ErrnoTextIsTheSystemsText) {
  EXPECT_EQ(detail::errno_text(ENOENT), std::string(std::strerror(ENOENT)));
  EXPECT_FALSE(detail::errno_text(123456).empty());
}

// ---- file layer --------------------------------------------------------------------------------

class FileLayer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tokemb_files_" + std::to_string(fresh_seed()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    set_write_interrupt_check(nullptr);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string read(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  static void write(const std::string& p, const std::string& s) {
    std::ofstream(p, std::ios::binary).write(s.data(), static_cast<std::streamsize>(s.size()));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

// Issue 13 item 2: the temporary never follows a link nor touches a file that is already there,
// whatever its name.
TEST_F(FileLayer, TemporaryNeverFollowsALinkNorClobbersAFile) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> v = random_values<float>(16, rng);
  const std::string out = path("out.npy"), victim = path("victim"), mine = path("mine.npy.tmp");
  write(victim, "precious");
  write(mine, "the user's own file");
  fs::create_symlink(victim, path("out.npy.tmp"));
  const std::string old_name_tmp = path("mine.npy");  // its ".tmp" is the user's file
  save_npy(out, host_view(v, DType::f32, {4, 4}), StreamView::legacy_default());
  save_npy(old_name_tmp, host_view(v, DType::f32, {16}), StreamView::legacy_default());
  EXPECT_EQ(read(victim), "precious");
  EXPECT_TRUE(fs::is_symlink(path("out.npy.tmp")));
  EXPECT_EQ(read(mine), "the user's own file");
  EXPECT_EQ(read_npy(out).shape, (Shape{4, 4}));
  EXPECT_EQ(names(), (std::vector<std::string>{"mine.npy", "mine.npy.tmp", "out.npy", "out.npy.tmp",
                                               "victim"}));
}

// Issue 13 item 11: any valid output name works, however long (the temporary's name is cut).
// The output rule (tokemb::output_target) in every writer: a symbolic link is written through
// (the link stays), a replaced file keeps its permissions, and a directory or FIFO is never
// replaced. (A read-only file is refused too, which a test running as root cannot see.)
TEST_F(FileLayer, OutputsGoThroughLinksKeepPermissionsAndNeverReplaceSpecialFiles) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const TensorView t = host_view(const_cast<std::vector<float>&>(v), DType::f32, {2, 3});
  const StreamView s = StreamView::legacy_default();
  const std::string target = path("target.npy"), link = path("link.npy");
  write(target, "old");
  fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write);
  fs::create_symlink(target, link);
  save_npy(link, t, s);
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(read_npy(target).data.size(), 24u);
  EXPECT_EQ(fs::status(target).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  const std::string fifo = path("fifo.npy");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  EXPECT_THROW(save_npy(fifo, t, s), IoError);
  EXPECT_TRUE(fs::is_fifo(fifo));
  fs::create_directory(path("dir.npy"));
  EXPECT_THROW(save_npy(path("dir.npy"), t, s), IoError);
  fs::create_symlink(path("nowhere"), path("dangling.npy"));
  EXPECT_THROW(save_npy(path("dangling.npy"), t, s), IoError);
  EXPECT_FALSE(fs::exists(path("nowhere")));
}

TEST_F(FileLayer, LongestValidOutputNameWorks) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> v = random_values<float>(6, rng);
  const long name_max = ::pathconf(dir_.c_str(), _PC_NAME_MAX);
  const std::string name =
      std::string(static_cast<std::size_t>(name_max > 0 ? name_max : 255) - 4, 'n') + ".npy";
  save_npy(path(name), host_view(v, DType::f32, {2, 3}), StreamView::legacy_default());
  EXPECT_EQ(read_npy(path(name)).data.size(), 24u);
  EXPECT_EQ(names(), std::vector<std::string>{name});
}

// Issue 13 item 3: two writers of one path, interleaved, each publish a whole file; the path
// ends up holding the last one to commit, and nothing else is left.
TEST_F(FileLayer, ConcurrentWritersOfOnePathEachPublishAWholeFile) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> a = random_values<float>(64, rng), b = random_values<float>(64, rng);
  const std::string out = path("out.npy");
  {
    NpyWriter wa(out, DType::f32, {8, 8});
    NpyWriter wb(out, DType::f32, {8, 8});
    wa.write(a.data(), 128);
    wb.write(b.data(), 128);
    wa.write(a.data() + 32, 128);
    wa.commit();
    EXPECT_EQ(std::memcmp(read_npy(out).data.data(), a.data(), 256), 0);
    wb.write(b.data() + 32, 128);
    wb.commit();
  }
  EXPECT_EQ(std::memcmp(read_npy(out).data.data(), b.data(), 256), 0);
  EXPECT_EQ(names(), std::vector<std::string>{"out.npy"});
}

std::atomic<int> g_calls_left{0};
bool stop_after_calls() noexcept { return g_calls_left.fetch_sub(1) <= 0; }

// Issue 13 item 5: long writes stop when the program asks, leaving the old file as it was.
TEST_F(FileLayer, InterruptCheckStopsEveryWriterAndLeavesNothing) {
  std::mt19937_64 rng(fresh_seed());
  EmbeddingConfig c;
  c.vocab_size = 4096 + static_cast<std::int64_t>(rng() % 1024);
  c.dim = 1024;  // 16+ MiB of f32: more than one write chunk
  c.context_length = 8;
  Embedding m(c, StreamView::legacy_default());
  std::vector<float> small = random_values<float>(8, rng);
  const std::string w = path("w.safetensors"), n = path("n.npy");
  write(w, "old weights");
  write(n, "old npy");
  for (int calls : {0, 1}) {  // before the first chunk, and between chunks
    SCOPED_TRACE(calls);
    g_calls_left = calls;
    set_write_interrupt_check(&stop_after_calls);
    try {
      save_weights(m, w);
      FAIL() << "save_weights was not interrupted";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos) << e.what();
    }
    g_calls_left = calls;
    EXPECT_THROW(save_npy(n, host_view(small, DType::f32, {8}), StreamView::legacy_default()),
                 IoError);
    EXPECT_EQ(read(w), "old weights");
    EXPECT_EQ(read(n), "old npy");
    EXPECT_EQ(names(), (std::vector<std::string>{"n.npy", "w.safetensors"}));
  }
  set_write_interrupt_check(nullptr);
  save_npy(n, host_view(small, DType::f32, {8}), StreamView::legacy_default());
  EXPECT_EQ(read_npy(n).data.size(), 32u);
}

// Issue 13 item 6: InputFile reads with pread; a file that shrinks is reported, not a crash.
TEST_F(FileLayer, InputFileReportsAFileThatChangedWhileReading) {
  const std::string p = path("in.bin");
  write(p, std::string(10000 + std::random_device{}() % 1000, 'x'));
  detail::InputFile f(p);
  std::vector<unsigned char> buf(static_cast<std::size_t>(f.size()));
  f.read_at(0, buf.data(), 100);
  fs::resize_file(p, 50);
  try {
    f.read_at(0, buf.data(), buf.size());
    FAIL() << "read a shrunk file";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("changed while reading"), std::string::npos) << e.what();
  }
}

// ---- issue 20 ----------------------------------------------------------------------------------

// Item 1: a path holding NUL is refused by every function that takes one, before any file is
// touched ("victim\0.npy" used to replace "victim").
TEST_F(FileLayer, PathsWithNulAreRefusedBeforeTouchingAnything) {
  std::vector<float> v = {1, 2, 3, 4};
  const TensorView t = host_view(v, DType::f32, {4});
  const StreamView s = StreamView::legacy_default();
  const std::string victim = path("victim");
  write(victim, "precious");
  const std::string bad = victim + std::string(1, '\0') + ".npy";
  EmbeddingConfig c;
  c.vocab_size = 4;
  c.dim = 4;
  c.context_length = 4;
  Embedding m(c, s);
  std::vector<std::pair<std::string, TensorView>> tensors = {{"a", t}};
  const std::vector<std::function<void()>> calls = {
      [&] { save_npy(bad, t, s); },         [&] { load_npy(bad, t, s); },
      [&] { (void)read_npy(bad); },         [&] { save_safetensors(bad, tensors, s); },
      [&] { (void)read_safetensors(bad); }, [&] { save_weights(m, bad); },
      [&] { load_weights(m, bad); },        [&] { NpyWriter w(bad, DType::f32, {4}); },
      [&] { OutputFile f(bad); },           [&] { (void)output_target(bad); },
      [&] { (void)read_token_file(bad); },  [&] { TokenReader r(bad); },
  };
  for (std::size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE(i);
    try {
      calls[i]();
      ADD_FAILURE() << "a path with NUL was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("NUL"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read(victim), "precious");
    EXPECT_EQ(names(), std::vector<std::string>{"victim"});
  }
}

// Item 3: where the file system has O_TMPFILE, the data has no name until it is published, so a
// killed process leaves nothing; elsewhere (forced here) a named temporary that is removed.
TEST_F(FileLayer, OutputFileDataHasNoNameUntilItIsPublished) {
  for (bool unnamed : {true, false}) {
    SCOPED_TRACE(unnamed);
    detail::set_unnamed_output_files(unnamed);
    const std::string out = path("out.bin");
    {
      OutputFile f(out);
      if (unnamed && !f.unnamed()) {
        detail::set_unnamed_output_files(true);
        GTEST_SKIP() << "this file system has no O_TMPFILE";
      }
      EXPECT_EQ(f.unnamed(), unnamed);
      f.write("hello", 5);
      EXPECT_EQ(names().size(), unnamed ? 0u : 1u);
      f.prepare();  // flushed, named, checked: ready
      EXPECT_EQ(names().size(), 1u);
      EXPECT_FALSE(fs::exists(out));
      f.publish();
    }
    EXPECT_EQ(read(out), "hello");
    EXPECT_EQ(names(), std::vector<std::string>{"out.bin"});
    {
      OutputFile abandoned(out);
      abandoned.write("x", 1);
    }  // discarded
    EXPECT_EQ(read(out), "hello");
    EXPECT_EQ(names(), std::vector<std::string>{"out.bin"});
    fs::remove(out);
  }
  detail::set_unnamed_output_files(true);
}

// Item 2: the data is never reopened by name; a temporary swapped for a link (or another file)
// while the output is written is never published.
TEST_F(FileLayer, ASwappedTemporaryIsNeverPublished) {
  detail::set_unnamed_output_files(false);  // a named temporary from the start
  const std::string out = path("out.bin"), victim = path("victim");
  write(victim, "precious");
  {
    OutputFile f(out);
    f.write("mine", 4);
    std::string tmp;
    for (const std::string& n : names())
      if (n.find(".tmp-") != std::string::npos) tmp = path(n);
    ASSERT_FALSE(tmp.empty());
    fs::remove(tmp);
    fs::create_symlink(victim, tmp);
    f.write("more", 4);
    EXPECT_THROW(f.commit(), IoError);
  }
  detail::set_unnamed_output_files(true);
  EXPECT_EQ(read(victim), "precious");
  EXPECT_FALSE(fs::exists(fs::symlink_status(out)));
}

// Item 4: prepare() checks the output again, so that an output that became a directory (or
// read-only) while the work ran fails before anything is published.
TEST_F(FileLayer, PrepareChecksTheOutputAgain) {
  const std::string a = path("a.bin"), b = path("b.bin");
  write(a, "old a");
  OutputFile fa(a), fb(b);
  fa.write("new a", 5);
  fb.write("new b", 5);
  fs::create_directory(b);
  fa.prepare();
  try {
    fb.prepare();
    FAIL() << "prepared over a directory";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("a directory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read(a), "old a");  // nothing was published
}

// Item 9: a name longer than the file system allows is refused when the file is opened, not at
// the final rename after all the work.
TEST_F(FileLayer, OverlongNamesAreRefusedWhenTheOutputIsOpened) {
  const long name_max = ::pathconf(dir_.c_str(), _PC_NAME_MAX);
  const std::string longest(static_cast<std::size_t>(name_max > 0 ? name_max : 255), 'n');
  for (const std::string& p : {path(longest + "x"), path(longest + "x/out.npy")}) {
    try {
      OutputFile f(p);
      ADD_FAILURE() << "opened " << p.size() << " bytes";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(std::strerror(ENAMETOOLONG)), std::string::npos)
          << e.what();
    }
  }
  EXPECT_TRUE(names().empty());
}

// Item 13: read-only is decided from the mode bits: a 0444 file is refused also when the test
// runs as root (whom access() always grants write permission).
TEST_F(FileLayer, ReadOnlyOutputsAreRefusedEvenForRoot) {
  std::vector<float> v = {1, 2};
  const std::string out = path("ro.npy");
  write(out, "read only");
  fs::permissions(out, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  try {
    save_npy(out, host_view(v, DType::f32, {2}), StreamView::legacy_default());
    FAIL() << "replaced a 0444 file (euid " << ::geteuid() << ")";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("read-only"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read(out), "read only");
  EXPECT_EQ(names(), std::vector<std::string>{"ro.npy"});
}

// Item 6: a FIFO (no writer: a blocking open would never return), a directory or a device is
// refused by every reader, saying what it is.
TEST_F(FileLayer, ReadersRefuseFifosAndDevicesWithoutBlocking) {
  const std::string fifo = path("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  EmbeddingConfig c;
  c.vocab_size = 4;
  c.dim = 4;
  c.context_length = 4;
  Embedding m(c, StreamView::legacy_default());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {fifo, "a FIFO (named pipe)"},
      {"/dev/null", "a character device"},
      {dir_.string(), "a directory"}};
  for (const auto& one : cases) {
    // Not a structured binding: lambdas cannot capture those in C++17 (clang refuses).
    const std::string& p = one.first;
    const std::string& what = one.second;
    SCOPED_TRACE(p);
    const std::vector<std::function<void()>> calls = {
        [&] { (void)read_npy(p); }, [&] { (void)read_safetensors(p); }, [&] { load_weights(m, p); },
        [&] { (void)read_token_file(p); }, [&] { TokenReader r(p); }};
    for (const auto& call : calls) {
      try {
        call();
        ADD_FAILURE() << "read " << p;
      } catch (const IoError& e) {
        EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace tokemb::test
