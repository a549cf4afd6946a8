// The NCCL-free half of the tensor-parallel module (host/parallel.hpp), on the CPU: one thread
// per rank, with a stand-in for the collective (every rank must arrive; one that waits too long
// would hang in NCCL). Issue 20 item 16: every rank validates the same arguments before any
// collective, so a position_offset past the table throws on every rank, not only on rank 0
// (the one that adds the positions). Item 15: reserve() sizes the workspace of the backward call
// each rank actually makes. The module itself (NCCL, a GPU) is tests/test_nccl.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <tokemb/nccl.hpp>

#include "host/parallel.hpp"
#include "host/validate.hpp"
#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

const StreamView host_stream = StreamView::legacy_default();

// A collective's rendezvous: arrive() returns false when the other ranks did not all arrive
// within the timeout (with NCCL this rank would wait forever).
class StandInCollective {
 public:
  explicit StandInCollective(int world) : world_(world) {}
  bool arrive() {
    std::unique_lock<std::mutex> lock(m_);
    if (++arrived_ == world_) {
      cv_.notify_all();
      return true;
    }
    return cv_.wait_for(lock, std::chrono::seconds(2), [&] { return arrived_ >= world_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int world_, arrived_ = 0;
};

struct ParallelProblem {
  std::int64_t V = 50, padded = 52, D = 8, P = 16, B = 2, T = 6;
  std::vector<float> tok, pos, dout;
  std::vector<std::int64_t> ids;
  nccl::ParallelConfig config() const {
    nccl::ParallelConfig pc;
    pc.embedding.vocab_size = V;
    pc.embedding.dim = D;
    pc.embedding.context_length = P;
    pc.padded_vocab = padded;
    return pc;
  }
  explicit ParallelProblem(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    tok = random_values<float>(static_cast<std::size_t>(padded * D), rng);
    pos = random_values<float>(static_cast<std::size_t>(P * D), rng);
    dout = random_values<float>(static_cast<std::size_t>(B * T * D), rng);
    ids =
        random_ids<std::int64_t>(static_cast<std::size_t>(B * T), V, IdDistribution::uniform, rng);
  }
};

// What each rank did: "threw" (before the collective), "entered" (all ranks met), "hung".
std::vector<std::string> run_ranks(const ParallelProblem& pr, int world,
                                   std::int64_t position_offset, bool backward,
                                   std::vector<std::vector<float>>* outs = nullptr) {
  StandInCollective collective(world);
  std::vector<std::string> result(static_cast<std::size_t>(world));
  if (outs) outs->assign(static_cast<std::size_t>(world), {});
  auto rank_main = [&](int r) {
    const nccl::ParallelConfig pc = pr.config();
    const nccl::Shard sh = nccl::vocab_shard(pr.padded, r, world);
    // This rank's memory: its token shard (and gradient rows), the replicated position table
    // (and gradient), its own ids and output.
    std::vector<float> tok(pr.tok.begin() + sh.start * pr.D,
                           pr.tok.begin() + (sh.start + sh.rows) * pr.D);
    std::vector<float> pos = pr.pos, dout = pr.dout;
    std::vector<std::int64_t> ids = pr.ids;
    std::vector<float> out(static_cast<std::size_t>(pr.B * pr.T * pr.D), 0.0f);
    std::vector<float> gt(tok.size(), 0.0f), gp(pos.size(), 0.0f);
    const TensorView ids_v = host_view(ids, DType::i64, {pr.B, pr.T});
    try {
      Options o = detail::parallel_options(pc, sh, position_offset, nullptr);
      if (!backward) {
        const TensorView tok_v = host_view(tok, DType::f32, {sh.rows, pr.D});
        const TensorView out_v = host_view(out, DType::f32, {pr.B, pr.T, pr.D});
        const TensorView pos_v = detail::parallel_forward_positions(
            r, ids_v, tok_v, host_view(pos, DType::f32, {pr.P, pr.D}), out_v, o);
        EXPECT_EQ(pos_v.empty(), r != 0);
        tokemb::forward(ids_v, tok_v, pos_v, out_v, o, host_stream);
      } else {
        o.accumulate = false;
        const TensorView gt_v = host_view(gt, DType::f32, {sh.rows, pr.D});
        const TensorView dout_v = host_view(dout, DType::f32, {pr.B, pr.T, pr.D});
        const TensorView gp_v = detail::parallel_backward_positions(
            r, ids_v, dout_v, gt_v, host_view(gp, DType::f32, {pr.P, pr.D}), o);
        EXPECT_EQ(gp_v.empty(), r != 0);
        tokemb::backward(ids_v, dout_v, gt_v, gp_v, o, Workspace{}, host_stream);
      }
      result[static_cast<std::size_t>(r)] = collective.arrive() ? "entered" : "hung";
      if (outs) (*outs)[static_cast<std::size_t>(r)] = out;
    } catch (const Error& e) {
      result[static_cast<std::size_t>(r)] = std::string("threw: ") + e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  return result;
}

TEST(ParallelRanks, APositionOffsetPastTheTableThrowsOnEveryRankBeforeTheCollective) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const ParallelProblem pr(seed);
  for (int world : {2, 3})
    for (bool backward : {false, true})
      for (std::int64_t offset : {pr.P - pr.T + 1, pr.P, std::int64_t{-1}}) {
        SCOPED_TRACE("world " + std::to_string(world) + (backward ? " backward" : " forward") +
                     " position_offset " + std::to_string(offset));
        const auto result = run_ranks(pr, world, offset, backward);
        for (int r = 0; r < world; ++r) {
          const std::string& what = result[static_cast<std::size_t>(r)];
          EXPECT_EQ(what.rfind("threw", 0), 0u) << "rank " << r << ": " << what;
          EXPECT_NE(what.find("position"), std::string::npos) << "rank " << r << ": " << what;
        }
      }
}

TEST(ParallelRanks, ValidCallsMeetAtTheCollectiveAndTheOutputsSumToTheUnshardedOne) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  ParallelProblem pr(seed);
  std::vector<float> want(static_cast<std::size_t>(pr.B * pr.T * pr.D));
  Options o;
  o.position_offset = pr.P - pr.T;
  o.vocab_size = pr.V;
  tokemb::forward(host_view(pr.ids, DType::i64, {pr.B, pr.T}),
                  host_view(pr.tok, DType::f32, {pr.padded, pr.D}),
                  host_view(pr.pos, DType::f32, {pr.P, pr.D}),
                  host_view(want, DType::f32, {pr.B, pr.T, pr.D}), o, host_stream);
  for (int world : {1, 2, 3}) {
    std::vector<std::vector<float>> outs;
    const auto result = run_ranks(pr, world, pr.P - pr.T, false, &outs);
    for (int r = 0; r < world; ++r) EXPECT_EQ(result[static_cast<std::size_t>(r)], "entered");
    for (std::size_t i = 0; i < want.size(); ++i) {
      float sum = 0.0f;
      for (const auto& out : outs) sum += out[i];
      ASSERT_EQ(sum, want[i]) << "world " << world << " element " << i;
    }
    EXPECT_EQ(run_ranks(pr, world, 0, true), std::vector<std::string>(world, "entered"));
  }
}

// The fields the backward workspace's size depends on, as reserve sizes them and as the call
// itself presents them (validate_backward is what tokemb::backward and backward_workspace_size
// see).
void expect_same_sizing(const detail::BackwardParams& reserved,
                        const detail::BackwardParams& call) {
  EXPECT_EQ(reserved.rows(), call.rows());
  EXPECT_EQ(reserved.D, call.D);
  EXPECT_EQ(reserved.V, call.V);
  EXPECT_EQ(reserved.vocab_start, call.vocab_start);
  EXPECT_EQ(reserved.valid_ids(), call.valid_ids());
  EXPECT_EQ(reserved.P, call.P);
  EXPECT_EQ(reserved.positions(), call.grad_pos != nullptr);
  EXPECT_EQ(reserved.scattered_positions(), call.scattered_positions());
  EXPECT_EQ(reserved.mode, call.mode);
  EXPECT_EQ(reserved.accumulate, call.accumulate);
}

TEST(ParallelRanks, ReserveSizesTheWorkspaceOfTheBackwardEachRankMakes) {
  ParallelProblem pr(1);
  const std::int64_t n = 24, B = 4, T = 6;  // B * T of the largest call (T <= P)
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n), 0);
  std::vector<float> dout(static_cast<std::size_t>(n * pr.D)), gt(pr.tok.size()), gp(pr.pos.size());
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic})
    for (int world : {1, 2, 3, 4})
      for (int r = 0; r < world; ++r) {
        SCOPED_TRACE("world " + std::to_string(world) + " rank " + std::to_string(r));
        nccl::ParallelConfig pc = pr.config();
        pc.embedding.backward_mode = mode;
        const nccl::Shard sh = nccl::vocab_shard(pr.padded, r, world);
        Options o = detail::parallel_options(pc, sh, 0, nullptr);
        o.accumulate = false;  // zero_grad_and_backward
        const TensorView ids_v = host_view(ids, DType::i64, {B, T});
        const TensorView dout_v = host_view(dout, DType::f32, {B, T, pr.D});
        const TensorView gt_v = host_view(gt, DType::f32, {sh.rows, pr.D});
        const TensorView gp_v = detail::parallel_backward_positions(
            r, ids_v, dout_v, gt_v, host_view(gp, DType::f32, {pr.P, pr.D}), o);
        expect_same_sizing(detail::parallel_reserve_params(pc, sh, r, n),
                           detail::validate_backward(ids_v, dout_v, gt_v, gp_v, o));
      }
  // The module (Embedding::reserve): its zero_grad_and_backward.
  for (BackwardMode mode : {BackwardMode::atomic, BackwardMode::deterministic}) {
    Options o;
    o.accumulate = false;
    o.backward_mode = mode;
    expect_same_sizing(detail::reserve_params("reserve", n, pr.D, pr.padded, pr.P, mode),
                       detail::validate_backward(host_view(ids, DType::i64, {B, T}),
                                                 host_view(dout, DType::f32, {B, T, pr.D}),
                                                 host_view(gt, DType::f32, {pr.padded, pr.D}),
                                                 host_view(gp, DType::f32, {pr.P, pr.D}), o));
  }
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-4}, std::int64_t{1} << 31})
    EXPECT_THROW(
        detail::parallel_reserve_params(pr.config(), nccl::vocab_shard(pr.padded, 0, 2), 0, bad),
        InvalidArgument)
        << bad;
}

// Issue 20 item 17: grid sizes in 64 bits; the old 32-bit ceil_div wrapped for an absurd D and
// then passed the launchers' "at most 65535 blocks" checks.
TEST(LaunchArithmetic, CeilDivDoesNotWrap) {
  static_assert(detail::ceil_div(10, 3) == 4 && detail::ceil_div(9, 3) == 3 &&
                    detail::ceil_div(0, 7) == 0 && detail::ceil_div(1, 7) == 1,
                "ceil_div");
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(detail::ceil_div(max, 1), max);
  EXPECT_EQ(detail::ceil_div(max, 2), max / 2 + 1);
  EXPECT_EQ(detail::ceil_div((std::int64_t{1} << 42) + 1, 1024), (std::int64_t{1} << 32) + 1);
  EXPECT_GT(detail::ceil_div((std::int64_t{1} << 42) + 1, 1024), 65535);
}

}  // namespace
}  // namespace tokemb::test
