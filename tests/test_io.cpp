// Weights I/O: .npy and safetensors round trips, files built here byte by byte from the
// published formats, and corrupt, truncated and mismatched files.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <tokemb/io.hpp>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

namespace fs = std::filesystem;
const StreamView host_stream = StreamView::legacy_default();

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}
std::string le(std::uint64_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A .npy file as NumPy's format document describes it: magic, version, little-endian header
// length (2 bytes in 1.0, 4 in 2.0), the header text, the data.
std::string npy_file(int major, const std::string& header, const std::string& data) {
  std::string s = "\x93NUMPY";
  s += static_cast<char>(major);
  s += '\0';
  s += le(header.size(), major == 1 ? 2 : 4);
  return s + header + data;
}

// A safetensors file: 8-byte little-endian header length, the JSON header, the data buffer.
std::string st_file(const std::string& json, const std::string& data) {
  return le(json.size(), 8) + json + data;
}

template <class F>
void expect_only_tokemb_errors(F&& f, const std::string& what) {
  try {
    f();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": a non-tokemb exception escaped: " << e.what();
  } catch (...) {
    ADD_FAILURE() << what << ": a non-exception was thrown";
  }
}

// 4000 corruptions of a valid file (1 to 4 bytes replaced, by random bytes or by characters the
// format's grammar cares about, and one time in four a truncation), each handed to `parse`,
// which may only fail with a tokemb error.
template <class Parse>
void corrupt_and_parse(const std::string& good, const std::string& interesting,
                       std::mt19937_64& rng, const std::string& what, Parse&& parse) {
  for (int iter = 0; iter < 4000; ++iter) {
    std::string s = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t pos = rng() % s.size();
      s[pos] = (rng() & 1) ? static_cast<char>(rng()) : interesting[rng() % interesting.size()];
    }
    if (rng() % 4 == 0) s.resize(rng() % s.size());
    expect_only_tokemb_errors([&] { parse(s); }, what);
  }
}

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tokemb_io_" + std::to_string(fresh_seed()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Temporary files a writer left in the test directory (".NAME.tmp-XXXXXX").
  std::vector<std::string> temporaries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (name.find(".tmp") != std::string::npos) out.push_back(name);
    }
    return out;
  }
  fs::path dir_;
};

// ---- .npy -------------------------------------------------------------------------------------

TEST_F(IoTest, NpyRoundTripsEveryDtypeAndRank) {
  std::mt19937_64 rng(fresh_seed());
  const std::vector<Shape> shapes = {Shape{7}, Shape{3, 5}, Shape{2, 3, 4}, Shape{2, 1, 3, 2},
                                     Shape{}};
  for (const Shape& shape : shapes) {
    const std::size_t n = static_cast<std::size_t>(shape.numel());
    std::vector<float> f = random_values<float>(n, rng, 3.0f);
    std::vector<f16_t> h = random_values<f16_t>(n, rng, 3.0f);
    std::vector<bf16_t> b = random_values<bf16_t>(n, rng, 3.0f);
    std::vector<std::int32_t> i32(n);
    std::vector<std::int64_t> i64(n);
    for (auto& x : i32) x = static_cast<std::int32_t>(rng());
    for (auto& x : i64) x = static_cast<std::int64_t>(rng());
    struct Case {
      TensorView view;
      DType file_dtype;
    };
    const Case cases[] = {{host_view(f, DType::f32, shape), DType::f32},
                          {host_view(h, DType::f16, shape), DType::f16},
                          {host_view(b, DType::bf16, shape), DType::f32},
                          {host_view(i32, DType::i32, shape), DType::i32},
                          {host_view(i64, DType::i64, shape), DType::i64}};
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(c.view.dtype)) + " " + shape.str());
      const std::string p = path("t.npy");
      save_npy(p, c.view, host_stream);
      EXPECT_TRUE(temporaries().empty());
      const HostTensor t = read_npy(p);
      EXPECT_EQ(t.dtype, c.file_dtype);
      EXPECT_EQ(t.shape, shape);
      if (c.view.dtype == DType::bf16) {  // widened: every value exact
        for (std::size_t k = 0; k < n; ++k) {
          float x;
          std::memcpy(&x, t.data.data() + 4 * k, 4);
          EXPECT_EQ(x, b[k].to_float());
        }
      } else {
        ASSERT_EQ(t.data.size(), c.view.bytes());
        EXPECT_TRUE(same_bits(t.data.data(), c.view.data, c.view.bytes()));
      }
      // load_npy into a fresh tensor of the original dtype: bitwise equal.
      std::vector<unsigned char> back(c.view.bytes(), 0xAB);
      load_npy(p, TensorView(back.data(), c.view.dtype, shape, Device::cpu()), host_stream);
      EXPECT_TRUE(same_bits(back.data(), c.view.data, c.view.bytes()));
    }
  }
}

TEST_F(IoTest, NpyFileLayoutFollowsTheNumpyFormat) {
  std::vector<float> v = {1.5f, -2.0f, 0.25f, 8.0f, 3.0f, -0.0f};
  const std::string p = path("layout.npy");
  save_npy(p, host_view(v, DType::f32, {2, 3}), host_stream);
  const std::string s = read_bytes(p);
  ASSERT_GE(s.size(), 10u);
  EXPECT_EQ(s.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(s[6], 1);
  EXPECT_EQ(s[7], 0);
  const std::size_t hlen =
      static_cast<unsigned char>(s[8]) | (static_cast<unsigned char>(s[9]) << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u);
  const std::string header = s.substr(10, hlen);
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_EQ(header.substr(0, dict.size()), dict);
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(header.find_first_not_of(' ', dict.size()), hlen - 1);
  EXPECT_EQ(s.substr(10 + hlen), raw(v));

  std::vector<std::int64_t> one = {42, 43, 44};
  save_npy(p, host_view(one, DType::i64, {3}), host_stream);
  EXPECT_NE(read_bytes(p).find("'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"),
            std::string::npos);
}

TEST_F(IoTest, NpyParsesHeadersOtherWritersProduce) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  struct Case {
    int major;
    std::string header;
  };
  const Case cases[] = {
      // NumPy >= 1.24 leaves spare spaces after the dict; older ones do not.
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                    \n"},
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n"},
      {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n"},
      {3, "{\"shape\": (2, 3), \"descr\": \"<f4\", \"fortran_order\": False}\n"},
      {1, "{'descr':'<f4','fortran_order':False,'shape':(2L, 3L)}\n"},  // Python 2
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    const std::string file = npy_file(c.major, c.header, raw(v));
    const HostTensor t = parse_npy(file.data(), file.size());
    EXPECT_EQ(t.dtype, DType::f32);
    EXPECT_EQ(t.shape, (Shape{2, 3}));
    EXPECT_EQ(std::string(t.data.begin(), t.data.end()), raw(v));
    const NpyHeader h = parse_npy_header(file.data(), file.size());
    EXPECT_EQ(h.descr, "<f4");
    EXPECT_EQ(h.data_offset, file.size() - 24);
    EXPECT_EQ(h.data_bytes, 24u);
  }
  // The header parser accepts any descr and computes its item size.
  const std::string u = npy_file(1, "{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }\n",
                                 std::string(24, 'x'));
  EXPECT_EQ(parse_npy_header(u.data(), u.size()).data_bytes, 24u);
  EXPECT_THROW(parse_npy(u.data(), u.size()), IoError);  // but parse_npy supports only four
}

TEST_F(IoTest, NpyCorruptTruncatedAndUnsupportedFilesAreRefused) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const std::string good =
      npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", raw(v));
  ASSERT_NO_THROW(parse_npy(good.data(), good.size()));
  for (std::size_t len = 0; len < good.size(); ++len)
    EXPECT_THROW(parse_npy(good.data(), len), IoError) << "truncated to " << len << " bytes";
  EXPECT_THROW(parse_npy(nullptr, 5), InvalidArgument);

  auto with_header = [&](int major, const std::string& h, const std::string& data) {
    return npy_file(major, h, data);
  };
  const std::string d24 = raw(v);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"bad magic", "\x93NUMPX" + good.substr(6)},
      {"version 4",
       with_header(4, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n", d24)},
      {"version 1.1",
       [&] {
         std::string s = good;
         s[7] = 1;
         return s;
       }()},
      {"header length beyond file", good.substr(0, 8) + le(60000, 2) + good.substr(10)},
      {"not a dict", with_header(1, "['descr', '<f4']\n", d24)},
      {"missing shape", with_header(1, "{'descr': '<f4', 'fortran_order': False}\n", d24)},
      {"unknown key",
       with_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}\n", d24)},
      {"duplicate key",
       with_header(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}\n",
                   d24)},
      {"unterminated string",
       with_header(1, "{'descr: '<f4', 'fortran_order': False, 'shape': (6,)}\n", d24)},
      {"escape",
       with_header(1, "{'descr': '<f\\4', 'fortran_order': False, 'shape': (6,)}\n", d24)},
      {"bad bool", with_header(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (6,)}\n", d24)},
      {"negative dim",
       with_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-6,)}\n", d24)},
      {"dim overflow",
       with_header(
           1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}\n", d24)},
      {"numel overflow", with_header(1,
                                     "{'descr': '<f4', 'fortran_order': False, 'shape': "
                                     "(4294967296, 4294967296, 4294967296)}\n",
                                     d24)},
      {"byte size overflow",
       with_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}\n",
                   d24)},
      {"more data declared than present",
       with_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,)}\n", d24)},
      {"trailing bytes", good + "xyz"},
      {"big-endian",
       with_header(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (6,)}\n", d24)},
      {"u2", with_header(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (12,)}\n", d24)},
      {"object", with_header(1, "{'descr': '|O', 'fortran_order': False, 'shape': (3,)}\n", d24)},
      {"structured",
       with_header(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}\n", d24)},
      {"fortran order",
       with_header(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3)}\n", d24)},
      {"rank 9",
       with_header(1,
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 2, 3, 1)}\n",
                   d24)},
      {"garbage after dict",
       with_header(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,)} x\n", d24)},
  };
  for (const auto& [what, bytes] : bad) {
    EXPECT_THROW(parse_npy(bytes.data(), bytes.size()), IoError) << what;
    const std::string p = path("bad.npy");
    write_bytes(p, bytes);
    EXPECT_THROW(read_npy(p), IoError) << what;
  }
  EXPECT_THROW(read_npy(path("does_not_exist.npy")), IoError);
  EXPECT_THROW(read_npy(dir_.string()), IoError);  // a directory
}

// The three size checks of the .npy header, each on an input that only it refuses (audit
// mutants: without one of them the parser returned offsets or sizes past its input).
TEST_F(IoTest, NpyHeaderBoundsAreCheckedExactly) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const std::string good =
      npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", raw(v));
  auto io_error = [](const std::string& bytes) -> std::string {
    try {
      const NpyHeader h = parse_npy_header(bytes.data(), bytes.size());
      ADD_FAILURE() << "parsed: data at " << h.data_offset << ", " << h.data_bytes
                    << " bytes, input of " << bytes.size();
    } catch (const IoError& e) {
      std::string hdr_msg = e.what();
      try {  // parse_npy goes through the same header checks
        (void)parse_npy(bytes.data(), bytes.size());
        ADD_FAILURE() << "parse_npy accepted what parse_npy_header refused";
      } catch (const IoError& e2) {
        EXPECT_EQ(std::string(e2.what()), hdr_msg);
      }
      return hdr_msg;
    }
    return "";
  };
  auto has = [](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' is not in: " << msg;
  };
  // Header length past the input: a 40-byte prefix of a file whose header is 64 - 10 bytes.
  const std::size_t hlen = good.size() - 10 - 24;
  std::string msg = io_error(good.substr(0, 40));
  has(msg, "the header declares " + std::to_string(hlen) + " bytes but only 30 follow");
  // Data size past the input: shape (10^9,) with 24 bytes of data.
  msg = io_error(
      npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }\n", raw(v)));
  has(msg, "1000000000 elements of 4 bytes need 4000000000 bytes");
  has(msg, "but only 24 follow");
  // Element count overflow: 2^62 * 4 * 6 does not fit in 64 bits (no data at all).
  msg = io_error(npy_file(
      1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4, 6), }\n", ""));
  has(msg, "the element count of the shape overflows");
  // Data size overflow: 2^62 elements fit, 2^62 * 4 bytes do not.
  msg = io_error(npy_file(
      1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }\n", ""));
  has(msg, "the data size (4611686018427387904 elements of 4 bytes) overflows");
}

TEST_F(IoTest, NpyRandomCorruptionNeverEscapesAsAnythingButTokembErrors) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> v = random_values<float>(12, rng);
  const std::string good =
      npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n", raw(v));
  const std::string interesting = "0123456789(),:'\"{} \n-LTF<>|fiu\x93\xff";
  // What a corrupted file that still parses gives must describe bytes inside it: the header's
  // data range within the input, and the tensor holding exactly the declared elements.
  corrupt_and_parse(good, interesting, rng, "parse_npy", [](const std::string& b) {
    const NpyHeader h = parse_npy_header(b.data(), b.size());
    ASSERT_LE(h.data_offset, b.size());
    ASSERT_LE(h.data_bytes, b.size() - h.data_offset);
    const HostTensor t = parse_npy(b.data(), b.size());
    EXPECT_EQ(h.data_offset + h.data_bytes, b.size()) << "bytes after the data were accepted";
    EXPECT_EQ(t.data.size(), static_cast<std::size_t>(t.shape.numel()) * dtype_size(t.dtype));
    if (dtype_size(t.dtype) * static_cast<std::size_t>(t.shape.numel()) == h.data_bytes) {
      EXPECT_EQ(0, std::memcmp(t.data.data(), b.data() + h.data_offset, h.data_bytes));
    }
  });
}

TEST_F(IoTest, LoadNpyRefusesMismatchesAndLeavesTheTableAsItWas) {
  std::vector<float> v(12, 1.0f);
  const std::string p = path("m.npy");
  save_npy(p, host_view(v, DType::f32, {3, 4}), host_stream);
  std::vector<float> dst(12, -9.0f);
  EXPECT_THROW(load_npy(p, host_view(dst, DType::f32, {4, 3}), host_stream), InvalidArgument);
  EXPECT_THROW(load_npy(p, host_view(dst, DType::f32, {12}), host_stream), InvalidArgument);
  std::vector<std::int32_t> ints(12, -9);
  EXPECT_THROW(load_npy(p, host_view(ints, DType::i32, {3, 4}), host_stream), InvalidArgument);
  for (float x : dst) EXPECT_EQ(x, -9.0f);

  std::vector<f16_t> h(12);
  save_npy(p, host_view(h, DType::f16, {3, 4}), host_stream);
  EXPECT_THROW(load_npy(p, host_view(dst, DType::f32, {3, 4}), host_stream), InvalidArgument);
  for (float x : dst) EXPECT_EQ(x, -9.0f);

  // A truncated file: nothing written.
  save_npy(p, host_view(v, DType::f32, {3, 4}), host_stream);
  std::string s = read_bytes(p);
  write_bytes(p, s.substr(0, s.size() - 1));
  EXPECT_THROW(load_npy(p, host_view(dst, DType::f32, {3, 4}), host_stream), IoError);
  for (float x : dst) EXPECT_EQ(x, -9.0f);

  // f32 into bf16 / f16 rounds to nearest even.
  std::vector<float> w = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 3.0f, -0.1f};
  save_npy(p, host_view(w, DType::f32, {4}), host_stream);
  std::vector<bf16_t> b(4);
  load_npy(p, host_view(b, DType::bf16, {4}), host_stream);
  EXPECT_EQ(b[0].bits, 0x3f80);  // a tie: to even (1.0)
  EXPECT_EQ(b[1].bits, 0x3f82);  // a tie: to even (1 + 2/128)
  EXPECT_EQ(b[2].bits, 0x4040);
  EXPECT_EQ(b[3].bits, 0xbdcd);  // -0.1 = 0xbdcccccd rounds up in magnitude
  std::vector<f16_t> hh(4);
  load_npy(p, host_view(hh, DType::f16, {4}), host_stream);
  EXPECT_EQ(hh[2].bits, 0x4200);  // 3.0
}

TEST_F(IoTest, NpyWriterWritesInChunksAndCommitsAtomically) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> v = random_values<float>(4 * 5 * 6, rng);
  const std::string whole = path("whole.npy"), chunked = path("chunked.npy");
  save_npy(whole, host_view(v, DType::f32, {4, 5, 6}), host_stream);
  {
    NpyWriter w(chunked, DType::f32, {4, 5, 6});
    // The data lives in an unnamed (O_TMPFILE) file where the file system has them, else in one
    // named temporary.
    EXPECT_LE(temporaries().size(), 1u);
    EXPECT_FALSE(fs::exists(chunked));
    for (std::size_t i = 0; i < v.size(); i += 30) w.write(v.data() + i, 30 * 4);
    EXPECT_THROW(w.write(v.data(), 4), InvalidArgument);  // beyond the declared size
    w.commit();
  }
  EXPECT_EQ(read_bytes(whole), read_bytes(chunked));
  EXPECT_TRUE(temporaries().empty());

  // Abandoned and incomplete writers leave nothing behind (and an old file untouched).
  const std::string old = read_bytes(whole);
  {
    NpyWriter w(whole, DType::f32, {4, 5, 6});
    w.write(v.data(), 8);
    EXPECT_THROW(w.write(v.data(), 3), InvalidArgument);  // not whole elements
    EXPECT_THROW(w.commit(), InvalidArgument);            // 8 of 480 bytes
  }
  EXPECT_EQ(read_bytes(whole), old);
  EXPECT_TRUE(temporaries().empty());
  { NpyWriter w(path("never.npy"), DType::i32, {3}); }
  EXPECT_FALSE(fs::exists(path("never.npy")));
  EXPECT_TRUE(temporaries().empty());

  // bf16 through the writer is widened like save_npy does it.
  std::vector<bf16_t> b = random_values<bf16_t>(10, rng);
  save_npy(whole, host_view(b, DType::bf16, {2, 5}), host_stream);
  {
    NpyWriter w(chunked, DType::bf16, {2, 5});
    w.write(b.data(), 6);
    w.write(b.data() + 3, 14);
    w.commit();
  }
  EXPECT_EQ(read_bytes(whole), read_bytes(chunked));
  EXPECT_THROW(NpyWriter(path("no_such_dir/x.npy"), DType::f32, {1}), IoError);
}

// ---- safetensors -------------------------------------------------------------------------------

TEST_F(IoTest, SafetensorsRoundTripsNamedTensors) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> a = random_values<float>(6, rng);
  std::vector<bf16_t> b = random_values<bf16_t>(5, rng);
  std::vector<f16_t> c = random_values<f16_t>(8, rng);
  std::vector<std::int32_t> d = {1, -2, 3};
  std::vector<std::int64_t> e = {1ll << 40, -7};
  const std::string odd_name = "na\"me\\ with \x01 \xc3\xa9";  // quotes, backslash, control, UTF-8
  const std::vector<std::pair<std::string, TensorView>> in = {
      {"wte.weight", host_view(a, DType::f32, {2, 3})},
      {"b", host_view(b, DType::bf16, {5})},
      {odd_name, host_view(c, DType::f16, {2, 2, 2})},
      {"d", host_view(d, DType::i32, {3, 1})},
      {"e", host_view(e, DType::i64, {2})}};
  const std::string p = path("t.safetensors");
  save_safetensors(p, in, host_stream);
  EXPECT_TRUE(temporaries().empty());
  const auto out = read_safetensors(p);
  ASSERT_EQ(out.size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    SCOPED_TRACE(in[i].first);
    EXPECT_EQ(out[i].first, in[i].first);
    EXPECT_EQ(out[i].second.dtype, in[i].second.dtype);
    EXPECT_EQ(out[i].second.shape, in[i].second.shape);
    ASSERT_EQ(out[i].second.data.size(), in[i].second.bytes());
    EXPECT_TRUE(same_bits(out[i].second.data.data(), in[i].second.data, in[i].second.bytes()));
  }
  // The layout: an 8-byte length, a header that keeps the data 8-byte aligned.
  const std::string s = read_bytes(p);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = s.substr(8, n);
  EXPECT_NE(
      header.find("\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"),
      std::string::npos)
      << header;
  EXPECT_NE(header.find("\"__metadata__\":{\"format\":\"pt\"}"), std::string::npos);
  EXPECT_EQ(s.size(), 8 + n + 24 + 10 + 16 + 12 + 16);

  // Refused saves leave the existing file as it was (and no temporary file behind).
  EXPECT_THROW(save_safetensors(p, {{"x", in[0].second}, {"x", in[1].second}}, host_stream),
               InvalidArgument);
  EXPECT_EQ(read_bytes(p), s);
  EXPECT_THROW(save_safetensors(p, {{"", in[0].second}}, host_stream), InvalidArgument);
  EXPECT_EQ(read_bytes(p), s);
  EXPECT_THROW(save_safetensors(p, {{"__metadata__", in[0].second}}, host_stream), InvalidArgument);
  EXPECT_EQ(read_bytes(p), s);
  EXPECT_THROW(save_safetensors(p, {{"bad\xff", in[0].second}}, host_stream), InvalidArgument);
  EXPECT_EQ(read_bytes(p), s);
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST_F(IoTest, SafetensorsParsesAHandBuiltFile) {
  const std::vector<float> a = {1.0f, 2.0f, -3.0f, 4.5f};
  const std::vector<std::uint16_t> b = {0x3f80, 0xc000, 0x0000};  // bf16 1, -2, 0
  const std::string json =
      "{ \"__metadata__\" : { \"format\" : \"pt\", \"note\" : \"caf\\u00e9 \\\"q\\\" "
      "\\ud83d\\ude00\" },\n"
      "  \"w\\u00e9\\/x\" : {\"dtype\":\"F32\", \"shape\":[2, 2], \"data_offsets\":[0, 16]},"
      "  \"b\" : {\"shape\":[3],\"data_offsets\":[16,22],\"dtype\":\"BF16\"},"
      "  \"empty\" : {\"dtype\":\"I64\",\"shape\":[0, 5],\"data_offsets\":[22,22]} }      ";
  const std::string file = st_file(json, raw(a) + raw(b));
  const auto t = parse_safetensors(file.data(), file.size());
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].first, "w\xc3\xa9/x");
  EXPECT_EQ(t[0].second.dtype, DType::f32);
  EXPECT_EQ(t[0].second.shape, (Shape{2, 2}));
  EXPECT_EQ(std::string(t[0].second.data.begin(), t[0].second.data.end()), raw(a));
  EXPECT_EQ(t[1].first, "b");
  EXPECT_EQ(t[1].second.dtype, DType::bf16);
  EXPECT_EQ(std::string(t[1].second.data.begin(), t[1].second.data.end()), raw(b));
  EXPECT_EQ(t[2].second.shape, (Shape{0, 5}));
  EXPECT_TRUE(t[2].second.data.empty());
  const std::string empty = st_file("{}", "");
  EXPECT_TRUE(parse_safetensors(empty.data(), empty.size()).empty());
}

// Issue 13 item 11: an offset or dimension too large for any file says so, rather than "not a
// non-negative integer"; a value that is not an integer still says that.
TEST_F(IoTest, SafetensorsHugeOffsetsAndDimsSayTheyAreTooLarge) {
  const std::string d16(16, '\x01');
  std::mt19937_64 rng(fresh_seed());
  const std::uint64_t huge = (1ull << 63) + rng() % (1ull << 63);  // 2^63 .. 2^64 - 1
  auto message = [&](const std::string& body) {
    const std::string file = st_file("{\"a\":{" + body + "}}", d16);
    try {
      parse_safetensors(file.data(), file.size());
    } catch (const IoError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  for (const std::string& v : {std::to_string(huge), std::string("18446744073709551600"),
                               std::string("99999999999999999999999")}) {
    SCOPED_TRACE(v);
    const std::string m1 =
        message("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0," + v + "]");
    EXPECT_NE(m1.find("'data_offsets' value " + v + ", larger than any file"), std::string::npos)
        << m1;
    const std::string m2 =
        message("\"dtype\":\"F32\",\"shape\":[" + v + "],\"data_offsets\":[0,16]");
    EXPECT_NE(m2.find("'shape' value " + v + ", larger than any file"), std::string::npos) << m2;
  }
  const std::string m3 = message("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1.5]");
  EXPECT_NE(m3.find("1.5 that is not a non-negative integer"), std::string::npos) << m3;
}

TEST_F(IoTest, SafetensorsCorruptTruncatedAndInconsistentFilesAreRefused) {
  const std::string d16(16, '\x01');
  const std::string ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
  const std::string good = st_file(ok, d16);
  ASSERT_NO_THROW(parse_safetensors(good.data(), good.size()));
  for (std::size_t len = 0; len < good.size(); ++len)
    EXPECT_THROW(parse_safetensors(good.data(), len), IoError) << "truncated to " << len;
  EXPECT_THROW(parse_safetensors(nullptr, 3), InvalidArgument);

  auto t = [](const std::string& body) { return "{\"a\":{" + body + "}}"; };
  const std::vector<std::pair<std::string, std::string>> bad_json = {
      {"size mismatch", t("\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]")},
      {"beyond buffer", t("\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]")},
      {"begin > end", t("\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]")},
      {"negative dim", t("\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]")},
      {"float dim", t("\"dtype\":\"F32\",\"shape\":[4.0],\"data_offsets\":[0,16]")},
      {"exponent dim", t("\"dtype\":\"F32\",\"shape\":[4e0],\"data_offsets\":[0,16]")},
      {"huge dim", t("\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,16]")},
      {"numel overflow",
       t("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]")},
      {"bytes overflow",
       t("\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]")},
      {"leading zero", t("\"dtype\":\"F32\",\"shape\":[04],\"data_offsets\":[0,16]")},
      {"string dim", t("\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]")},
      {"three offsets", t("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16,16]")},
      {"missing dtype", t("\"shape\":[4],\"data_offsets\":[0,16]")},
      {"missing shape", t("\"dtype\":\"F32\",\"data_offsets\":[0,16]")},
      {"missing offsets", t("\"dtype\":\"F32\",\"shape\":[4]")},
      {"unknown dtype", t("\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]")},
      {"dtype not a string", t("\"dtype\":4,\"shape\":[4],\"data_offsets\":[0,16]")},
      {"tensor not an object", "{\"a\":[1,2]}"},
      {"overlap",
       "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}"},
      {"duplicate key",
       "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}"},
      {"metadata not strings", "{\"__metadata__\":{\"k\":1}}"},
      {"metadata not an object", "{\"__metadata__\":\"x\"}"},
      {"top level array", "[1, 2]          "},
      {"trailing garbage", "{} x"},
      {"unterminated object", "{\"a\":"},
      {"unterminated string", "{\"a"},
      {"bad escape", "{\"\\x\":{}}"},
      {"bad unicode escape", "{\"\\u12G4\":{}}"},
      {"lone high surrogate", "{\"\\ud800\":{}}"},
      {"lone low surrogate", "{\"\\udc00\":{}}"},
      {"raw control character", "{\"a\nb\":{}}"},
      {"invalid UTF-8", "{\"\xff\":{}}"},
      {"overlong UTF-8", "{\"\xc0\x80\":{}}"},
      {"UTF-8 surrogate", "{\"\xed\xa0\x80\":{}}"},
      {"truncated UTF-8", "{\"\xe2\x82\":{}}"},
      {"bad literal", "{\"__metadata__\":nul}"},
      {"missing colon", "{\"a\" {}}"},
      {"missing comma", "{\"a\":{} \"b\":{}}"},
      {"trailing comma", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],}}"},
      {"deep nesting",
       "{\"__metadata__\":" + std::string(100000, '[') + std::string(100000, ']') + "}"},
      {"unsupported dtype for HostTensor",
       t("\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]")},
      {"rank 9", t("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,2,2],\"data_offsets\":[0,16]")},
  };
  for (const auto& [what, json] : bad_json) {
    const std::string file = st_file(json, d16);
    EXPECT_THROW(parse_safetensors(file.data(), file.size()), IoError) << what;
  }
  const std::vector<std::pair<std::string, std::string>> bad_files = {
      {"header length beyond file", le(1000, 8) + ok + d16},
      {"header length 2^63", le(1ull << 63, 8) + ok + d16},
      {"header length 0", le(0, 8) + d16},
      {"empty file", ""},
  };
  for (const auto& [what, file] : bad_files) {
    EXPECT_THROW(parse_safetensors(file.data(), file.size()), IoError) << what;
    const std::string p = path("bad.safetensors");
    write_bytes(p, file);
    EXPECT_THROW(read_safetensors(p), IoError) << what;
  }
}

TEST_F(IoTest, SafetensorsRandomCorruptionNeverEscapesAsAnythingButTokembErrors) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string good = st_file(
      "{\"__metadata__\":{\"k\":\"v\\u00e9\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_"
      "offsets\":[0,16]},"
      "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}",
      std::string(24, '\x3f'));
  const std::string interesting = "0123456789[]{},:\"\\u \n-eE.tfn\xc3\xa9\xff";
  // A corrupted file that still parses gives tensors whose bytes match their shapes and lie in
  // the data buffer (all of them together no larger than it).
  corrupt_and_parse(good, interesting, rng, "parse_safetensors", [](const std::string& b) {
    const auto tensors = parse_safetensors(b.data(), b.size());
    std::size_t total = 0;
    for (const auto& [name, t] : tensors) {
      EXPECT_EQ(t.data.size(), static_cast<std::size_t>(t.shape.numel()) * dtype_size(t.dtype))
          << name;
      total += t.data.size();
    }
    EXPECT_LE(total, b.size());
  });
}

// The header-size limit (100,000,000 bytes) refuses a header declared over it even when the
// input is long enough to hold it.
TEST_F(IoTest, SafetensorsHeaderOverTheLimitIsRefused) {
  constexpr std::uint64_t declared = 100'000'001;
  std::string big = le(declared, 8);
  big.resize(8 + declared + 16, ' ');
  try {
    (void)parse_safetensors(big.data(), big.size());
    ADD_FAILURE() << "a 100,000,001-byte header was accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("the header length 100000001 exceeds the limit of "
                                         "100000000 bytes"),
              std::string::npos)
        << e.what();
  }
}

// ---- module weights
// ------------------------------------------------------------------------------

Embedding make_module(DType dtype, std::int64_t V, std::int64_t D, std::int64_t P, Device device,
                      StreamView stream) {
  EmbeddingConfig c;
  c.vocab_size = V;
  c.dim = D;
  c.context_length = P;
  c.dtype = dtype;
  c.device = device;
  return Embedding(c, stream);
}

void fill_random(Embedding& m, std::mt19937_64& rng) {
  auto fill = [&](const TensorView& t, bool token) {
    if (t.empty()) return;
    const std::size_t n = static_cast<std::size_t>(t.numel());
    std::vector<unsigned char> bytes(t.bytes());
    if (t.dtype == DType::f32) {
      auto v = random_values<float>(n, rng);
      std::memcpy(bytes.data(), v.data(), bytes.size());
    } else if (t.dtype == DType::bf16) {
      auto v = random_values<bf16_t>(n, rng);
      std::memcpy(bytes.data(), v.data(), bytes.size());
    } else {
      auto v = random_values<f16_t>(n, rng);
      std::memcpy(bytes.data(), v.data(), bytes.size());
    }
    token ? m.load_token_table(bytes.data(), bytes.size())
          : m.load_position_table(bytes.data(), bytes.size());
  };
  fill(m.token_table(), true);
  fill(m.position_table(), false);
}

TEST_F(IoTest, WeightsRoundTripWithDefaultAndCustomNames) {
  std::mt19937_64 rng(fresh_seed());
  for (DType d : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(d));
    Embedding a = make_module(d, 20, 6, 9, Device::cpu(), host_stream);
    fill_random(a, rng);
    const std::string p = path("w.safetensors");
    save_weights(a, p);
    Embedding b = make_module(d, 20, 6, 9, Device::cpu(), host_stream);
    load_weights(b, p);
    EXPECT_EQ(a.token_table_to_host(), b.token_table_to_host());
    EXPECT_EQ(a.position_table_to_host(), b.position_table_to_host());
    const auto named = read_safetensors(p);
    ASSERT_EQ(named.size(), 2u);
    EXPECT_EQ(named[0].first, "wte.weight");
    EXPECT_EQ(named[1].first, "wpe.weight");

    WeightNames custom;
    custom.token = "transformer.wte.weight";
    custom.position = "transformer.wpe.weight";
    save_weights(a, p, custom);
    Embedding c = make_module(d, 20, 6, 9, Device::cpu(), host_stream);
    EXPECT_THROW(load_weights(c, p), InvalidArgument);  // default names are absent
    load_weights(c, p, custom);
    EXPECT_EQ(a.token_table_to_host(), c.token_table_to_host());
  }
  // A module without a position table neither writes nor needs one.
  Embedding t = make_module(DType::f32, 5, 4, 0, Device::cpu(), host_stream);
  fill_random(t, rng);
  save_weights(t, path("tok.safetensors"));
  EXPECT_EQ(read_safetensors(path("tok.safetensors")).size(), 1u);
  Embedding t2 = make_module(DType::f32, 5, 4, 0, Device::cpu(), host_stream);
  load_weights(t2, path("tok.safetensors"));
  EXPECT_EQ(t.token_table_to_host(), t2.token_table_to_host());
}

// A GPT-2-style checkpoint: f32 tables among tensors of other dtypes, loaded into a bf16 module.
TEST_F(IoTest, WeightsComeFromACheckpointWithOtherTensors) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> wte = random_values<float>(8 * 4, rng), wpe = random_values<float>(3 * 4, rng);
  const std::string json =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"h.0.attn.bias\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
      "\"h.0.mask\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[16,24]},"
      "\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[24,152]},"
      "\"wpe.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[152,200]}}";
  const std::string p = path("gpt2.safetensors");
  write_bytes(p, st_file(json, std::string(24, '\0') + raw(wte) + raw(wpe)));
  EXPECT_THROW(read_safetensors(p), IoError);  // U8 cannot be returned...
  Embedding m = make_module(DType::bf16, 8, 4, 3, Device::cpu(), host_stream);
  load_weights(m, p);  // ...but are validated and skipped here
  const std::vector<float> t = m.token_table_to_host(), q = m.position_table_to_host();
  for (std::size_t i = 0; i < wte.size(); ++i)
    EXPECT_EQ(t[i], bf16_t::from_float(wte[i]).to_float());
  for (std::size_t i = 0; i < wpe.size(); ++i)
    EXPECT_EQ(q[i], bf16_t::from_float(wpe[i]).to_float());
}

TEST_F(IoTest, LoadWeightsRefusesMismatchesAndLeavesBothTablesAsTheyWere) {
  std::mt19937_64 rng(fresh_seed());
  Embedding src = make_module(DType::f32, 10, 4, 6, Device::cpu(), host_stream);
  fill_random(src, rng);
  Embedding dst = make_module(DType::f32, 10, 4, 6, Device::cpu(), host_stream);
  fill_random(dst, rng);
  const std::vector<float> tok0 = dst.token_table_to_host(), pos0 = dst.position_table_to_host();
  auto unchanged = [&] {
    EXPECT_EQ(dst.token_table_to_host(), tok0);
    EXPECT_EQ(dst.position_table_to_host(), pos0);
  };

  // The token table fits, the position table does not: neither is written.
  Embedding longer = make_module(DType::f32, 10, 4, 7, Device::cpu(), host_stream);
  fill_random(longer, rng);
  save_weights(longer, path("longer.safetensors"));
  EXPECT_THROW(load_weights(dst, path("longer.safetensors")), InvalidArgument);
  unchanged();

  Embedding wider = make_module(DType::f32, 10, 5, 6, Device::cpu(), host_stream);
  save_weights(wider, path("wider.safetensors"));
  EXPECT_THROW(load_weights(dst, path("wider.safetensors")), InvalidArgument);
  unchanged();

  Embedding half = make_module(DType::f16, 10, 4, 6, Device::cpu(), host_stream);
  save_weights(half, path("half.safetensors"));
  EXPECT_THROW(load_weights(dst, path("half.safetensors")), InvalidArgument);  // F16 into f32
  unchanged();

  // Missing position tensor; the message lists what the file holds.
  Embedding tok_only = make_module(DType::f32, 10, 4, 0, Device::cpu(), host_stream);
  save_weights(tok_only, path("tok_only.safetensors"));
  try {
    load_weights(dst, path("tok_only.safetensors"));
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("wpe.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("wte.weight"), std::string::npos) << e.what();
  }
  unchanged();

  // Truncated anywhere: IoError, tables untouched.
  save_weights(src, path("good.safetensors"));
  const std::string good = read_bytes(path("good.safetensors"));
  for (std::size_t len : {std::size_t{0}, std::size_t{7}, std::size_t{8}, std::size_t{40},
                          good.size() / 2, good.size() - 1}) {
    write_bytes(path("cut.safetensors"), good.substr(0, len));
    EXPECT_THROW(load_weights(dst, path("cut.safetensors")), IoError) << len;
    unchanged();
  }
  EXPECT_THROW(load_weights(dst, path("missing.safetensors")), IoError);
  unchanged();
  WeightNames same;
  same.position = same.token;
  EXPECT_THROW(load_weights(dst, path("good.safetensors"), same), InvalidArgument);
  EXPECT_THROW(save_weights(src, path("x.safetensors"), same), InvalidArgument);
  unchanged();
  load_weights(dst, path("good.safetensors"));
  EXPECT_EQ(dst.token_table_to_host(), src.token_table_to_host());
}

// ---- GPU tables
// ----------------------------------------------------------------------------------

class GpuIo : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    dir_ = fs::temp_directory_path() / ("tokemb_gpuio_" + std::to_string(fresh_seed()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(GpuIo, NpyRoundTripOfDeviceTables) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<bf16_t> b = random_values<bf16_t>(64 * 16, rng);
  Buffer dev = to_device(b, DType::bf16, {64, 16}, stream());
  save_npy(path("d.npy"), dev, stream());
  Buffer back(DType::bf16, {64, 16}, Device::cuda(0));
  poison_device(back, stream());
  load_npy(path("d.npy"), back, stream());
  const std::vector<bf16_t> h = to_host<bf16_t>(back, stream());
  EXPECT_TRUE(same_bits(h.data(), b.data(), b.size() * 2));
  Buffer wrong(DType::bf16, {16, 64}, Device::cuda(0));
  poison_device(wrong, stream());
  EXPECT_THROW(load_npy(path("d.npy"), wrong, stream()), InvalidArgument);
  for (const bf16_t x : to_host<bf16_t>(wrong, stream()))  // the refused load wrote nothing
    ASSERT_EQ(x.bits, 0xffff);
}

TEST_F(GpuIo, WeightsRoundTripOnTheDeviceAndMismatchesLeaveTablesAlone) {
  std::mt19937_64 rng(fresh_seed());
  Embedding cpu = make_module(DType::f16, 300, 32, 40, Device::cpu(), StreamView::legacy_default());
  fill_random(cpu, rng);
  save_weights(cpu, path("w.safetensors"));
  Embedding gpu = make_module(DType::f16, 300, 32, 40, Device::cuda(0), stream());
  load_weights(gpu, path("w.safetensors"));
  EXPECT_EQ(gpu.token_table_to_host(), cpu.token_table_to_host());
  EXPECT_EQ(gpu.position_table_to_host(), cpu.position_table_to_host());
  save_weights(gpu, path("w2.safetensors"));
  EXPECT_EQ(read_bytes(path("w.safetensors")), read_bytes(path("w2.safetensors")));

  Embedding other =
      make_module(DType::f16, 300, 32, 41, Device::cpu(), StreamView::legacy_default());
  save_weights(other, path("other.safetensors"));
  const std::string before = read_bytes(path("other.safetensors"));
  EXPECT_THROW(load_weights(gpu, path("other.safetensors")), InvalidArgument);
  EXPECT_EQ(gpu.token_table_to_host(), cpu.token_table_to_host());
  EXPECT_EQ(gpu.position_table_to_host(), cpu.position_table_to_host());
  EXPECT_EQ(read_bytes(path("other.safetensors")), before);
}

// ---- issue 20 ----------------------------------------------------------------------------------

namespace round3 {

// AddressSanitizer's redzones and quarantine multiply heap use: the memory bound is checked in
// ordinary builds only.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

std::atomic<int> g_checks_left{0};
bool stop_after_checks() noexcept { return g_checks_left.fetch_sub(1) <= 0; }

long peak_rss_kib() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// n tensors "t0", "t1", ... of shape [0] (no data), and the header's size.
std::string many_tensors(std::size_t n, std::size_t* header_size) {
  std::string json = "{";
  json.reserve(n * 64 + 2);
  for (std::size_t i = 0; i < n; ++i) {
    json += (i ? ",\"t" : "\"t") + std::to_string(i) +
            "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  }
  json += "}";
  *header_size = json.size();
  return st_file(json, "");
}

}  // namespace round3

// Item 7: duplicate keys were searched linearly (80k tensors: 80 s; a 46 MB header: 7 min and
// 1.1 GB). Parsing is one pass now: linear time, memory a small multiple of the header.
TEST_F(IoTest, SafetensorsHeaderParsingIsLinearInTimeAndBoundedInMemory) {
  std::size_t header = 0;
  const std::size_t n = 150000 + fresh_seed() % 1000;
  const std::string file = round3::many_tensors(n, &header);
  const long before = round3::peak_rss_kib();
  const auto start = std::chrono::steady_clock::now();
  const auto tensors = parse_safetensors(file.data(), file.size());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const long grown_kib = round3::peak_rss_kib() - before;
  ASSERT_EQ(tensors.size(), n);
  EXPECT_EQ(tensors.back().first, "t" + std::to_string(n - 1));
  EXPECT_LT(seconds, 10.0) << n << " tensors";  // well under a second when linear
  // The result itself (names and HostTensors) is about 2x the header; the parse adds less.
  if (!round3::kAsan) {
    EXPECT_LT(static_cast<double>(grown_kib) * 1024, 8.0 * static_cast<double>(header))
        << "peak RSS grew by " << grown_kib << " KiB for a header of " << header << " bytes";
  }
  // A duplicate at the very end is still found.
  std::string dup = file.substr(8, header - 1) +
                    ",\"t7\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}";
  const std::string dup_file = st_file(dup, "");
  try {
    (void)parse_safetensors(dup_file.data(), dup_file.size());
    FAIL() << "a duplicate key was accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate key"), std::string::npos) << e.what();
  }
}

// Item 7: the parser calls the interrupt check as it goes (the CLI's Ctrl-C: exit 130).
TEST_F(IoTest, SafetensorsHeaderParsingStopsWhenInterrupted) {
  std::size_t header = 0;
  const std::string file = round3::many_tensors(20000, &header);
  for (int checks : {0, 3}) {
    round3::g_checks_left = checks;
    set_write_interrupt_check(&round3::stop_after_checks);
    try {
      (void)parse_safetensors(file.data(), file.size());
      ADD_FAILURE() << "not interrupted";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos) << e.what();
    }
    set_write_interrupt_check(nullptr);
  }
  EXPECT_EQ(parse_safetensors(file.data(), file.size()).size(), 20000u);
}

// Mutation gap: an escaped surrogate pair in a name decodes to the one code point it encodes.
TEST_F(IoTest, SafetensorsEscapedSurrogatePairDecodesToOneCodePoint) {
  const std::string json =
      "{\"x\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
      "\"\\uD83D\\uDE00y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
  const std::string file = st_file(json, std::string(8, '\0'));
  const auto t = parse_safetensors(file.data(), file.size());
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].first, "x\xF0\x9F\x98\x80");  // U+1F600 in UTF-8
  EXPECT_EQ(t[1].first, "\xF0\x9F\x98\x80y");
  // The escaped and the raw spelling are one key: a duplicate.
  const std::string both = st_file(
      "{\"\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
      "\"\xF0\x9F\x98\x80\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
      "");
  EXPECT_THROW((void)parse_safetensors(both.data(), both.size()), IoError);
}

// Item 8: a header length past npy_max_header_bytes is refused before the header is read or
// allocated (a 2.0 header claiming 1.5 GiB took 1.6 GB and 15 s; a sparse file, 3 GB).
TEST_F(IoTest, NpyHeaderLengthIsCapped) {
  auto padded = [](std::size_t len) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
    dict.append(len - dict.size() - 1, ' ');
    return dict + "\n";
  };
  const std::string ok = npy_file(2, padded(4096), std::string(4, '\0'));
  EXPECT_EQ(parse_npy(ok.data(), ok.size()).shape, (Shape{1}));
  const std::string big = npy_file(2, padded(npy_max_header_bytes + 64), std::string(4, '\0'));
  try {
    (void)parse_npy(big.data(), big.size());
    FAIL() << "a " << npy_max_header_bytes + 64 << "-byte header was accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("limit of 262144 bytes"), std::string::npos) << e.what();
  }
  // A sparse file whose header claims 1.5 GiB: refused from the length field, quickly and
  // without reading it.
  const std::string p = path("huge.npy");
  {
    std::ofstream f(p, std::ios::binary);
    const std::string head = "\x93NUMPY\x02" + std::string(1, '\0') + le(std::uint64_t{3} << 29, 4);
    f.write(head.data(), static_cast<std::streamsize>(head.size()));
  }
  fs::resize_file(p, (std::uint64_t{3} << 29) + 4096);
  const long before = round3::peak_rss_kib();
  try {
    (void)read_npy(p);
    FAIL() << "read";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
  if (!round3::kAsan) {
    EXPECT_LT(round3::peak_rss_kib() - before, 64 * 1024);
  }
}

}  // namespace
}  // namespace tokemb::test
