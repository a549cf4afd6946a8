// GPU backend against the CPU reference, typed over table dtypes x index types, on fresh random
// inputs (the seed is printed on failure).
//
// Tolerances:
//  * forward: exact. Both backends add in f32 and round once to the table dtype with
//    round-to-nearest-even, so every element must match bit for bit.
//  * backward: |gpu - cpu| <= 8 eps_f32 * (S + |cpu|) + 1e-6 per element (grad_matches in
//    tests/test_helpers.hpp), where S is the sum of |dout| over the rows feeding that element
//    (computed by running the CPU reference on |dout|). The GPU sums in f32 in a different order
//    than the CPU's double sums; random orders of 65536 rows stay under 1 eps * S on the host,
//    and one dropped row is ~100 eps * S away (BackwardTolerance checks both on the CPU).
//  * atomic mode on heavy-duplicate ids (identical, Zipf): run several times, each compared, so a
//    rare race has a chance to show.
//  * workspace: exactly backward_workspace_size bytes, off 256-byte alignment, with canary bytes
//    on both sides that must survive.
//  * deterministic mode: additionally bitwise equal between two runs.
//  * overwrite (Options::accumulate = false): the same tolerance against the CPU reference's
//    overwrite, starting from NaN-poisoned gradients on the GPU, so a row left unwritten fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "tests/test_helpers.hpp"

#if TOKEMB_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

enum class PosMode { offset, ids, off };

struct Case {
  const char* name;
  std::int64_t B, T, D, V, P;
  IdDistribution dist;
  PosMode pos;
  std::int64_t offset;
  bool padding;
};

// D in {1, 3, 8, 77, 128, 768, 4096, 4100}; B*T from 1 to 65536; uniform, Zipf and identical ids;
// offset positions, explicit position ids and positions off; padding_idx.
const Case kCases[] = {
    {"D1_offset", 3, 5, 1, 7, 8, IdDistribution::uniform, PosMode::offset, 2, false},
    {"D3_no_positions", 2, 9, 3, 11, 9, IdDistribution::zipf, PosMode::off, 0, false},
    {"D8_identical_padding", 4, 16, 8, 50, 16, IdDistribution::identical, PosMode::offset, 0, true},
    {"D77_position_ids", 5, 33, 77, 1000, 40, IdDistribution::zipf, PosMode::ids, 0, false},
    {"D768_gpt2_zipf", 8, 128, 768, 50257, 1024, IdDistribution::zipf, PosMode::offset, 100, true},
    {"D4096_uniform", 2, 64, 4096, 5000, 64, IdDistribution::uniform, PosMode::offset, 0, false},
    // More than one column block per tile (f32: 1025 packs of 4; bf16/f16: 4100 scalars).
    {"D4100_column_blocks", 2, 80, 4100, 300, 100, IdDistribution::zipf, PosMode::offset, 5, true},
    // The same geometry for the simulator, on 8 rows.
    {"D4100_column_blocks_8_rows", 2, 4, 4100, 30, 8, IdDistribution::zipf, PosMode::offset, 1,
     true},
    {"single_token", 1, 1, 256, 50257, 1024, IdDistribution::uniform, PosMode::offset, 1000, false},
    {"decode_B64_T1", 64, 1, 768, 50257, 1024, IdDistribution::zipf, PosMode::offset, 1000, false},
    // Decode-like: the deterministic positional gradient splits B into chunks of 64 rows.
    {"decode_B4096_T1", 4096, 1, 768, 50257, 1024, IdDistribution::zipf, PosMode::offset, 1000,
     false},
    // B not a multiple of the chunk, several steps, overwrite zeroing rows outside the window.
    {"B200_T3_pos_chunks", 200, 3, 40, 1000, 16, IdDistribution::uniform, PosMode::offset, 5, true},
    // For the simulator (scripts/sim-check.sh, which runs only the smallest cases): one
    // run of 1300 equal ids over 11 sorted tiles takes the fixup's split-across-warps path (more
    // than 8 partials); Zipf ids over 40 rows make many runs that cross one or several tiles.
    {"N1300_identical_long_run", 10, 130, 24, 500, 256, IdDistribution::identical, PosMode::ids, 0,
     false},
    {"N3000_zipf_V40_runs", 20, 150, 12, 40, 150, IdDistribution::zipf, PosMode::offset, 0, true},
    // GPT-2's D on 32 rows: 192 packs of f32, 96 of bf16/f16 per row (blocks narrower than 256).
    {"D768_32_rows", 2, 16, 768, 1000, 32, IdDistribution::zipf, PosMode::offset, 3, true},
    {"N65536_identical", 64, 1024, 128, 50257, 1024, IdDistribution::identical, PosMode::offset, 0,
     false},
    {"N65536_zipf_ids", 64, 1024, 64, 50257, 1024, IdDistribution::zipf, PosMode::ids, 0, true},
    {"N65536_uniform", 128, 512, 32, 50257, 512, IdDistribution::uniform, PosMode::offset, 0,
     false},
};

template <class T, class I>
struct HostProblem {
  Case c;
  std::vector<T> tok, pos, dout;
  std::vector<I> ids, pos_ids;
  std::vector<float> g0_tok, g0_pos;
  std::int64_t padding = -1;

  HostProblem(const Case& c_, std::mt19937_64& rng) : c(c_) {
    tok = random_values<T>(static_cast<std::size_t>(c.V * c.D), rng);
    if (c.pos != PosMode::off) pos = random_values<T>(static_cast<std::size_t>(c.P * c.D), rng);
    ids = random_ids<I>(static_cast<std::size_t>(c.B * c.T), c.V, c.dist, rng);
    if (c.pos == PosMode::ids) {
      std::uniform_int_distribution<std::int64_t> u(0, c.P - 1);
      pos_ids.resize(ids.size());
      for (auto& x : pos_ids) x = static_cast<I>(u(rng));
    }
    dout = random_values<T>(static_cast<std::size_t>(c.B * c.T * c.D), rng);
    g0_tok = random_values<float>(static_cast<std::size_t>(c.V * c.D), rng, 0.5f);
    if (c.pos != PosMode::off)
      g0_pos = random_values<float>(static_cast<std::size_t>(c.P * c.D), rng, 0.5f);
    if (c.padding) padding = static_cast<std::int64_t>(ids[ids.size() / 2]);  // a frequent id
  }
  Options options(const TensorView& position_ids) const {
    Options o;
    if (c.pos == PosMode::offset) o.position_offset = c.offset;
    if (c.pos == PosMode::ids) o.position_ids = position_ids;
    if (padding >= 0) o.padding_idx = padding;
    return o;
  }
};

template <class C>
class GpuOps : public GpuTest {};
TYPED_TEST_SUITE(GpuOps, AllCombos, ComboNames);

TYPED_TEST(GpuOps, ForwardAndBackwardMatchCpuReference) {
  using T = typename TypeParam::Float;
  using I = typename TypeParam::Index;
  const DType dt = TypeParam::dtype, it = TypeParam::index;
  // TOKEMB_TEST_SMALL=1 (set by scripts/gpu-check.sh under compute-sanitizer) drops the shapes
  // with more than 4096 rows, which the sanitizers would make slow.
  const bool small = std::getenv("TOKEMB_TEST_SMALL") != nullptr;
  // TOKEMB_TEST_SIM=1 (scripts/sim-check.sh: GPGPU-Sim executes about 10^5 instructions per
  // second, and copies every table in and out of its memory model) keeps the cases of at most
  // kSimElements dout elements and tables of at most kSimTable elements; the cases marked "for
  // the simulator" below stand in for the larger ones' tile, chunk and column-block geometry.
  const bool sim = std::getenv("TOKEMB_TEST_SIM") != nullptr;
  constexpr std::int64_t kSimElements = 65536, kSimTable = 1 << 20;
  const char* only = std::getenv("TOKEMB_TEST_CASE");  // one case by name, to replay a failure
  for (const Case& c : kCases) {
    if (only != nullptr && std::string(only) != c.name) continue;
    if ((small || sim) && c.B * c.T > 4096) continue;
    if (sim && (c.B * c.T * c.D > kSimElements || c.V * c.D > kSimTable)) continue;
    const auto seed = fresh_seed();
    SCOPED_TRACE(std::string(c.name) + " seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    HostProblem<T, I> h(c, rng);
    const bool with_pos = c.pos != PosMode::off;
    const Shape ids_s{c.B, c.T}, out_s{c.B, c.T, c.D}, tok_s{c.V, c.D}, pos_s{c.P, c.D};

    // --- CPU reference
    std::vector<T> out_ref(static_cast<std::size_t>(c.B * c.T * c.D));
    const TensorView cpu_pids =
        with_pos && c.pos == PosMode::ids ? host_view(h.pos_ids, it, ids_s) : TensorView{};
    forward(host_view(h.ids, it, ids_s), host_view(h.tok, dt, tok_s),
            with_pos ? host_view(h.pos, dt, pos_s) : TensorView{}, host_view(out_ref, dt, out_s),
            h.options(cpu_pids), host_stream);
    // Accumulating into g0, and overwriting (a CPU overwrite starting from g0 too).
    std::vector<float> gt_ref = h.g0_tok, gp_ref = h.g0_pos;
    std::vector<float> gt_over = h.g0_tok, gp_over = h.g0_pos;
    for (bool accumulate : {true, false}) {
      Options o = h.options(cpu_pids);
      o.accumulate = accumulate;
      backward(
          host_view(h.ids, it, ids_s), host_view(h.dout, dt, out_s),
          host_view(accumulate ? gt_ref : gt_over, DType::f32, tok_s),
          with_pos ? host_view(accumulate ? gp_ref : gp_over, DType::f32, pos_s) : TensorView{}, o,
          Workspace{}, host_stream);
    }
    std::vector<T> abs_dout(h.dout.size());
    for (std::size_t i = 0; i < abs_dout.size(); ++i)
      abs_dout[i] = from_f<T>(std::fabs(to_f(h.dout[i])));
    std::vector<float> gt_abs(h.g0_tok.size(), 0.0f), gp_abs(h.g0_pos.size(), 0.0f);
    backward(host_view(h.ids, it, ids_s), host_view(abs_dout, dt, out_s),
             host_view(gt_abs, DType::f32, tok_s),
             with_pos ? host_view(gp_abs, DType::f32, pos_s) : TensorView{}, h.options(cpu_pids),
             Workspace{}, host_stream);

    // --- GPU
    const StreamView s = this->stream();
    Buffer ids = to_device(h.ids, it, ids_s, s), tok = to_device(h.tok, dt, tok_s, s);
    Buffer pos, pids, gp;
    if (with_pos) pos = to_device(h.pos, dt, pos_s, s);
    if (c.pos == PosMode::ids) pids = to_device(h.pos_ids, it, ids_s, s);
    Buffer out(dt, out_s, Device::cuda(0));
    poison_device(out, s);
    forward(ids, tok, pos.view(), out, h.options(pids.view()), s);
    const std::vector<T> out_gpu = to_host<T>(out, s);
    for (std::size_t i = 0; i < out_gpu.size(); ++i)
      ASSERT_TRUE(same_bits(&out_gpu[i], &out_ref[i], sizeof(T)))
          << "forward element " << i << ": gpu " << to_f(out_gpu[i]) << " cpu " << to_f(out_ref[i]);

    Buffer dout = to_device(h.dout, dt, out_s, s);
    for (int variant = 0; variant < 4; ++variant) {
      const BackwardMode mode =
          variant % 2 == 0 ? BackwardMode::atomic : BackwardMode::deterministic;
      const bool accumulate = variant < 2;
      Options o = h.options(pids.view());
      o.backward_mode = mode;
      o.accumulate = accumulate;
      // Accumulate starts from g0; overwrite from NaN, which must not survive anywhere.
      auto start = [&](Buffer& g, const std::vector<float>& g0, const Shape& shape) {
        g = to_device(g0, DType::f32, shape, s);
        if (!accumulate) poison_device(g, s);
      };
      const std::vector<float>& gt_want = accumulate ? gt_ref : gt_over;
      const std::vector<float>& gp_want = accumulate ? gp_ref : gp_over;
      // Atomics on heavy-duplicate ids: several runs, each checked, for rare races.
      const int runs =
          mode == BackwardMode::atomic && c.dist != IdDistribution::uniform && !small ? 4 : 1;
      for (int run = 0; run < runs; ++run) {
        SCOPED_TRACE(std::string(mode == BackwardMode::atomic ? "atomic" : "deterministic") +
                     (accumulate ? ", accumulate" : ", overwrite") + ", run " +
                     std::to_string(run));
        Buffer gt;
        start(gt, h.g0_tok, tok_s);
        if (with_pos) start(gp, h.g0_pos, pos_s);
        const std::size_t ws_bytes = backward_workspace_size(ids, dout, gt, gp.view(), o);
        EXPECT_EQ(ws_bytes == 0, mode == BackwardMode::atomic && accumulate);
        // Exactly the bytes asked for, 8 bytes off a 256-byte boundary, canaries around.
        const GuardedWorkspace ws(ws_bytes, 8, s, seed + static_cast<std::uint64_t>(variant));
        backward(ids, dout, gt, gp.view(), o, ws.get(), s);
        EXPECT_TRUE(ws.canaries_intact());
        const auto gt_gpu = to_host<float>(gt, s);
        ASSERT_TRUE(grad_matches(gt_gpu, gt_want, gt_abs, "grad_token"));
        std::vector<float> gp_gpu;
        if (with_pos) {
          gp_gpu = to_host<float>(gp, s);
          ASSERT_TRUE(grad_matches(gp_gpu, gp_want, gp_abs, "grad_pos"));
        }
        if (mode == BackwardMode::deterministic) {  // a second run from the same start: same bits
          Buffer gt2, gp2;
          start(gt2, h.g0_tok, tok_s);
          if (with_pos) start(gp2, h.g0_pos, pos_s);
          backward(ids, dout, gt2, gp2.view(), o, ws.get(), s);
          EXPECT_TRUE(same_bits(to_host<float>(gt2, s).data(), gt_gpu.data(), gt_gpu.size() * 4));
          if (with_pos) {
            EXPECT_TRUE(same_bits(to_host<float>(gp2, s).data(), gp_gpu.data(), gp_gpu.size() * 4));
          }
          EXPECT_TRUE(ws.canaries_intact());
        }
      }
    }
  }
}

// The backward comparison on the host (no device needed): at 65536 identical ids its bound
// accepts f32 sums of the rows in random orders (what atomics may do) and in tiles, and rejects
// a result missing any one row.
TEST(BackwardTolerance, F32ReorderingPassesAndADroppedRowFails) {
  constexpr std::int64_t N = 65536, D = 16;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (IdDistribution dist : {IdDistribution::identical, IdDistribution::zipf}) {
    SCOPED_TRACE(distribution_name(dist));
    constexpr std::int64_t V = 64;
    auto ids = random_ids<std::int64_t>(N, V, dist, rng);
    auto dout = random_values<float>(N * D, rng);
    std::vector<float> abs_dout(dout.size());
    for (std::size_t i = 0; i < dout.size(); ++i) abs_dout[i] = std::fabs(dout[i]);
    std::vector<float> want(V * D, 0.0f), abs_sum(V * D, 0.0f);
    backward(host_view(ids, DType::i64, {1, N}), host_view(dout, DType::f32, {1, N, D}),
             host_view(want, DType::f32, {V, D}), TensorView{}, Options{}, Workspace{},
             host_stream);
    backward(host_view(ids, DType::i64, {1, N}), host_view(abs_dout, DType::f32, {1, N, D}),
             host_view(abs_sum, DType::f32, {V, D}), TensorView{}, Options{}, Workspace{},
             host_stream);
    // f32 sums in a random order, and in tiles of 128 rows whose partials are then summed.
    for (int order = 0; order < 3; ++order) {
      std::vector<std::int64_t> rows(N);
      for (std::int64_t r = 0; r < N; ++r) rows[static_cast<std::size_t>(r)] = r;
      if (order < 2) std::shuffle(rows.begin(), rows.end(), rng);
      std::vector<float> got(V * D, 0.0f);
      if (order < 2) {
        for (std::int64_t r : rows)
          for (std::int64_t d = 0; d < D; ++d)
            got[static_cast<std::size_t>(ids[r] * D + d)] +=
                dout[static_cast<std::size_t>(r * D + d)];
      } else {
        for (std::int64_t t0 = 0; t0 < N; t0 += 128) {
          std::vector<float> tile(V * D, 0.0f);
          for (std::int64_t r = t0; r < t0 + 128; ++r)
            for (std::int64_t d = 0; d < D; ++d)
              tile[static_cast<std::size_t>(ids[r] * D + d)] +=
                  dout[static_cast<std::size_t>(r * D + d)];
          for (std::size_t i = 0; i < got.size(); ++i) got[i] += tile[i];
        }
      }
      EXPECT_TRUE(grad_matches(got, want, abs_sum, "f32 sum")) << "order " << order;
    }
    // A dropped row: the reference without row r (in double, as the reference sums).
    for (int trial = 0; trial < 8; ++trial) {
      const std::int64_t r = static_cast<std::int64_t>(rng() % N);
      std::vector<float> d2 = dout;
      for (std::int64_t d = 0; d < D; ++d) d2[static_cast<std::size_t>(r * D + d)] = 0.0f;
      std::vector<float> dropped(V * D, 0.0f);
      backward(host_view(ids, DType::i64, {1, N}), host_view(d2, DType::f32, {1, N, D}),
               host_view(dropped, DType::f32, {V, D}), TensorView{}, Options{}, Workspace{},
               host_stream);
      EXPECT_FALSE(grad_matches(dropped, want, abs_sum, "dropped row")) << "row " << r;
    }
  }
}

TYPED_TEST(GpuOps, MisalignedPointersTakeTheScalarPathAndMatch) {
  using T = typename TypeParam::Float;
  using I = typename TypeParam::Index;
  const DType dt = TypeParam::dtype, it = TypeParam::index;
  constexpr std::int64_t B = 3, Tn = 7, D = 64, V = 100, P = 16;
  std::mt19937_64 rng(fresh_seed());
  auto tok = random_values<T>(V * D + 1, rng), pos = random_values<T>(P * D + 1, rng);
  auto ids = random_ids<I>(B * Tn, V, IdDistribution::zipf, rng);
  auto dout = random_values<T>(B * Tn * D + 1, rng);
  const StreamView s = this->stream();
  // Device copies whose views start one element in: 16-byte packs would fault there.
  Buffer tok_d = to_device(tok, dt, Shape{V * D + 1}, s),
         pos_d = to_device(pos, dt, Shape{P * D + 1}, s);
  Buffer dout_d = to_device(dout, dt, Shape{B * Tn * D + 1}, s);
  Buffer ids_d = to_device(ids, it, Shape{B, Tn}, s);
  Buffer out_d(dt, Shape{B * Tn * D + 1}, Device::cuda(0));
  Buffer gt_d(DType::f32, Shape{V * D + 1}, Device::cuda(0)),
      gp_d(DType::f32, Shape{P * D + 1}, Device::cuda(0));
  poison_device(out_d, s);
  auto shifted = [](const Buffer& b, DType d, Shape sh) {
    return TensorView(static_cast<char*>(b.data()) + dtype_size(d), d, sh, Device::cuda(0));
  };
  forward(ids_d, shifted(tok_d, dt, {V, D}), shifted(pos_d, dt, {P, D}),
          shifted(out_d, dt, {B, Tn, D}), Options{}, s);
  const auto out = to_host<T>(out_d, s);
  std::vector<float> gt, gp, gt_det, gp_det;
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
    fill_zero(gt_d, s);
    fill_zero(gp_d, s);
    Options o;
    o.backward_mode = mode;
    const TensorView dout_v = shifted(dout_d, dt, {B, Tn, D});
    const TensorView gt_v = shifted(gt_d, DType::f32, {V, D}),
                     gp_v = shifted(gp_d, DType::f32, {P, D});
    const std::size_t ws_bytes = backward_workspace_size(ids_d, dout_v, gt_v, gp_v, o);
    Buffer ws(DType::i32, Shape{static_cast<std::int64_t>(ws_bytes / 4 + 2)}, Device::cuda(0));
    // The workspace too starts 4 bytes into its allocation: any caller pointer must work.
    backward(ids_d, dout_v, gt_v, gp_v, o, Workspace{static_cast<char*>(ws.data()) + 4, ws_bytes},
             s);
    (mode == BackwardMode::atomic ? gt : gt_det) = to_host<float>(gt_d, s);
    (mode == BackwardMode::atomic ? gp : gp_det) = to_host<float>(gp_d, s);
  }
  std::vector<double> gt_exp(V * D, 0.0), gp_exp(P * D, 0.0);
  for (std::int64_t r = 0; r < B * Tn; ++r)
    for (std::int64_t d = 0; d < D; ++d) {
      const std::int64_t id = ids[r], t = r % Tn;
      const float e = to_f(from_f<T>(to_f(tok[1 + id * D + d]) + to_f(pos[1 + t * D + d])));
      ASSERT_EQ(to_f(out[1 + r * D + d]), e) << "r " << r << " d " << d;
      gt_exp[id * D + d] += to_f(dout[1 + r * D + d]);
      gp_exp[t * D + d] += to_f(dout[1 + r * D + d]);
    }
  for (std::int64_t i = 0; i < V * D; ++i) {
    ASSERT_NEAR(gt[1 + i], gt_exp[i], 1e-4) << i;
    ASSERT_NEAR(gt_det[1 + i], gt_exp[i], 1e-4) << "deterministic " << i;
  }
  for (std::int64_t i = 0; i < P * D; ++i) {
    ASSERT_NEAR(gp[1 + i], gp_exp[i], 1e-4) << i;
    ASSERT_NEAR(gp_det[1 + i], gp_exp[i], 1e-4) << "deterministic " << i;
  }
}

class GpuOverwrite : public GpuTest {};

// Zeroing and then adding -0 gives +0; the overwrite must store the same bits (tile sums, sums
// of tile-crossing runs, positional sums, rows nothing reaches), on the vector and scalar paths.
TEST_F(GpuOverwrite, NegativeZeroGradientsAreStoredAsPositiveZero) {
  constexpr std::int64_t B = 3, Tn = 100, V = 50, P = 128;
  std::mt19937_64 rng(fresh_seed());
  const StreamView s = stream();
  for (std::int64_t D : {8, 3}) {
    for (IdDistribution dist : {IdDistribution::identical, IdDistribution::zipf}) {
      auto ids_h = random_ids<std::int32_t>(B * Tn, V, dist, rng);
      std::vector<float> dout_h(static_cast<std::size_t>(B * Tn * D), -0.0f);
      Buffer ids = to_device(ids_h, DType::i32, Shape{B, Tn}, s);
      Buffer dout = to_device(dout_h, DType::f32, Shape{B, Tn, D}, s);
      for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
        SCOPED_TRACE(::testing::Message()
                     << "D=" << D << (mode == BackwardMode::atomic ? " atomic" : " deterministic")
                     << (dist == IdDistribution::identical ? " identical" : " zipf"));
        Buffer gt(DType::f32, Shape{V, D}, Device::cuda(0)),
            gp(DType::f32, Shape{P, D}, Device::cuda(0));
        poison_device(gt, s);
        poison_device(gp, s);
        Options o;
        o.position_offset = 7;
        o.backward_mode = mode;
        o.accumulate = false;
        const std::size_t bytes = backward_workspace_size(ids, dout, gt, gp, o);
        Buffer ws(DType::i64, Shape{static_cast<std::int64_t>(bytes / 8 + 1)}, Device::cuda(0));
        backward(ids, dout, gt, gp, o, Workspace{ws.data(), ws.bytes()}, s);
        for (const Buffer* g : {&gt, &gp}) {
          const auto h = to_host<float>(*g, s);
          for (std::size_t i = 0; i < h.size(); ++i) {
            std::uint32_t bits = 0;
            std::memcpy(&bits, &h[i], 4);
            ASSERT_EQ(bits, 0u) << (g == &gt ? "grad_token" : "grad_pos") << " element " << i;
          }
        }
      }
    }
  }
}

// Overwriting sorts the ids in both modes, so it needs a workspace; without one the call is
// refused before anything is written (the gradients keep their values).
TEST_F(GpuOverwrite, WithoutWorkspaceIsRefusedBeforeWriting) {
  constexpr std::int64_t B = 2, Tn = 8, D = 16, V = 40, P = 8;
  std::mt19937_64 rng(fresh_seed());
  const StreamView s = stream();
  auto ids_h = random_ids<std::int64_t>(B * Tn, V, IdDistribution::uniform, rng);
  auto dout_h = random_values<float>(B * Tn * D, rng);
  auto g0 = random_values<float>(V * D, rng), p0 = random_values<float>(P * D, rng);
  Buffer ids = to_device(ids_h, DType::i64, Shape{B, Tn}, s);
  Buffer dout = to_device(dout_h, DType::f32, Shape{B, Tn, D}, s);
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
    Buffer gt = to_device(g0, DType::f32, Shape{V, D}, s),
           gp = to_device(p0, DType::f32, Shape{P, D}, s);
    Options o;
    o.backward_mode = mode;
    o.accumulate = false;
    EXPECT_GT(backward_workspace_size(ids, dout, gt, gp, o), 0u);
    try {
      backward(ids, dout, gt, gp, o, Workspace{}, s);
      ADD_FAILURE() << "no exception";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("workspace"), std::string::npos) << e.what();
    }
    EXPECT_EQ(to_host<float>(gt, s), g0);
    EXPECT_EQ(to_host<float>(gp, s), p0);
  }
}

// Several tiles of sorted rows (runs of few distinct ids crossing tile boundaries) holding token
// rows, padding rows and out-of-range rows together, with offset or explicit positions (some out
// of range): every mode, accumulate and overwrite, f32 and bf16 dout, against the CPU reference
// given the same kind of error record. A padding row with a bad position must add nothing.
template <class T>
void padding_and_bad_rows_across_tiles(StreamView s, DType dt) {
  constexpr std::int64_t B = 3, Tn = 200, V = 20, P = 256, D = 24, n = B * Tn;
  const auto seed = fresh_seed();
  SCOPED_TRACE(std::string(dtype_name(dt)) + " seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (bool explicit_positions : {false, true}) {
    auto ids = random_ids<std::int64_t>(n, V, IdDistribution::zipf, rng);
    std::vector<std::int64_t> pids(n);
    for (auto& x : pids) x = static_cast<std::int64_t>(rng() % P);
    const std::int64_t padding = ids[1];
    std::int64_t bad = 0;
    for (std::size_t r : {5u, 130u, 300u, 451u, 599u}) {  // bad ids in several tiles
      ids[r] = r % 2 ? V + static_cast<std::int64_t>(r) : -1;
      ++bad;
    }
    if (explicit_positions) {
      for (std::size_t r : {7u, 255u, 420u}) {
        pids[r] = r % 2 ? P : -3;
        ++bad;
      }
      ids[420] = padding;  // a padding row with a bad position
    }
    auto dout = random_values<T>(static_cast<std::size_t>(n * D), rng);
    std::vector<T> abs_dout(dout.size());
    for (std::size_t i = 0; i < dout.size(); ++i) abs_dout[i] = from_f<T>(std::fabs(to_f(dout[i])));
    const auto g0 = random_values<float>(V * D, rng), p0 = random_values<float>(P * D, rng);
    const Shape ids_s{B, Tn}, dout_s{B, Tn, D};
    Buffer ids_d = to_device(ids, DType::i64, ids_s, s),
           pids_d = to_device(pids, DType::i64, ids_s, s);
    Buffer dout_d = to_device(dout, dt, dout_s, s);
    for (int variant = 0; variant < 4; ++variant) {
      const BackwardMode mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
      const bool accumulate = variant < 2;
      SCOPED_TRACE(std::string(explicit_positions ? "position ids, " : "offset positions, ") +
                   (variant % 2 ? "deterministic" : "atomic") +
                   (accumulate ? ", accumulate" : ", overwrite"));
      auto options = [&](const TensorView& position_ids, ErrorRecord* record) {
        Options o;
        if (explicit_positions) {
          o.position_ids = position_ids;
        } else {
          o.position_offset = 10;
        }
        o.padding_idx = padding;
        o.backward_mode = mode;
        o.accumulate = accumulate;
        o.error_record = record;
        return o;
      };
      // CPU reference (and the sums of |dout| per element, for the tolerance, with a record of
      // their own so that the reference's record sees one call).
      ErrorMonitor cpu_record(Device::cpu(), host_stream), abs_record(Device::cpu(), host_stream);
      std::vector<float> gt_ref = g0, gp_ref = p0, gt_abs(g0.size(), 0.0f), gp_abs(p0.size(), 0.0f);
      const TensorView cpu_pids = host_view(pids, DType::i64, ids_s);
      backward(host_view(ids, DType::i64, ids_s), host_view(dout, dt, dout_s),
               host_view(gt_ref, DType::f32, {V, D}), host_view(gp_ref, DType::f32, {P, D}),
               options(cpu_pids, cpu_record.get()), Workspace{}, host_stream);
      Options abs_o = options(cpu_pids, abs_record.get());
      abs_o.accumulate = true;
      backward(host_view(ids, DType::i64, ids_s), host_view(abs_dout, dt, dout_s),
               host_view(gt_abs, DType::f32, {V, D}), host_view(gp_abs, DType::f32, {P, D}), abs_o,
               Workspace{}, host_stream);
      // GPU: overwrite starts from NaN.
      ErrorMonitor gpu_record(Device::cuda(0), s);
      Buffer gt = to_device(g0, DType::f32, Shape{V, D}, s),
             gp = to_device(p0, DType::f32, Shape{P, D}, s);
      if (!accumulate) {
        poison_device(gt, s);
        poison_device(gp, s);
      }
      const Options o = options(pids_d.view(), gpu_record.get());
      const std::size_t bytes = backward_workspace_size(ids_d, dout_d, gt, gp, o);
      Buffer ws(DType::i64, Shape{static_cast<std::int64_t>(bytes / 8 + 1)}, Device::cuda(0));
      backward(ids_d, dout_d, gt, gp, o, Workspace{ws.data(), ws.bytes()}, s);
      const auto gt_h = to_host<float>(gt, s), gp_h = to_host<float>(gp, s);
      ASSERT_TRUE(grad_matches(gt_h, gt_ref, gt_abs, "grad_token"));
      ASSERT_TRUE(grad_matches(gp_h, gp_ref, gp_abs, "grad_pos"));
      // The device record, field by field, against the CPU record of the same call.
      std::optional<IndexOutOfRange> rec[2];
      for (int dev = 0; dev < 2; ++dev) {
        try {
          dev == 0 ? cpu_record.check(host_stream) : gpu_record.check(s);
          ADD_FAILURE() << (dev == 0 ? "cpu" : "gpu") << ": no IndexOutOfRange recorded";
        } catch (const IndexOutOfRange& e) {
          rec[dev] = e;
        }
      }
      ASSERT_TRUE(rec[0] && rec[1]);
      const IndexOutOfRange &c = *rec[0], &g = *rec[1];
      EXPECT_EQ(c.count(), static_cast<std::uint64_t>(bad));
      EXPECT_EQ(g.count(), c.count());
      EXPECT_EQ(g.kind(), c.kind());
      EXPECT_EQ(g.value(), c.value());
      EXPECT_EQ(g.batch(), c.batch());
      EXPECT_EQ(g.time(), c.time());
      EXPECT_EQ(g.limit(), c.limit());
      EXPECT_EQ(std::string(g.what()), std::string(c.what()));
      // The first bad row is row 5 (token id V + 5) in both position variants.
      EXPECT_EQ(c.kind(), IndexOutOfRange::Kind::token);
      EXPECT_EQ(c.value(), V + 5);
      EXPECT_EQ(c.batch(), 0);
      EXPECT_EQ(c.time(), 5);
      EXPECT_EQ(c.limit(), V);
    }
  }
}

TEST_F(GpuOverwrite, PaddingAndOutOfRangeRowsAcrossTilesMatchTheCpu) {
  padding_and_bad_rows_across_tiles<float>(stream(), DType::f32);
  padding_and_bad_rows_across_tiles<bf16_t>(stream(), DType::bf16);
}

class GpuGraph : public GpuTest {};

TEST_F(GpuGraph, CapturedForwardBackwardReplayMatchesDirectCalls) {
#if TOKEMB_WITH_CUDA
  constexpr std::int64_t B = 8, Tn = 64, D = 256, V = 3000, P = 64;
  std::mt19937_64 rng(fresh_seed());
  const StreamView s = stream();
  for (int variant = 0; variant < 4; ++variant) {
    const BackwardMode mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
    // Overwrite: the graph holds zero_grad_and_backward, the direct module runs zero_grad() and
    // backward(), and the graphed module starts from other gradients, which must not survive.
    const bool overwrite = variant >= 2;
    SCOPED_TRACE(std::string(variant % 2 ? "deterministic" : "atomic") +
                 (overwrite ? ", overwrite" : ", accumulate"));
    EmbeddingConfig cfg;
    cfg.vocab_size = V;
    cfg.dim = D;
    cfg.context_length = P;
    cfg.device = Device::cuda(0);
    cfg.backward_mode = mode;
    Embedding direct(cfg, s), graphed(cfg, s);
    auto tok = random_values<float>(V * D, rng), pos = random_values<float>(P * D, rng);
    for (Embedding* m : {&direct, &graphed}) {
      m->load_token_table(tok.data(), tok.size() * 4);
      m->load_position_table(pos.data(), pos.size() * 4);
      m->reserve(B * Tn);  // no allocation may happen while capturing
    }
    auto ids_h = random_ids<std::int64_t>(B * Tn, V, IdDistribution::zipf, rng);
    auto dout_h = random_values<float>(B * Tn * D, rng);
    Buffer ids = to_device(ids_h, DType::i64, Shape{B, Tn}, s);
    Buffer dout = to_device(dout_h, DType::f32, Shape{B, Tn, D}, s);
    Buffer out_direct(DType::f32, Shape{B, Tn, D}, Device::cuda(0)),
        out_graph(DType::f32, Shape{B, Tn, D}, Device::cuda(0));

    for (int i = 0; i < 2; ++i) {
      direct.forward(ids, out_direct);
      if (overwrite) direct.zero_grad();
      direct.backward(ids, dout);
    }
    if (overwrite) {  // other ids (uniform, so rows the real ids never touch) and other values
      auto ids2_h = random_ids<std::int64_t>(B * Tn, V, IdDistribution::uniform, rng);
      auto dout2_h = random_values<float>(B * Tn * D, rng);
      Buffer ids2 = to_device(ids2_h, DType::i64, Shape{B, Tn}, s);
      Buffer dout2 = to_device(dout2_h, DType::f32, Shape{B, Tn, D}, s);
      graphed.backward(ids2, dout2);
      graphed.synchronize();  // before ids2 and dout2 are freed
    }

    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(s.value(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    graphed.forward(ids, out_graph);
    if (overwrite) {
      graphed.zero_grad_and_backward(ids, dout);
    } else {
      graphed.backward(ids, dout);
    }
    ASSERT_EQ(cudaStreamEndCapture(s.value(), &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int i = 0; i < 2; ++i) ASSERT_EQ(cudaGraphLaunch(exec, s.value()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s.value()), cudaSuccess);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);

    EXPECT_TRUE(same_bits(to_host<float>(out_graph, s).data(), to_host<float>(out_direct, s).data(),
                          static_cast<std::size_t>(B * Tn * D) * 4));
    const auto g1 = direct.token_grad_to_host(), g2 = graphed.token_grad_to_host();
    const auto p1 = direct.position_grad_to_host(), p2 = graphed.position_grad_to_host();
    if (mode == BackwardMode::deterministic) {
      EXPECT_TRUE(same_bits(g1.data(), g2.data(), g1.size() * 4));
      EXPECT_TRUE(same_bits(p1.data(), p2.data(), p1.size() * 4));
    } else {
      for (std::size_t i = 0; i < g1.size(); ++i)
        ASSERT_NEAR(g1[i], g2[i], 1e-4f * (1 + std::fabs(g1[i]))) << i;
      for (std::size_t i = 0; i < p1.size(); ++i)
        ASSERT_NEAR(p1[i], p2[i], 1e-4f * (1 + std::fabs(p1[i]))) << i;
    }
  }
#endif  // without the CUDA backend the fixture has already skipped
}

// The raw ops (not the module) captured into a CUDA graph with a device error record: replaying
// it twice gives the same outputs as direct calls, and the record, read after the replays, holds
// what the CPU record holds for the same four calls (the first bad row, and every bad row of
// every call counted).
TEST_F(GpuGraph, RawOpsCaptureWithAnErrorRecordReadAfterReplay) {
#if TOKEMB_WITH_CUDA
  constexpr std::int64_t B = 4, Tn = 96, D = 40, V = 700, P = 128;
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const StreamView s = stream();
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
    SCOPED_TRACE(mode == BackwardMode::atomic ? "atomic" : "deterministic");
    auto ids_h = random_ids<std::int64_t>(B * Tn, V, IdDistribution::zipf, rng);
    ids_h[static_cast<std::size_t>(Tn + 17)] = V + 4;  // (b=1, t=17): the first bad row
    ids_h[static_cast<std::size_t>(3 * Tn + 2)] = -7;
    auto tok_h = random_values<float>(V * D, rng), pos_h = random_values<float>(P * D, rng);
    auto dout_h = random_values<float>(B * Tn * D, rng);
    const Shape ids_s{B, Tn}, out_s{B, Tn, D};
    Buffer ids = to_device(ids_h, DType::i64, ids_s, s);
    Buffer tok = to_device(tok_h, DType::f32, {V, D}, s),
           pos = to_device(pos_h, DType::f32, {P, D}, s);
    Buffer dout = to_device(dout_h, DType::f32, out_s, s);
    Buffer out(DType::f32, out_s, Device::cuda(0));
    Buffer gt(DType::f32, Shape{V, D}, Device::cuda(0)),
        gp(DType::f32, Shape{P, D}, Device::cuda(0));
    fill_zero(gt, s);
    fill_zero(gp, s);
    ErrorMonitor record(Device::cuda(0), s);
    Options o;
    o.position_offset = 9;
    o.backward_mode = mode;
    o.error_record = record.get();
    const std::size_t ws_bytes = backward_workspace_size(ids, dout, gt, gp, o);
    const GuardedWorkspace ws(ws_bytes, 0, s, seed);  // allocated before the capture

    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(s.value(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    forward(ids, tok, pos, out, o, s);
    backward(ids, dout, gt, gp, o, ws.get(), s);
    ASSERT_EQ(cudaStreamEndCapture(s.value(), &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int i = 0; i < 2; ++i) ASSERT_EQ(cudaGraphLaunch(exec, s.value()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s.value()), cudaSuccess);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    EXPECT_TRUE(ws.canaries_intact());

    // The same four calls on the CPU, with a CPU record.
    std::vector<float> out_c(static_cast<std::size_t>(B * Tn * D)), gt_c(V * D, 0.0f),
        gp_c(P * D, 0.0f), gt_abs(V * D, 0.0f), gp_abs(P * D, 0.0f);
    ErrorMonitor cpu_record(Device::cpu(), host_stream), abs_record(Device::cpu(), host_stream);
    Options oc = o;
    oc.error_record = cpu_record.get();
    for (int i = 0; i < 2; ++i) {
      forward(host_view(ids_h, DType::i64, ids_s), host_view(tok_h, DType::f32, {V, D}),
              host_view(pos_h, DType::f32, {P, D}), host_view(out_c, DType::f32, out_s), oc,
              host_stream);
      backward(host_view(ids_h, DType::i64, ids_s), host_view(dout_h, DType::f32, out_s),
               host_view(gt_c, DType::f32, {V, D}), host_view(gp_c, DType::f32, {P, D}), oc,
               Workspace{}, host_stream);
    }
    std::vector<float> abs_dout(dout_h.size());
    for (std::size_t i = 0; i < abs_dout.size(); ++i) abs_dout[i] = 2.0f * std::fabs(dout_h[i]);
    Options oa = o;
    oa.error_record = abs_record.get();
    backward(host_view(ids_h, DType::i64, ids_s), host_view(abs_dout, DType::f32, out_s),
             host_view(gt_abs, DType::f32, {V, D}), host_view(gp_abs, DType::f32, {P, D}), oa,
             Workspace{}, host_stream);  // two calls' worth of |dout|
    EXPECT_EQ(to_host<float>(out, s), out_c);
    EXPECT_TRUE(grad_matches(to_host<float>(gt, s), gt_c, gt_abs, "grad_token"));
    EXPECT_TRUE(grad_matches(to_host<float>(gp, s), gp_c, gp_abs, "grad_pos"));

    std::optional<IndexOutOfRange> rec[2];
    for (int dev = 0; dev < 2; ++dev) {
      try {
        dev == 0 ? cpu_record.check(host_stream) : record.check(s);
        ADD_FAILURE() << (dev == 0 ? "cpu" : "gpu") << ": nothing recorded";
      } catch (const IndexOutOfRange& e) {
        rec[dev] = e;
      }
    }
    ASSERT_TRUE(rec[0] && rec[1]);
    const IndexOutOfRange &c = *rec[0], &g = *rec[1];
    EXPECT_EQ(c.count(), 8u);  // 2 bad rows x (forward + backward) x 2 replays
    EXPECT_EQ(g.count(), c.count());
    EXPECT_EQ(g.kind(), IndexOutOfRange::Kind::token);
    EXPECT_EQ(g.value(), V + 4);
    EXPECT_EQ(g.batch(), 1);
    EXPECT_EQ(g.time(), 17);
    EXPECT_EQ(g.limit(), V);
    EXPECT_EQ(std::string(g.what()), std::string(c.what()));
  }
#endif  // without the CUDA backend the fixture has already skipped
}

// reserve(max_tokens) covers every split of max_tokens rows into B x T, so a decode-like
// deterministic backward (T = 1, B = 4096: chunked positional sums with a workspace of their
// own) is captured without allocating, and the replay gives the direct call's bits.
TEST_F(GpuGraph, ReservedModuleCapturesADecodeLikeDeterministicBackward) {
#if TOKEMB_WITH_CUDA
  constexpr std::int64_t B = 4096, Tn = 1, D = 64, V = 1000, P = 1024, offset = 1000;
  std::mt19937_64 rng(fresh_seed());
  const StreamView s = stream();
  EmbeddingConfig cfg;
  cfg.vocab_size = V;
  cfg.dim = D;
  cfg.context_length = P;
  cfg.device = Device::cuda(0);
  cfg.backward_mode = BackwardMode::deterministic;
  Embedding direct(cfg, s), graphed(cfg, s);
  graphed.reserve(B * Tn);
  auto ids_h = random_ids<std::int64_t>(B * Tn, V, IdDistribution::zipf, rng);
  auto dout_h = random_values<float>(B * Tn * D, rng);
  Buffer ids = to_device(ids_h, DType::i64, Shape{B, Tn}, s);
  Buffer dout = to_device(dout_h, DType::f32, Shape{B, Tn, D}, s);
  for (bool overwrite : {false, true}) {
    SCOPED_TRACE(overwrite ? "zero_grad_and_backward" : "backward");
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(s.value(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    if (overwrite) {
      graphed.zero_grad_and_backward(ids, dout, offset);
    } else {
      graphed.backward(ids, dout, offset);
    }
    ASSERT_EQ(cudaStreamEndCapture(s.value(), &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s.value()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s.value()), cudaSuccess);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    if (overwrite) {
      direct.zero_grad_and_backward(ids, dout, offset);
    } else {
      direct.backward(ids, dout, offset);
    }
    const auto g1 = direct.token_grad_to_host(), g2 = graphed.token_grad_to_host();
    const auto p1 = direct.position_grad_to_host(), p2 = graphed.position_grad_to_host();
    EXPECT_TRUE(same_bits(g1.data(), g2.data(), g1.size() * 4));
    EXPECT_TRUE(same_bits(p1.data(), p2.data(), p1.size() * 4));
  }
#endif  // without the CUDA backend the fixture has already skipped
}

class GpuSemantics : public GpuTest {};

// Subnormal dout (README "Semantics"): the deterministic mode and the CPU reference keep them;
// the atomic mode's f32 atomics flush subnormals to zero on sm_80 and sm_90 (RED...FTZ), so an
// element that only subnormals reach may read 0 there. This documents both.
TEST_F(GpuSemantics, SubnormalDoutIsKeptByTheDeterministicModeAndMayBeFlushedByAtomics) {
  constexpr std::int64_t B = 2, Tn = 8, D = 8, V = 16;
  const StreamView s = stream();
  std::vector<std::int32_t> ids_h(B * Tn);
  for (std::size_t i = 0; i < ids_h.size(); ++i) ids_h[i] = static_cast<std::int32_t>(i % V);
  std::vector<float> dout_h(static_cast<std::size_t>(B * Tn * D));
  for (std::size_t i = 0; i < dout_h.size(); ++i)
    dout_h[i] = std::ldexp(static_cast<float>(1 + i % 7), -140) * (i % 2 ? -1.0f : 1.0f);
  ASSERT_EQ(std::fpclassify(dout_h[0]), FP_SUBNORMAL);
  std::vector<float> want(V * D, 0.0f);
  backward(host_view(ids_h, DType::i32, {B, Tn}), host_view(dout_h, DType::f32, {B, Tn, D}),
           host_view(want, DType::f32, {V, D}), TensorView{}, Options{}, Workspace{}, host_stream);
  Buffer ids = to_device(ids_h, DType::i32, Shape{B, Tn}, s);
  Buffer dout = to_device(dout_h, DType::f32, Shape{B, Tn, D}, s);
  for (BackwardMode mode : {BackwardMode::deterministic, BackwardMode::atomic}) {
    SCOPED_TRACE(mode == BackwardMode::atomic ? "atomic" : "deterministic");
    Buffer gt(DType::f32, Shape{V, D}, Device::cuda(0));
    fill_zero(gt, s);
    Options o;
    o.backward_mode = mode;
    const GuardedWorkspace ws(backward_workspace_size(ids, dout, gt, TensorView{}, o), 0, s, 1);
    backward(ids, dout, gt, TensorView{}, o, ws.get(), s);
    const auto got = to_host<float>(gt, s);
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (mode == BackwardMode::deterministic) {
        ASSERT_TRUE(same_bits(&got[i], &want[i], 4)) << i << ": " << got[i] << " vs " << want[i];
      } else {
        ASSERT_TRUE(same_bits(&got[i], &want[i], 4) || got[i] == 0.0f)
            << i << ": " << got[i] << " is neither " << want[i] << " nor a flushed zero";
      }
    }
  }
}

class GpuModule : public GpuTest {};

TEST_F(GpuModule, MatchesCpuModuleAndReportsBadIdsAtSynchronize) {
  constexpr std::int64_t V = 500, D = 96, P = 32, B = 4, Tn = 32;
  std::mt19937_64 rng(fresh_seed());
  EmbeddingConfig cfg;
  cfg.vocab_size = V;
  cfg.dim = D;
  cfg.context_length = P;
  cfg.dtype = DType::bf16;
  Embedding cpu(cfg, host_stream);
  cfg.device = Device::cuda(0);
  Embedding gpu(cfg, stream());
  auto tok = random_values<bf16_t>(V * D, rng), pos = random_values<bf16_t>(P * D, rng);
  for (Embedding* m : {&cpu, &gpu}) {
    m->load_token_table(tok.data(), tok.size() * 2);
    m->load_position_table(pos.data(), pos.size() * 2);
  }
  auto ids_h = random_ids<std::int32_t>(B * Tn, V, IdDistribution::zipf, rng);
  auto dout_h = random_values<float>(B * Tn * D, rng);
  std::vector<bf16_t> out_cpu(B * Tn * D);
  cpu.forward(host_view(ids_h, DType::i32, {B, Tn}), host_view(out_cpu, DType::bf16, {B, Tn, D}));
  cpu.backward(host_view(ids_h, DType::i32, {B, Tn}), host_view(dout_h, DType::f32, {B, Tn, D}));
  Buffer ids = to_device(ids_h, DType::i32, Shape{B, Tn}, stream());
  Buffer dout = to_device(dout_h, DType::f32, Shape{B, Tn, D}, stream());  // f32 dout, bf16 tables
  Buffer out(DType::bf16, Shape{B, Tn, D}, Device::cuda(0));
  gpu.forward(ids, out);
  gpu.backward(ids, dout);
  const auto out_gpu = to_host<bf16_t>(out, stream());
  EXPECT_TRUE(same_bits(out_gpu.data(), out_cpu.data(), out_cpu.size() * 2));
  const auto g_cpu = cpu.token_grad_to_host(), g_gpu = gpu.token_grad_to_host();
  for (std::size_t i = 0; i < g_cpu.size(); ++i) ASSERT_NEAR(g_gpu[i], g_cpu[i], 1e-4f) << i;

  ids_h[37] = static_cast<std::int32_t>(V + 3);  // (b=1, t=5)
  ids_h[90] = -2;
  Buffer bad = to_device(ids_h, DType::i32, Shape{B, Tn}, stream());
  gpu.forward(bad, out);  // returns without synchronising; the error is recorded on the device
  try {
    gpu.synchronize();
    FAIL() << "no exception";
  } catch (const IndexOutOfRange& e) {
    EXPECT_EQ(e.value(), V + 3);
    EXPECT_EQ(e.batch(), 1);
    EXPECT_EQ(e.time(), 5);
    EXPECT_EQ(e.limit(), V);
    EXPECT_EQ(e.count(), 2u);
  }
  const auto zeroed = to_host<bf16_t>(out, stream());
  for (std::int64_t d = 0; d < D; ++d)
    EXPECT_EQ(zeroed[static_cast<std::size_t>(37 * D + d)].bits, 0u);
  gpu.forward(ids, out);  // the context and the module are still usable
  EXPECT_NO_THROW(gpu.synchronize());
  EXPECT_TRUE(same_bits(to_host<bf16_t>(out, stream()).data(), out_cpu.data(), out_cpu.size() * 2));
}

}  // namespace
}  // namespace tokemb::test
