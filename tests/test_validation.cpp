// Argument validation: every bad argument raises a typed exception naming it, before anything
// is written; out-of-range ids on the CPU.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <type_traits>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

template <class E>
void expect_throw_containing(const std::function<void()>& f,
                             const std::vector<std::string>& parts) {
  try {
    f();
    FAIL() << "no exception thrown";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  } catch (const std::exception& e) {
    FAIL() << "wrong exception type: " << e.what();
  }
}

struct Small {
  static constexpr std::int64_t V = 7, D = 4, P = 5, B = 2, T = 3;
  std::vector<std::int64_t> ids{0, 1, 2, 3, 4, 5};
  std::vector<float> tok = std::vector<float>(V * D, 1.0f);
  std::vector<float> pos = std::vector<float>(P * D, 2.0f);
  std::vector<float> out = std::vector<float>(B * T * D, -7.0f);
  std::vector<float> gt = std::vector<float>(V * D, 0.5f);
  std::vector<float> gp = std::vector<float>(P * D, 0.25f);
  TensorView ids_v() { return host_view(ids, DType::i64, {B, T}); }
  TensorView tok_v() { return host_view(tok, DType::f32, {V, D}); }
  TensorView pos_v() { return host_view(pos, DType::f32, {P, D}); }
  TensorView out_v() { return host_view(out, DType::f32, {B, T, D}); }
  TensorView gt_v() { return host_view(gt, DType::f32, {V, D}); }
  TensorView gp_v() { return host_view(gp, DType::f32, {P, D}); }
  void fwd(const TensorView& ids, const TensorView& tok, const TensorView& pos,
           const TensorView& out, const Options& o = Options{}) {
    forward(ids, tok, pos, out, o, host_stream);
  }
  bool untouched() const {
    for (float x : out)
      if (x != -7.0f) return false;
    for (float x : gt)
      if (x != 0.5f) return false;
    for (float x : gp)
      if (x != 0.25f) return false;
    return true;
  }
};

TEST(Validation, NullPointersAreNamed) {
  Small s;
  TensorView null_ids = s.ids_v();
  null_ids.data = nullptr;
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(null_ids, s.tok_v(), s.pos_v(), s.out_v()); }, {"ids", "null"});
  TensorView null_out = s.out_v();
  null_out.data = nullptr;
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), null_out); }, {"out", "null"});
  EXPECT_TRUE(s.untouched());
}

TEST(Validation, ShapeAndDtypeMismatchesAreNamedWithValues) {
  Small s;
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), host_view(s.out, DType::f32, {2, 3, 3}));
      },
      {"out", "[2, 3, 3]", "[2, 3, 4]"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), host_view(s.out, DType::bf16, {2, 3, 4}));
      },
      {"out", "bf16", "f32"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(host_view(s.ids, DType::f32, {2, 3}), s.tok_v(), s.pos_v(), s.out_v());
      },
      {"ids", "f32", "i32 or i64"});
  // ids of rank 3 are valid ([2, 3, 1]: T = 1), and out must then be [2, 3, 1, 4].
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(host_view(s.ids, DType::i64, {2, 3, 1}), s.tok_v(), s.pos_v(), s.out_v()); },
      {"out", "[2, 3, 4]", "expected rank 4"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(s.ids_v(), s.tok_v(), host_view(s.pos, DType::f32, {4, 5}), s.out_v());
      },
      {"pos_table", "[4, 5]", "D = 4"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        backward(s.ids_v(), s.out_v(), host_view(s.tok, DType::bf16, {Small::V, 4}), s.gp_v(),
                 Options{}, Workspace{}, host_stream);
      },
      {"grad_token", "bf16", "f32"});
  EXPECT_TRUE(s.untouched());
}

TEST(Validation, ZeroSizesOutsideTheBatchAreRejected) {
  Small s;
  // An empty batch is valid (tests/test_empty_batch.cpp), but out must still match it ...
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(host_view(s.ids, DType::i64, {0, 3}), s.tok_v(), s.pos_v(), s.out_v());
      },
      {"out", "[0, 3, 4]"});
  // ... and a table needs rows and columns.
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(s.ids_v(), host_view(s.tok, DType::f32, {0, Small::D}), s.pos_v(), s.out_v());
      },
      {"token_table", "[0, 4]", ">= 1"});
  EXPECT_TRUE(s.untouched());
}

TEST(Validation, SequenceLongerThanContextRaisesIndexOutOfRange) {
  Small s;
  Options o;
  o.position_offset = 3;  // positions 3, 4, 5 but P = 5
  try {
    s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), o);
    FAIL() << "no exception";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::position);
    EXPECT_EQ(e.value(), 5);
    EXPECT_EQ(e.time(), 2);
    EXPECT_EQ(e.limit(), 5);
    EXPECT_NE(std::string(e.what()).find("[0, 5)"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(s.untouched());
}

TEST(Validation, PaddingIdxOutOfRange) {
  Small s;
  Options o;
  o.padding_idx = 7;
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), o); },
      {"padding_idx", "7", "[-7, 7)"});
}

TEST(Validation, UnknownBackwardModeIsRejectedBeforeWriting) {
  Small s;
  std::vector<float> dout(Small::B * Small::T * Small::D, 1.0f);
  Options o;
  o.backward_mode = static_cast<BackwardMode>(7);
  o.accumulate = false;  // would zero the gradients if it got that far
  expect_throw_containing<InvalidArgument>(
      [&] {
        backward(s.ids_v(), host_view(dout, DType::f32, {Small::B, Small::T, Small::D}), s.gt_v(),
                 s.gp_v(), o, Workspace{}, host_stream);
      },
      {"backward_mode", "7"});
  EXPECT_TRUE(s.untouched());
}

TEST(Validation, PositionIdsWithoutPositionTable) {
  Small s;
  Options o;
  o.position_ids = s.ids_v();
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), TensorView{}, s.out_v(), o); },
      {"position_ids", "no position table"});
}

TEST(Validation, ElementCountOverflowIsCaught) {
  Small s;
  const std::int64_t huge = std::int64_t{1} << 40;
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(host_view(s.ids, DType::i64, {2, 3}), host_view(s.tok, DType::f32, {huge, huge}),
              TensorView{}, host_view(s.out, DType::f32, {2, 3, huge}));
      },
      {"overflows"});
}

TEST(Validation, CudaDeviceWithoutBackendOrGpuIsUnsupportedOrInvalid) {
  if (cuda_device_count() > 0)
    GTEST_SKIP() << "a CUDA device is present; this checks the no-GPU path";
  Small s;
  auto on_gpu = [](TensorView v) {
    v.device = Device::cuda(0);
    return v;
  };
  EXPECT_THROW(s.fwd(on_gpu(s.ids_v()), on_gpu(s.tok_v()), on_gpu(s.pos_v()), on_gpu(s.out_v())),
               Unsupported);
  EXPECT_THROW(Buffer(DType::f32, Shape{4}, Device::cuda(0)), Unsupported);
}

TEST(Validation, MixedDevicesAreRejected) {
  Small s;
  TensorView tok = s.tok_v();
  tok.device = Device::cuda(0);
  expect_throw_containing<InvalidArgument>([&] { s.fwd(s.ids_v(), tok, s.pos_v(), s.out_v()); },
                                           {"token_table", "cuda:0", "cpu"});
}

TEST(CpuOutOfRange, WithoutRecordThrowsBeforeWriting) {
  Small s;
  s.ids[4] = 7;  // == V
  s.ids[5] = -1;
  try {
    s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v());
    FAIL() << "no exception";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::token);
    EXPECT_EQ(e.value(), 7);
    EXPECT_EQ(e.batch(), 1);
    EXPECT_EQ(e.time(), 1);
    EXPECT_EQ(e.limit(), 7);
    EXPECT_EQ(e.count(), 2u);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("token id 7 at (b=1, t=1)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 7)"), std::string::npos) << msg;
    // Issue 13 item 10: the message says what happened (nothing written), not what a call
    // with an error record does.
    EXPECT_NE(msg.find("nothing was written"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("zeroed"), std::string::npos) << msg;
  }
  EXPECT_THROW(
      backward(s.ids_v(), s.out_v(), s.gt_v(), s.gp_v(), Options{}, Workspace{}, host_stream),
      IndexOutOfRange);
  EXPECT_TRUE(s.untouched());
}

// Issue 13 item 9: a tensor a call writes must not overlap another argument; both are named.
TEST(Validation, OverlappingOutputsAreRejectedNamingBothArguments) {
  Small s;
  // One buffer holding a table and (part of) the output.
  std::vector<float> shared(200, 1.0f);
  const std::size_t shift = 1 + std::random_device{}() % 20;  // any partial overlap
  const TensorView tok_in_shared = host_view(shared, DType::f32, {Small::V, Small::D});
  TensorView out_in_shared(shared.data() + shift, DType::f32, {Small::B, Small::T, Small::D},
                           Device::cpu());
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), tok_in_shared, s.pos_v(), out_in_shared); },
      {"out", "overlaps", "token_table"});
  TensorView out_on_pos(s.pos.data(), DType::f32, {1, 1, Small::D}, Device::cpu());
  std::vector<std::int64_t> one_id = {0};
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(host_view(one_id, DType::i64, {1, 1}), s.tok_v(), s.pos_v(), out_on_pos);
      },
      {"out", "overlaps", "pos_table"});
  // backward: grad_token with grad_pos, and either with dout.
  TensorView gp_in_shared(shared.data() + shift, DType::f32, {Small::P, Small::D}, Device::cpu());
  TensorView dout_in_shared(shared.data() + shift, DType::f32, {Small::B, Small::T, Small::D},
                            Device::cpu());
  const std::vector<float> before = shared;
  expect_throw_containing<InvalidArgument>(
      [&] {
        backward(s.ids_v(), s.out_v(), tok_in_shared, gp_in_shared, Options{}, Workspace{},
                 host_stream);
      },
      {"grad_token", "overlaps", "grad_pos"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        backward(s.ids_v(), dout_in_shared, tok_in_shared, s.gp_v(), Options{}, Workspace{},
                 host_stream);
      },
      {"grad_token", "overlaps", "dout"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        backward(s.ids_v(), dout_in_shared, s.gt_v(), gp_in_shared, Options{}, Workspace{},
                 host_stream);
      },
      {"grad_pos", "overlaps", "dout"});
  EXPECT_EQ(shared, before);
  EXPECT_TRUE(s.untouched());
  // Every tensor a call reads counts: the ids and cu_seqlens too.
  std::vector<float> both(64, 0.0f);
  const TensorView ids_in_both(both.data(), DType::i64, {Small::B, Small::T}, Device::cpu());
  std::vector<std::int64_t> zero_ids(6, 0);
  std::memcpy(both.data(), zero_ids.data(), 6 * sizeof(std::int64_t));
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(
            ids_in_both, s.tok_v(), s.pos_v(),
            TensorView(both.data() + 2, DType::f32, {Small::B, Small::T, Small::D}, Device::cpu()));
      },
      {"out", "overlaps", "ids"});
  std::vector<float> cu_and_out(64, 0.0f);
  const std::int32_t cu[2] = {0, 6};
  std::memcpy(cu_and_out.data(), cu, sizeof cu);
  Options with_cu;
  with_cu.cu_seqlens = TensorView(cu_and_out.data(), DType::i32, {2}, Device::cpu());
  expect_throw_containing<InvalidArgument>(
      [&] {
        s.fwd(s.ids_v(), s.tok_v(), s.pos_v(),
              TensorView(cu_and_out.data(), DType::f32, {Small::B, Small::T, Small::D},
                         Device::cpu()),
              with_cu);
      },
      {"out", "overlaps", "cu_seqlens"});
  expect_throw_containing<InvalidArgument>(
      [&] {
        backward(s.ids_v(), s.out_v(),
                 TensorView(cu_and_out.data(), DType::f32, {Small::V, Small::D}, Device::cpu()),
                 s.gp_v(), with_cu, Workspace{}, host_stream);
      },
      {"grad_token", "overlaps", "cu_seqlens"});
  EXPECT_TRUE(s.untouched());
}

// Issue 20 item 10: dropout.seed_offset and the error record count too. With accumulate = false
// grad_token is zeroed before seed_offset is read, so a seed_offset inside grad_token would give
// the gradients the wrong mask, silently; an error record inside out would be overwritten and
// reported as garbage. Each is rejected, naming both arguments, before anything is written.
TEST(Validation, SeedOffsetAndErrorRecordOverlapsAreRejected) {
  Small s;
  Options drop;
  drop.dropout.p = 0.5;
  // seed_offset viewing grad_token (the bytes of its first two floats pairs).
  for (bool accumulate : {false, true}) {
    Options o = drop;
    o.accumulate = accumulate;
    o.dropout.seed_offset = reinterpret_cast<const std::uint64_t*>(s.gt.data() + 2);
    expect_throw_containing<InvalidArgument>(
        [&] { backward(s.ids_v(), s.out_v(), s.gt_v(), s.gp_v(), o, Workspace{}, host_stream); },
        {"grad_token", "overlaps", "dropout.seed_offset"});
    o.dropout.seed_offset = reinterpret_cast<const std::uint64_t*>(s.gp.data() + 4);
    expect_throw_containing<InvalidArgument>(
        [&] { backward(s.ids_v(), s.out_v(), s.gt_v(), s.gp_v(), o, Workspace{}, host_stream); },
        {"grad_pos", "overlaps", "dropout.seed_offset"});
  }
  Options fo = drop;
  fo.dropout.seed_offset = reinterpret_cast<const std::uint64_t*>(s.out.data() + 6);
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), fo); },
      {"out", "overlaps", "dropout.seed_offset"});
  EXPECT_TRUE(s.untouched());

  // The error record inside out, inside a gradient, and inside an input (it is written too).
  const std::size_t rec_floats = sizeof(ErrorRecord) / sizeof(float);
  std::vector<float> big(rec_floats + 64, -7.0f);
  Options ro;
  ro.error_record = reinterpret_cast<ErrorRecord*>(s.out.data() + 2);
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), ro); },
      {"out", "overlaps", "error_record"});
  ro.error_record = reinterpret_cast<ErrorRecord*>(s.gt.data());
  expect_throw_containing<InvalidArgument>(
      [&] { backward(s.ids_v(), s.out_v(), s.gt_v(), s.gp_v(), ro, Workspace{}, host_stream); },
      {"grad_token", "overlaps", "error_record"});
  ro.error_record = reinterpret_cast<ErrorRecord*>(s.ids.data() + 2);
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), ro); },
      {"error_record", "overlaps", "ids"});
  ro.error_record = reinterpret_cast<ErrorRecord*>(s.tok.data() + 4);
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), ro); },
      {"error_record", "overlaps", "token_table"});
  // ... and with seed_offset (both read and written memory of the call).
  ro.error_record = reinterpret_cast<ErrorRecord*>(big.data());
  ro.dropout = drop.dropout;
  ro.dropout.seed_offset = reinterpret_cast<const std::uint64_t*>(big.data() + rec_floats - 2);
  expect_throw_containing<InvalidArgument>(
      [&] { s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), ro); },
      {"error_record", "overlaps", "dropout.seed_offset"});
  EXPECT_TRUE(s.untouched());
  for (float x : big) ASSERT_EQ(x, -7.0f);
}

// Buffers that merely touch (one ends where the next begins, as PyTorch's caching allocator
// places them in one block) are disjoint: every argument of a call back to back in one
// allocation gives the same result as separate buffers.
TEST(Validation, TouchingButDisjointBuffersAreAccepted) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Small s;
  std::mt19937_64 rng(seed);
  s.tok = random_values<float>(s.tok.size(), rng);
  s.pos = random_values<float>(s.pos.size(), rng);
  std::vector<float> dout = random_values<float>(s.out.size(), rng);
  const std::uint64_t so[2] = {seed, 3};
  const std::int32_t cu[4] = {0, 2, 6, 0};  // 3 entries used; the 4th pads to 8 bytes
  // One block: ids | tok | pos | out | dout | gt | gp | seed_offset | cu_seqlens | record.
  const std::size_t n_ids = 6 * 2, n_tok = Small::V * Small::D, n_pos = Small::P * Small::D,
                    n_out = Small::B * Small::T * Small::D, n_rec = sizeof(ErrorRecord) / 4;
  std::vector<std::uint64_t> block64(
      (n_ids + n_tok + n_pos + 4 * n_out + n_tok + n_pos + 4 + 2 + n_rec) / 2 + 2);
  float* base = reinterpret_cast<float*>(block64.data());
  float* ids_p = base;
  float* tok_p = ids_p + n_ids;
  float* pos_p = tok_p + n_tok;
  float* out_p = pos_p + n_pos;
  float* dout_p = out_p + n_out;
  float* gt_p = dout_p + n_out;
  float* gp_p = gt_p + n_tok;
  float* so_p = gp_p + n_pos;
  float* cu_p = so_p + 4;
  float* rec_p = cu_p + 4;
  ASSERT_EQ(reinterpret_cast<std::uintptr_t>(rec_p) % 8, 0u);
  std::memcpy(ids_p, s.ids.data(), 6 * 8);
  std::memcpy(tok_p, s.tok.data(), n_tok * 4);
  std::memcpy(pos_p, s.pos.data(), n_pos * 4);
  std::memcpy(dout_p, dout.data(), n_out * 4);
  std::memcpy(so_p, so, sizeof so);
  std::memcpy(cu_p, cu, sizeof cu);
  auto v = [](float* p, DType t, Shape sh) { return TensorView(p, t, sh, Device::cpu()); };
  Options o;
  o.dropout.p = 0.4;
  o.dropout.seed_offset = reinterpret_cast<const std::uint64_t*>(so_p);
  o.cu_seqlens = v(cu_p, DType::i32, {3});
  o.error_record = reinterpret_cast<ErrorRecord*>(rec_p);
  clear_error_record(o.error_record, Device::cpu(), host_stream);
  const TensorView ids = v(ids_p, DType::i64, {Small::B, Small::T});
  forward(ids, v(tok_p, DType::f32, {Small::V, Small::D}),
          v(pos_p, DType::f32, {Small::P, Small::D}),
          v(out_p, DType::f32, {Small::B, Small::T, Small::D}), o, host_stream);
  o.accumulate = false;
  backward(ids, v(dout_p, DType::f32, {Small::B, Small::T, Small::D}),
           v(gt_p, DType::f32, {Small::V, Small::D}), v(gp_p, DType::f32, {Small::P, Small::D}), o,
           Workspace{}, host_stream);
  check_error_record(o.error_record, Device::cpu(), host_stream);

  // The same call on separate buffers.
  std::vector<std::uint64_t> so_sep(so, so + 2);
  std::vector<std::int32_t> cu_sep(cu, cu + 3);
  Options sep = o;
  sep.dropout.seed_offset = so_sep.data();
  sep.cu_seqlens = host_view(cu_sep, DType::i32, {3});
  sep.error_record = nullptr;
  sep.accumulate = true;
  std::vector<float> out(n_out), gt(n_tok, 9.0f), gp(n_pos, 9.0f);
  forward(s.ids_v(), s.tok_v(), s.pos_v(),
          host_view(out, DType::f32, {Small::B, Small::T, Small::D}), sep, host_stream);
  sep.accumulate = false;
  backward(s.ids_v(), host_view(dout, DType::f32, {Small::B, Small::T, Small::D}),
           host_view(gt, DType::f32, {Small::V, Small::D}),
           host_view(gp, DType::f32, {Small::P, Small::D}), sep, Workspace{}, host_stream);
  EXPECT_TRUE(same_bits(out.data(), out_p, n_out * 4));
  EXPECT_TRUE(same_bits(gt.data(), gt_p, n_tok * 4));
  EXPECT_TRUE(same_bits(gp.data(), gp_p, n_pos * 4));
  EXPECT_TRUE(same_bits(dout.data(), dout_p, n_out * 4));
  EXPECT_TRUE(same_bits(so, so_p, sizeof so));
  EXPECT_TRUE(same_bits(s.tok.data(), tok_p, n_tok * 4));
  // One float more and out would overlap its neighbour.
  expect_throw_containing<InvalidArgument>(
      [&] {
        forward(ids, v(tok_p, DType::f32, {Small::V, Small::D}),
                v(pos_p, DType::f32, {Small::P, Small::D}),
                v(out_p - 1, DType::f32, {Small::B, Small::T, Small::D}), Options{}, host_stream);
      },
      {"out", "overlaps", "pos_table"});
}

TEST(CpuOutOfRange, WithRecordZeroesRowsSkipsGradientsAndReports) {
  Small s;
  s.ids[1] = 100;
  std::vector<std::int32_t> pids = {0, 1, 2, 3, 9, 4};  // row 4: position 9 >= P
  ErrorMonitor monitor(Device::cpu(), host_stream);
  Options o;
  o.error_record = monitor.get();
  o.position_ids = host_view(pids, DType::i32, {2, 3});
  s.fwd(s.ids_v(), s.tok_v(), s.pos_v(), s.out_v(), o);
  for (std::int64_t r = 0; r < 6; ++r)
    for (std::int64_t d = 0; d < 4; ++d)
      EXPECT_EQ(s.out[static_cast<std::size_t>(r * 4 + d)], (r == 1 || r == 4) ? 0.0f : 3.0f);
  std::vector<float> dout(6 * 4, 1.0f);
  backward(s.ids_v(), host_view(dout, DType::f32, {2, 3, 4}), s.gt_v(), s.gp_v(), o, Workspace{},
           host_stream);
  EXPECT_EQ(s.gt[6 * 4], 0.5f);   // token 6 is used by no row
  EXPECT_EQ(s.gt[0], 1.5f);       // token 0 (row 0)
  EXPECT_EQ(s.gt[4 * 4], 0.5f);   // token 4 (row 4) had a bad position: skipped
  EXPECT_EQ(s.gp[4 * 4], 1.25f);  // position 4 (row 5, token 5) received its row
  try {
    monitor.check(host_stream);
    FAIL() << "no exception";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.kind(), IndexOutOfRange::Kind::token);
    EXPECT_EQ(e.value(), 100);
    EXPECT_EQ(e.time(), 1);
    EXPECT_EQ(e.count(), 4u);  // two bad rows, seen by forward and by backward
  }
  EXPECT_NO_THROW(monitor.check(host_stream));  // cleared
}

// Errors carry where they were raised as data, not in the message (issue 12).
TEST(Validation, ErrorsCarryTheirSourceLocationAsDataNotInTheMessage) {
  Small s;
  try {
    s.fwd(host_view(s.ids, DType::f32, {2, 3}), s.tok_v(), s.pos_v(), s.out_v());
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    const std::string file = e.file(), msg = e.what();
    EXPECT_NE(file.find("validate.cpp"), std::string::npos) << file;
    EXPECT_GT(e.line(), 0);
    EXPECT_EQ(msg.find(".cpp"), std::string::npos) << msg;
    EXPECT_EQ(msg.find(".hpp"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ids"), std::string::npos) << msg;
  }
  // An out-of-range id found on the CPU: raised where the rows are scanned.
  std::vector<std::int64_t> bad{0, 1, 2, 3, 4, 99};
  try {
    s.fwd(host_view(bad, DType::i64, {2, 3}), s.tok_v(), s.pos_v(), s.out_v());
    FAIL() << "no exception";
  } catch (const IndexOutOfRange& e) {
    EXPECT_GT(e.line(), 0);
    EXPECT_NE(std::string(e.file()).find(".cpp"), std::string::npos) << e.file();
    EXPECT_EQ(std::string(e.what()).find(".cpp"), std::string::npos) << e.what();
  }
  // An exception a user constructs has no location.
  const InvalidArgument mine("mine");
  EXPECT_STREQ(mine.file(), "");
  EXPECT_EQ(mine.line(), 0);
}

// Out of memory has one base for host and device that says which; it is no CudaError, since a
// host allocation can fail the same way.
TEST(Validation, HostOutOfMemoryIsNotACudaErrorAndSaysHost) {
  static_assert(std::is_base_of_v<Error, OutOfMemory>);
  static_assert(!std::is_base_of_v<CudaError, OutOfMemory>);
  const std::int64_t n = std::int64_t{1} << 60;  // 4 EiB of f32: no allocator grants it
  try {
    Buffer b(DType::f32, Shape{n}, Device::cpu());
    FAIL() << "no exception";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(e.memory(), OutOfMemory::Memory::host);
    EXPECT_FALSE(e.on_device());
    EXPECT_EQ(e.code(), 0);
    EXPECT_NE(std::string(e.what()).find("bytes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tokemb::test
