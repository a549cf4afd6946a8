// Bad arguments (issue 6): null pointers, zero and negative sizes, dtype and shape mismatches,
// sizes that overflow, misaligned pointers and host pointers in a CUDA call. Each test checks the
// exception type, that its message names the value, the place and the valid range, and that a
// rejected call leaves every byte of every tensor, and the guard bytes around it, as it was.
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "tests/bad_input_helpers.hpp"

namespace tokemb::test {
namespace {

// ---- validation: rejected before anything is written -----------------------------------------

/// Runs a call that validation must reject with E naming \p parts; every tensor unchanged.
template <class E>
void expect_rejected(Problem& p, const std::function<void()>& call,
                     const std::vector<std::string>& parts) {
  ::testing::Message what;
  for (const auto& part : parts) what << "'" << part << "' ";
  SCOPED_TRACE(what);
  expect_throw_with<E>(call, parts);
  p.expect_nothing_changed();
}

void null_pointers(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.upload();
  const Options o = p.options();
  auto null = [](TensorView v) {
    v.data = nullptr;
    return v;
  };
  auto fwd = [&](const TensorView& ids, const TensorView& tok, const TensorView& pos,
                 const TensorView& out, const Options& opt) {
    return [&, ids, tok, pos, out, opt] { tokemb::forward(ids, tok, pos, out, opt, stream); };
  };
  auto bwd = [&](const TensorView& ids, const TensorView& dout, const TensorView& gt,
                 const TensorView& gp, const Options& opt) {
    return [&, ids, dout, gt, gp, opt] {
      tokemb::backward(ids, dout, gt, gp, opt, Workspace{}, stream);
    };
  };
  const TensorView ids = p.g_ids.view(), tok = p.g_tok.view(), pos = p.pos_view(),
                   out = p.g_out.view(), dout = p.g_dout.view(), gt = p.g_gtok.view(),
                   gp = p.gpos_view();
  expect_rejected<InvalidArgument>(p, fwd(null(ids), tok, pos, out, o), {"ids", "null pointer"});
  expect_rejected<InvalidArgument>(p, fwd(ids, null(tok), pos, out, o),
                                   {"token_table", "null pointer"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, null(out), o), {"out", "null pointer"});
  expect_rejected<InvalidArgument>(p, bwd(null(ids), dout, gt, gp, o), {"ids", "null pointer"});
  expect_rejected<InvalidArgument>(p, bwd(ids, null(dout), gt, gp, o), {"dout", "null pointer"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, null(gt), gp, o),
                                   {"grad_token", "null pointer"});
  expect_rejected<InvalidArgument>(
      p, [&] { (void)backward_workspace_size(null(ids), dout, gt, gp, o); },
      {"ids", "null pointer"});
  // Explicit position ids with a shape but no data: a null that is not "absent".
  Options with_null_positions = o;
  with_null_positions.position_ids = p.g_pos_ids.view();
  with_null_positions.position_ids.data = nullptr;
  if (!with_null_positions.position_ids.empty()) {
    expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, out, with_null_positions),
                                     {"position_ids", "null pointer"});
  }
  // Error-record helpers.
  expect_throw_with<InvalidArgument>([&] { clear_error_record(nullptr, device, stream); },
                                     {"record", "null pointer"});
  expect_throw_with<InvalidArgument>([&] { check_error_record(nullptr, device, stream); },
                                     {"record", "null pointer"});
  // Module loads.
  EmbeddingConfig c;
  c.vocab_size = p.V;
  c.dim = p.D;
  c.context_length = p.P;
  c.device = device;
  Embedding m(c, stream);
  expect_throw_with<InvalidArgument>([&] { m.load_token_table(nullptr, 16); },
                                     {"load_token_table", "null pointer"});
  for (float x : m.token_table_to_host()) ASSERT_EQ(x, 0.0f);
}

TEST(BadInput, NullPointersAreRejected) { null_pointers(Device::cpu(), host_stream); }
TEST_F(GpuBadInput, NullPointersAreRejected) { null_pointers(Device::cuda(0), stream()); }

// An absent position table is an empty TensorView{}; a null pointer that carries a shape is a
// mistake and must be rejected, not taken as "positions off".
TEST(BadInput, NullPositionTableWithAShapeIsRejected) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(Device::cpu(), host_stream, rng);
  p.upload();
  TensorView pos = p.g_pos.view();
  pos.data = nullptr;
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::forward(p.g_ids.view(), p.g_tok.view(), pos,
                                                     p.g_out.view(), p.options(), host_stream);
                                   },
                                   {"pos_table", "null pointer"});
  TensorView gpos = p.g_gpos.view();
  gpos.data = nullptr;
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(p.g_ids.view(), p.g_dout.view(),
                                                      p.g_gtok.view(), gpos, p.options(),
                                                      Workspace{}, host_stream);
                                   },
                                   {"grad_pos", "null pointer"});
}

TEST(BadInput, NegativeDimensionsAreRejectedByShape) {
  expect_throw_with<InvalidArgument>([] { Shape s{-1, 3}; }, {"dimension 0", "-1", ">= 0"});
  expect_throw_with<InvalidArgument>([] { Shape s{2, 3, -5}; }, {"dimension 2", "-5", ">= 0"});
  expect_throw_with<InvalidArgument>([] { Shape s{kI64Min}; },
                                     {"dimension 0", std::to_string(kI64Min)});
  expect_throw_with<InvalidArgument>([] { Shape s{1, 2, 3, 4, 5, 6, 7, 8, 9}; }, {"rank 9", "8"});
}

void zero_and_negative_sizes(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.upload();
  const Options o = p.options();
  const std::int64_t B = p.B, T = p.T, D = p.D, V = p.V, P = p.P;
  auto fwd = [&](const TensorView& ids, const TensorView& tok, const TensorView& pos,
                 const TensorView& out) {
    return [&, ids, tok, pos, out] { tokemb::forward(ids, tok, pos, out, o, stream); };
  };
  const TensorView ids = p.g_ids.view(), tok = p.g_tok.view(), pos = p.pos_view(),
                   out = p.g_out.view();
  const DType dt = p.dtype, it = p.id_type;
  // B = 0 and T = 0 are valid (empty batches: tests/test_empty_batch.cpp); D and the tables'
  // rows are not.
  expect_rejected<InvalidArgument>(
      p, fwd(p.g_ids.view_as(it, {0, T}), tok, pos, p.g_out.view_as(dt, {0, T, 0})),
      {"out", "[0, " + std::to_string(T) + ", 0]", ">= 1"});
  (void)B;
  expect_rejected<InvalidArgument>(p, fwd(ids, p.g_tok.view_as(dt, {0, D}), pos, out),
                                   {"token_table", "[0, " + std::to_string(D) + "]", ">= 1"});
  expect_rejected<InvalidArgument>(p,
                                   fwd(ids, p.g_tok.view_as(dt, {V, 0}),
                                       p.g_pos.view_as(dt, {P, 0}), p.g_out.view_as(dt, {B, T, 0})),
                                   {"token_table", ">= 1"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, p.g_pos.view_as(dt, {0, D}), out),
                                   {"pos_table", "[0, " + std::to_string(D) + "]", ">= 1"});
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(ids, p.g_dout.view_as(p.dout_type, {B, T, 0}),
                                                      p.g_gtok.view(), p.gpos_view(), o,
                                                      Workspace{}, stream);
                                   },
                                   {"dout", ">= 1"});

  // Module configuration.
  auto config = [&] {
    EmbeddingConfig c;
    c.vocab_size = V;
    c.dim = D;
    c.context_length = P;
    c.device = device;
    return c;
  };
  EmbeddingConfig c = config();
  c.vocab_size = 0;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); }, {"vocab_size", "0", ">= 1"});
  c.vocab_size = -3;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); }, {"vocab_size", "-3"});
  c = config();
  c.dim = 0;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); }, {"dim", "0", ">= 1"});
  c.dim = kI64Min;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); },
                                     {"dim", std::to_string(kI64Min)});
  c = config();
  c.context_length = -1;
  expect_throw_with<InvalidArgument>([&] { Embedding m(c, stream); },
                                     {"context_length", "-1", ">= 0"});
  Embedding m(config(), stream);
  expect_throw_with<InvalidArgument>([&] { m.reserve(0); }, {"max_tokens", "0"});
  expect_throw_with<InvalidArgument>([&] { m.reserve(-4); }, {"max_tokens", "-4"});
}

TEST(BadInput, ZeroAndNegativeSizesAreRejected) {
  zero_and_negative_sizes(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, ZeroAndNegativeSizesAreRejected) {
  zero_and_negative_sizes(Device::cuda(0), stream());
}

void dtype_and_shape_mismatches(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.dtype = DType::f32;
  p.upload();
  const std::int64_t B = p.B, T = p.T, D = p.D, V = p.V, P = p.P;
  const Options o = p.options();
  auto fwd = [&](const TensorView& ids, const TensorView& tok, const TensorView& pos,
                 const TensorView& out, const Options& opt) {
    return [&, ids, tok, pos, out, opt] { tokemb::forward(ids, tok, pos, out, opt, stream); };
  };
  auto bwd = [&](const TensorView& ids, const TensorView& dout, const TensorView& gt,
                 const TensorView& gp) {
    return [&, ids, dout, gt, gp] { tokemb::backward(ids, dout, gt, gp, o, Workspace{}, stream); };
  };
  const TensorView ids = p.g_ids.view(), tok = p.g_tok.view(), pos = p.pos_view(),
                   out = p.g_out.view(), dout = p.g_dout.view(), gt = p.g_gtok.view(),
                   gp = p.gpos_view();
  auto dims = [](std::initializer_list<std::int64_t> d) { return Shape(d).str(); };

  // dtypes
  for (DType bad : {DType::f32, DType::bf16, DType::f16})
    expect_rejected<InvalidArgument>(p, fwd(p.g_ids.view_as(bad, {B, T}), tok, pos, out, o),
                                     {"ids", dtype_name(bad), "i32 or i64"});
  Options bad_pos_ids = o;
  bad_pos_ids.position_ids = p.g_pos_ids.view_as(DType::f16, {B, T});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, out, bad_pos_ids),
                                   {"position_ids", "f16", "i32 or i64"});
  for (DType bad : {DType::i32, DType::i64})
    expect_rejected<InvalidArgument>(p, fwd(ids, p.g_tok.view_as(bad, {V, D}), pos, out, o),
                                     {"token_table", dtype_name(bad), "f32, bf16, f16 or f64"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, p.g_pos.view_as(DType::bf16, {P, D}), out, o),
                                   {"pos_table", "bf16", "f32"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, p.g_out.view_as(DType::f16, {B, T, D}), o),
                                   {"out", "f16", "f32"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, p.g_gtok.view_as(DType::bf16, {V, D}), gp),
                                   {"grad_token", "bf16", "f32"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, gt, p.g_gpos.view_as(DType::f16, {P, D})),
                                   {"grad_pos", "f16", "f32"});
  expect_rejected<InvalidArgument>(p, bwd(ids, p.g_dout.view_as(DType::i64, {B, T, D}), gt, gp),
                                   {"dout", "i64", "f32, bf16, f16 or f64"});

  // shapes (a wrong width D2 != D over no more than the tensor's memory)
  const std::int64_t D2 = D == 1 ? 2 : 1, P2 = D == 1 ? P / 2 : P * D;
  // ids of any rank from 1 to 7 are valid; out must then have ids' shape and D.
  expect_rejected<InvalidArgument>(p, fwd(p.g_ids.view_as(p.id_type, {B, T, 1}), tok, pos, out, o),
                                   {"out", dims({B, T, D}), "expected rank 4"});
  expect_rejected<InvalidArgument>(
      p, fwd(p.g_ids.view_as(p.id_type, {1, 1, 1, 1, 1, 1, B, T}), tok, pos, out, o),
      {"ids", "rank 8", "rank 1 to 7"});
  expect_rejected<InvalidArgument>(p, fwd(ids, p.g_tok.view_as(DType::f32, {V, D, 1}), pos, out, o),
                                   {"token_table", dims({V, D, 1}), "rank 2"});
  expect_rejected<InvalidArgument>(
      p, fwd(ids, tok, pos, p.g_out.view_as(DType::f32, {B, T, D - 1 > 0 ? D - 1 : D + 1}), o),
      {"out", dims({B, T, D}), "expected"});
  if (B != T)
    expect_rejected<InvalidArgument>(p,
                                     fwd(ids, tok, pos, p.g_out.view_as(DType::f32, {T, B, D}), o),
                                     {"out", dims({T, B, D}), dims({B, T, D})});
  expect_rejected<InvalidArgument>(
      p, fwd(ids, tok, pos, p.g_out.view_as(DType::f32, {B * T, D}), o), {"out", "rank 3"});
  expect_rejected<InvalidArgument>(p, fwd(ids, tok, p.g_pos.view_as(DType::f32, {P2, D2}), out, o),
                                   {"pos_table", dims({P2, D2}), "D = " + std::to_string(D)});
  Options wrong_pos_shape = o;
  wrong_pos_shape.position_ids = p.g_pos_ids.view_as(p.pos_id_type, {T, B});
  if (B != T)
    expect_rejected<InvalidArgument>(p, fwd(ids, tok, pos, out, wrong_pos_shape),
                                     {"position_ids", dims({T, B}), dims({B, T})});
  expect_rejected<InvalidArgument>(p, bwd(ids, p.g_dout.view_as(p.dout_type, {B, T}), gt, gp),
                                   {"dout", "rank 3"});
  expect_rejected<InvalidArgument>(p, bwd(ids, dout, gt, p.g_gpos.view_as(DType::f32, {P2, D2})),
                                   {"grad_pos", dims({P2, D2}), "D = " + std::to_string(D)});
  // padding_idx outside [-V, V).
  for (std::int64_t bad : {V, -V - 1, kI64Min, kI64Max}) {
    Options bad_padding = o;
    bad_padding.padding_idx = bad;
    expect_rejected<InvalidArgument>(
        p, [&] { tokemb::backward(ids, dout, gt, gp, bad_padding, Workspace{}, stream); },
        {"padding_idx", std::to_string(bad),
         "[" + std::to_string(-V) + ", " + std::to_string(V) + ")"});
  }
}

TEST(BadInput, DtypeAndShapeMismatchesAreRejected) {
  dtype_and_shape_mismatches(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, DtypeAndShapeMismatchesAreRejected) {
  dtype_and_shape_mismatches(Device::cuda(0), stream());
}

// ---- sizes that overflow ---------------------------------------------------------------------

void size_overflow(Device device, StreamView stream) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(device, stream, rng);
  p.upload();
  const std::int64_t B = p.B, T = p.T, D = p.D;
  const std::int64_t big = std::int64_t{1} << 62;
  const DType dt = p.dtype;
  const Options o = p.options();
  const TensorView ids = p.g_ids.view();
  // Views with huge shapes over small memory: validation must refuse them without touching it.
  // B * T * D overflows int64 although the table [1, 2^62] does not.
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(ids, p.g_tok.view_as(dt, {1, big}), TensorView{},
                        p.g_out.view_as(dt, {B, T, big}), o, stream);
      },
      {"B * T * D", std::to_string(B * T) + " * " + std::to_string(big), "overflows int64"});
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(ids,
                                                      p.g_dout.view_as(p.dout_type, {B, T, big}),
                                                      p.g_gtok.view_as(DType::f32, {1, big}),
                                                      TensorView{}, o, Workspace{}, stream);
                                   },
                                   {"B * T * D", "overflows int64"});
  // A table whose element count overflows.
  const std::int64_t huge = std::int64_t{1} << 40;
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::forward(ids, p.g_tok.view_as(dt, {huge, huge}),
                                                     TensorView{},
                                                     p.g_out.view_as(dt, {B, T, huge}), o, stream);
                                   },
                                   {std::to_string(huge), "overflows"});
  // More rows than the kernels index with 32 bits.
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(p.g_ids.view_as(p.id_type, {65536, 65536}), p.g_tok.view(), TensorView{},
                        p.g_out.view_as(dt, {65536, 65536, D}), o, stream);
      },
      {"B * T", "4294967296", "exceeds the supported maximum", std::to_string(kI32Max)});
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(ids, p.g_tok.view_as(dt, {kI32Max + 1, 1}), TensorView{},
                        p.g_out.view_as(dt, {B, T, 1}), o, stream);
      },
      {"vocabulary size", std::to_string(kI32Max + 1), std::to_string(kI32Max)});
  expect_rejected<InvalidArgument>(
      p,
      [&] {
        tokemb::forward(ids, p.g_tok.view_as(dt, {p.V, 1}), p.g_pos.view_as(dt, {kI32Max + 1, 1}),
                        p.g_out.view_as(dt, {B, T, 1}), o, stream);
      },
      {"context length", std::to_string(kI32Max + 1), std::to_string(kI32Max)});
  // Buffers whose byte count overflows size_t are refused before any allocation.
  expect_throw_with<InvalidArgument>([&] { Buffer b(DType::f32, Shape{big}, device); },
                                     {"Buffer", std::to_string(big), "overflows size_t"});
  if (device.is_cuda()) expect_cuda_healthy();
}

TEST(BadInput, SizesThatOverflowAreRejected) { size_overflow(Device::cpu(), host_stream); }
TEST_F(GpuBadInput, SizesThatOverflowAreRejected) { size_overflow(Device::cuda(0), stream()); }

// ---- misaligned pointers ---------------------------------------------------------------------

/// Every tensor one element off 16-byte alignment, odd and even D: the same result, bit for bit,
/// as the aligned call (on the GPU: the scalar path instead of a fault).
void misaligned_pointers(Device device, StreamView stream, DType dtype) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 outer(seed);
  for (std::int64_t D : {1, 3, 8, 37, 64, 129}) {
    for (int variant = 0; variant < 4; ++variant) {
      const BackwardMode mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
      const bool accumulate = variant < 2;
      const std::uint64_t problem_seed = outer();
      const bool explicit_positions = outer() % 2 == 0;
      std::vector<float> out[2], gtok[2], gpos[2];
      for (std::size_t shift : {0u, 1u}) {
        SCOPED_TRACE(::testing::Message()
                     << "D=" << D << " shift " << shift << " element(s), "
                     << (mode == BackwardMode::atomic ? "atomic" : "deterministic")
                     << (accumulate ? ", accumulate" : ", overwrite"));
        std::mt19937_64 rng(problem_seed);
        Problem p = small_problem(device, stream, rng);
        p.D = D;
        p.dtype = dtype;
        p.dout_type = dtype;
        p.mode = mode;
        p.accumulate = accumulate;
        p.explicit_positions = explicit_positions;
        p.shift = shift;
        p.randomize(rng);
        p.upload();
        p.forward(p.options());
        p.expect_forward_result();
        p.backward(p.options());
        p.expect_backward_result();
        out[shift] = p.g_out.floats();
        gtok[shift] = p.g_gtok.floats();
        gpos[shift] = p.g_gpos.floats();
      }
      EXPECT_EQ(out[0], out[1]);
      EXPECT_EQ(gtok[0], gtok[1]);
      EXPECT_EQ(gpos[0], gpos[1]);
    }
  }
  if (device.is_cuda()) expect_cuda_healthy();
}

TEST(BadInput, MisalignedPointersGiveTheAlignedResult) {
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    misaligned_pointers(Device::cpu(), host_stream, t);
  }
}
TEST_F(GpuBadInput, MisalignedPointersGiveTheAlignedResult) {
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    misaligned_pointers(Device::cuda(0), stream(), t);
  }
}

// A pointer that is not a multiple of its element size (a bf16 table one byte off, an f32 table
// three bytes off) is rejected before any access: on the CPU it would be undefined behaviour, and
// a CUDA kernel would fault with a misaligned address, a sticky error that ends the context.
TEST(BadInput, PointersNotAlignedToTheirElementAreRejected) {
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(Device::cpu(), host_stream, rng);
  p.dtype = DType::bf16;
  p.upload();
  auto bytes_off = [](TensorView v, std::size_t n) {
    v.data = static_cast<unsigned char*>(v.data) + n;
    return v;
  };
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::forward(p.g_ids.view(), bytes_off(p.g_tok.view(), 1),
                                                     p.pos_view(), p.g_out.view(), p.options(),
                                                     host_stream);
                                   },
                                   {"token_table", "aligned"});
  expect_rejected<InvalidArgument>(p,
                                   [&] {
                                     tokemb::backward(p.g_ids.view(), p.g_dout.view(),
                                                      bytes_off(p.g_gtok.view(), 3), p.gpos_view(),
                                                      p.options(), Workspace{}, host_stream);
                                   },
                                   {"grad_token", "aligned"});
}

// A host pointer handed to a CUDA call would make the kernel fault and end the CUDA context;
// validation asks the driver where each pointer lives and rejects it first.
TEST_F(GpuBadInput, HostPointersInACudaCallAreRejectedAndTheContextStaysUsable) {
  constexpr std::int64_t V = 16, D = 8, P = 4, B = 2, T = 4;
  std::vector<std::int64_t> ids_h(B * T, 3);
  std::vector<float> tok_h(V * D, 1.0f), out_h(B * T * D, 0.0f);
  Buffer ids = to_device(ids_h, DType::i64, Shape{B, T}, stream());
  Buffer tok = to_device(tok_h, DType::f32, Shape{V, D}, stream());
  Buffer pos(DType::f32, Shape{P, D}, Device::cuda(0));
  Buffer out(DType::f32, Shape{B, T, D}, Device::cuda(0));
  fill_zero(pos, stream());
  const TensorView host_out(out_h.data(), DType::f32, Shape{B, T, D}, Device::cuda(0));
  try {
    tokemb::forward(ids, tok, pos, host_out, Options{}, stream());
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
  ErrorRecord host_record = {};
  Options o;
  o.error_record = &host_record;  // a host record for a device call
  EXPECT_THROW(tokemb::forward(ids, tok, pos, out, o, stream()), InvalidArgument);
  tokemb::forward(ids, tok, pos, out, Options{}, stream());  // still fine afterwards
  const auto got = to_host<float>(out, stream());
  for (float x : got) ASSERT_EQ(x, 1.0f);
#if TOKEMB_WITH_CUDA
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
#endif
}

}  // namespace
}  // namespace tokemb::test
