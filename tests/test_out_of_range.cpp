// Out-of-range token ids and positions (issue 6): rows whose id or position is outside its table,
// on the CPU (IndexOutOfRange before anything is written) and on a CUDA device (the rows are zero,
// their gradients skipped, the error record names the first one); offsets that put positions
// outside the context (rejected on the host before any launch); the module after such an error;
// the device error record against the CPU record. Every check also looks at the guard bytes
// around every tensor. Inputs are fresh random values per run (the seed is printed).
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/bad_input_helpers.hpp"

namespace tokemb::test {
namespace {

// ---- out-of-range ids and positions ----------------------------------------------------------

enum class Bad { token, position };

/// A value out of range for a table of `limit` rows.
struct BadValue {
  std::string name;
  std::function<std::int64_t(std::int64_t limit)> of;
};

/// The bad values of ids of type \p t: just outside both ends, far outside, the type's extremes.
std::vector<BadValue> bad_values(DType t) {
  std::vector<BadValue> v = {{"-1", [](std::int64_t) { return std::int64_t{-1}; }},
                             {"limit", [](std::int64_t l) { return l; }},
                             {"limit + 7", [](std::int64_t l) { return l + 7; }}};
  if (t == DType::i32) {
    v.push_back({"INT32_MIN", [](std::int64_t) { return kI32Min; }});
    v.push_back({"INT32_MAX", [](std::int64_t) { return kI32Max; }});
  } else {
    v.push_back({"INT64_MIN", [](std::int64_t) { return kI64Min; }});
    v.push_back({"INT64_MAX", [](std::int64_t) { return kI64Max; }});
    // 2^32 + 1 reads row 1 if an implementation truncates ids to 32 bits.
    v.push_back({"2^32 + 1", [](std::int64_t) { return (std::int64_t{1} << 32) + 1; }});
    v.push_back({"-2^32", [](std::int64_t) { return -(std::int64_t{1} << 32); }});
  }
  return v;
}

/// Two bad rows r1 < r2 (r1 holds \p bad, r2 another bad value); forward and backward with and
/// without an error record, in both backward modes.
void check_bad_rows(Device device, StreamView stream, DType dtype, DType index, Bad which,
                    const BadValue& bad, std::mt19937_64& rng) {
  Problem p = small_problem(device, stream, rng);
  p.dtype = dtype;
  p.id_type = index;
  p.pos_id_type = index;
  p.dout_type = static_cast<DType>(std::uniform_int_distribution<int>(0, 2)(rng));
  p.explicit_positions = which == Bad::position || rng() % 2 == 0;
  if (which == Bad::token && rng() % 4 == 0) {  // no position table
    p.P = 0;
    p.offset = 0;
    p.explicit_positions = false;
  }
  p.randomize(rng);
  const std::int64_t n = p.B * p.T;
  const std::int64_t r1 = std::uniform_int_distribution<std::int64_t>(0, n - 2)(rng);
  const std::int64_t r2 = std::uniform_int_distribution<std::int64_t>(r1 + 1, n - 1)(rng);
  const std::int64_t limit = which == Bad::token ? p.V : p.P;
  const std::int64_t value = bad.of(limit);
  const std::int64_t second = value == -1 ? limit : -1;
  auto& target = which == Bad::token ? p.ids : p.pos_ids;
  target[static_cast<std::size_t>(r1)] = value;
  target[static_cast<std::size_t>(r2)] = second;
  const auto kind =
      which == Bad::token ? IndexOutOfRange::Kind::token : IndexOutOfRange::Kind::position;
  SCOPED_TRACE(::testing::Message()
               << "B=" << p.B << " T=" << p.T << " D=" << p.D << " V=" << p.V << " P=" << p.P
               << " bad value " << bad.name << " = " << value << " at row " << r1 << ", " << second
               << " at row " << r2 << " dout " << dtype_name(p.dout_type));

  for (int variant = 0; variant < 4; ++variant) {
    p.mode = variant % 2 ? BackwardMode::deterministic : BackwardMode::atomic;
    p.accumulate = variant < 2;
    SCOPED_TRACE(std::string(variant % 2 ? "deterministic" : "atomic") +
                 (p.accumulate ? ", accumulate" : ", overwrite"));
    // Without a record: the CPU throws before writing anything; a CUDA call zeroes the rows and
    // skips their gradients silently.
    p.upload();
    if (device.is_cpu()) {
      if (auto e = catch_as<IndexOutOfRange>([&] { p.forward(p.options()); }))
        expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
      p.expect_nothing_changed();
      if (auto e = catch_as<IndexOutOfRange>([&] { p.backward(p.options()); }))
        expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
      p.expect_nothing_changed();
    } else {
      p.forward(p.options());
      p.expect_forward_result();
      p.backward(p.options());
      p.expect_backward_result();
      expect_cuda_healthy();
    }

    // With a record: same results on both devices; the record names the first row.
    p.upload();
    ErrorMonitor monitor(device, stream);
    p.forward(p.options(monitor.get()));
    p.expect_forward_result();
    if (auto e = catch_as<IndexOutOfRange>([&] { monitor.check(stream); }))
      expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
    EXPECT_NO_THROW(monitor.check(stream)) << "check() clears the record";
    p.backward(p.options(monitor.get()));
    p.expect_backward_result();
    if (auto e = catch_as<IndexOutOfRange>([&] { monitor.check(stream); }))
      expect_row_error(*e, kind, value, r1 / p.T, r1 % p.T, limit, 2);
    if (device.is_cuda()) expect_cuda_healthy();
  }
}

template <class C>
class BadInputRows : public ::testing::Test {};
TYPED_TEST_SUITE(BadInputRows, AllCombos, ComboNames);

template <class C>
class GpuBadInputRows : public GpuTest {};
TYPED_TEST_SUITE(GpuBadInputRows, AllCombos, ComboNames);

void bad_rows(Device device, StreamView stream, DType dtype, DType index, Bad which) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const BadValue& bad : bad_values(index))
    check_bad_rows(device, stream, dtype, index, which, bad, rng);
}

TYPED_TEST(BadInputRows, TokenIdsOutOfRange) {
  bad_rows(Device::cpu(), host_stream, TypeParam::dtype, TypeParam::index, Bad::token);
}
TYPED_TEST(BadInputRows, PositionIdsOutOfRange) {
  bad_rows(Device::cpu(), host_stream, TypeParam::dtype, TypeParam::index, Bad::position);
}
TYPED_TEST(GpuBadInputRows, TokenIdsOutOfRange) {
  bad_rows(Device::cuda(0), this->stream(), TypeParam::dtype, TypeParam::index, Bad::token);
}
TYPED_TEST(GpuBadInputRows, PositionIdsOutOfRange) {
  bad_rows(Device::cuda(0), this->stream(), TypeParam::dtype, TypeParam::index, Bad::position);
}

/// A row with both a bad token id and a bad position is reported as a bad token; its
/// position is not looked at.
void bad_token_and_position_in_one_row(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  p.explicit_positions = true;
  const std::int64_t r = std::uniform_int_distribution<std::int64_t>(0, p.B * p.T - 1)(rng);
  p.ids[static_cast<std::size_t>(r)] = p.V + 3;
  p.pos_ids[static_cast<std::size_t>(r)] = -9;
  p.upload();
  ErrorMonitor monitor(device, stream);
  p.forward(p.options(monitor.get()));
  p.expect_forward_result();
  if (auto e = catch_as<IndexOutOfRange>([&] { monitor.check(stream); }))
    expect_row_error(*e, IndexOutOfRange::Kind::token, p.V + 3, r / p.T, r % p.T, p.V, 1);
}

TEST(BadInput, BadTokenAndBadPositionInOneRowReportsTheToken) {
  bad_token_and_position_in_one_row(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, BadTokenAndBadPositionInOneRowReportsTheToken) {
  bad_token_and_position_in_one_row(Device::cuda(0), stream());
}

// ---- positions from the offset: checked on the host before any launch -------------------------

/// offset + t outside [0, P) for some t: IndexOutOfRange before anything runs, even with a
/// record (which stays empty).
void check_offset_error(Problem& p, std::int64_t offset, std::int64_t value, std::int64_t t,
                        std::uint64_t count) {
  SCOPED_TRACE("offset " + std::to_string(offset) + ", T " + std::to_string(p.T) + ", P " +
               std::to_string(p.P));
  p.offset = offset;
  p.explicit_positions = false;
  p.upload();
  ErrorMonitor monitor(p.device, p.stream);
  for (ErrorRecord* rec : {static_cast<ErrorRecord*>(nullptr), monitor.get()}) {
    for (int op = 0; op < 2; ++op) {
      auto e = catch_as<IndexOutOfRange>([&] {
        if (op == 0) {
          p.forward(p.options(rec));
        } else {
          p.backward(p.options(rec));
        }
      });
      if (e) {
        EXPECT_EQ(e->kind(), IndexOutOfRange::Kind::position);
        EXPECT_EQ(e->value(), value);
        EXPECT_EQ(e->time(), t);
        EXPECT_EQ(e->limit(), p.P);
        EXPECT_EQ(e->count(), count);
        expect_message_has(
            *e, {"position " + std::to_string(value), "position_offset " + std::to_string(offset),
                 "t " + std::to_string(t), range(p.P)});
      }
      p.expect_nothing_changed();
    }
  }
  EXPECT_NO_THROW(monitor.check(p.stream)) << "a host-side rejection records nothing";
  if (p.device.is_cuda()) expect_cuda_healthy();
}

void offset_errors(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  const auto B = static_cast<std::uint64_t>(p.B);
  // One step too far: offset + T = P + 1.
  check_offset_error(p, p.P - p.T + 1, p.P, p.T - 1, B);
  // Far past the end, and at the end of int64.
  check_offset_error(p, p.P + 100, p.P + 100, 0, B * static_cast<std::uint64_t>(p.T));
  check_offset_error(p, kI64Max, kI64Max, 0, B * static_cast<std::uint64_t>(p.T));
  // Negative: the first |offset| steps are before the table.
  check_offset_error(p, -2, -2, 0, B * 2);
}

/// position_offset = INT64_MIN: every step is before the table (the count must not come from
/// negating the offset, which overflows).
void offset_int64_min(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  check_offset_error(p, kI64Min, kI64Min, 0, static_cast<std::uint64_t>(p.B * p.T));
}

TEST(BadInput, PositionOffsetOutsideContextIsRejectedBeforeLaunch) {
  offset_errors(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, PositionOffsetOutsideContextIsRejectedBeforeLaunch) {
  offset_errors(Device::cuda(0), stream());
}
TEST(BadInput, PositionOffsetInt64MinIsRejectedWithTheRightCount) {
  offset_int64_min(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, PositionOffsetInt64MinIsRejectedWithTheRightCount) {
  offset_int64_min(Device::cuda(0), stream());
}

/// T > Tctx (offset 0): positions P .. T-1 are past the table; rejected before any launch.
void sequence_longer_than_context(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  p.P = p.T - 2;  // T > P
  p.randomize(rng);
  check_offset_error(p, 0, p.P, p.P, static_cast<std::uint64_t>(p.B * 2));

  // The module raises it at the call (nothing is enqueued), and stays usable.
  EmbeddingConfig c;
  c.vocab_size = p.V;
  c.dim = p.D;
  c.context_length = p.P;
  c.device = device;
  Embedding m(c, stream);
  Guarded out(DType::f32, Shape{p.B, p.T, p.D}, device, stream, rng());
  Guarded ids(DType::i64, Shape{p.B, p.T}, device, stream, rng());
  ids.write_ids(p.ids);
  if (auto e = catch_as<IndexOutOfRange>([&] { m.forward(ids.view(), out.view()); })) {
    EXPECT_EQ(e->value(), p.P);
    expect_message_has(*e, {"position " + std::to_string(p.P), range(p.P)});
  }
  EXPECT_TRUE(out.unchanged("out"));
  EXPECT_NO_THROW(m.synchronize());
  for (float x : m.token_table_to_host()) ASSERT_EQ(x, 0.0f);
}

TEST(BadInput, SequenceLongerThanContextIsRejected) {
  sequence_longer_than_context(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, SequenceLongerThanContextIsRejected) {
  sequence_longer_than_context(Device::cuda(0), stream());
}

// ---- the module after an out-of-range error --------------------------------------------------

void module_usable_after_error(Device device, StreamView stream) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Problem p = small_problem(device, stream, rng);
  p.dtype = static_cast<DType>(std::uniform_int_distribution<int>(0, 2)(rng));
  std::fill(p.gtok.begin(), p.gtok.end(), 0.0f);  // the module's gradients start at zero
  std::fill(p.gpos.begin(), p.gpos.end(), 0.0f);
  EmbeddingConfig c;
  c.vocab_size = p.V;
  c.dim = p.D;
  c.context_length = p.P;
  c.dtype = p.dtype;
  c.device = device;
  Embedding m(c, stream);
  const auto tok_bytes = encode_floats(p.dtype, p.tok), pos_bytes = encode_floats(p.dtype, p.pos);
  m.load_token_table(tok_bytes.data(), tok_bytes.size());
  m.load_position_table(pos_bytes.data(), pos_bytes.size());
  auto module_forward = [&] {
    m.forward(p.g_ids.view(), p.g_out.view(), p.offset,
              p.explicit_positions ? p.g_pos_ids.view() : TensorView{});
  };
  auto module_backward = [&] {
    m.backward(p.g_ids.view(), p.g_dout.view(), p.offset,
               p.explicit_positions ? p.g_pos_ids.view() : TensorView{});
  };

  // A bad token id: the call returns, the error surfaces at synchronize().
  const std::int64_t r = std::uniform_int_distribution<std::int64_t>(0, p.B * p.T - 1)(rng);
  const std::vector<std::int64_t> good_ids = p.ids;
  p.ids[static_cast<std::size_t>(r)] = -p.V;
  p.upload();
  module_forward();
  if (auto e = catch_as<IndexOutOfRange>([&] { m.synchronize(); }))
    expect_row_error(*e, IndexOutOfRange::Kind::token, -p.V, r / p.T, r % p.T, p.V, 1);
  p.expect_forward_result();  // the row is zero, the others are right
  EXPECT_NO_THROW(m.synchronize()) << "the error is reported once";
  if (device.is_cuda()) expect_cuda_healthy();

  // A correct forward afterwards gives correct results and no error.
  p.ids = good_ids;
  p.upload();
  module_forward();
  EXPECT_NO_THROW(m.synchronize());
  p.expect_forward_result();

  // Backward with a bad position: the error surfaces at the next *_to_host, then the gradients
  // (without the bad row) can be read.
  p.explicit_positions = true;
  p.pos_ids[static_cast<std::size_t>(r)] = p.P + 11;
  p.upload();
  module_backward();
  if (auto e = catch_as<IndexOutOfRange>([&] { (void)m.token_grad_to_host(); }))
    expect_row_error(*e, IndexOutOfRange::Kind::position, p.P + 11, r / p.T, r % p.T, p.P, 1);
  std::vector<float> et, ep;
  p.expected_grads(et, ep);
  EXPECT_EQ(m.token_grad_to_host(), et);
  EXPECT_EQ(m.position_grad_to_host(), ep);
  // Tables untouched by all of this.
  EXPECT_EQ(encode_floats(p.dtype, m.token_table_to_host()), tok_bytes);
  EXPECT_EQ(encode_floats(p.dtype, m.position_table_to_host()), pos_bytes);
  if (device.is_cuda()) expect_cuda_healthy();
}

TEST(BadInput, ModuleStaysUsableAfterIndexOutOfRange) {
  module_usable_after_error(Device::cpu(), host_stream);
}
TEST_F(GpuBadInput, ModuleStaysUsableAfterIndexOutOfRange) {
  module_usable_after_error(Device::cuda(0), stream());
}

/// The device error record says exactly what the CPU record says for the same inputs.
TEST_F(GpuBadInput, ErrorRecordMatchesTheCpuRecord) {
  const auto seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 outer(seed);
  for (int iter = 0; iter < 24; ++iter) {
    const std::uint64_t s = outer();
    // Sizes, dtypes and the fraction of bad rows (all of them in the last iterations: every
    // thread contends for the record's lock).
    std::mt19937_64 cfg(s);
    const bool all_bad = iter >= 20;
    const std::int64_t B = all_bad ? 64 : std::uniform_int_distribution<std::int64_t>(1, 8)(cfg);
    const std::int64_t T = all_bad ? 512 : std::uniform_int_distribution<std::int64_t>(1, 64)(cfg);
    const std::int64_t D = std::uniform_int_distribution<std::int64_t>(1, 80)(cfg);
    const double bad_rate = all_bad ? 1.0 : std::uniform_real_distribution<double>(0.0, 0.1)(cfg);
    const bool explicit_positions = cfg() % 2 == 0;
    const auto dtype = static_cast<DType>(cfg() % 3);
    const DType index = cfg() % 2 ? DType::i32 : DType::i64;
    SCOPED_TRACE(::testing::Message() << "iteration " << iter << ": B=" << B << " T=" << T
                                      << " D=" << D << " bad rate " << bad_rate);
    Problem p[2];
    for (int dev = 0; dev < 2; ++dev) {
      std::mt19937_64 rng(s ^ 0x9e3779b97f4a7c15ull);
      Problem& q = p[dev];
      q.device = dev == 0 ? Device::cpu() : Device::cuda(0);
      q.stream = dev == 0 ? host_stream : stream();
      q.B = B;
      q.T = T;
      q.D = D;
      q.V = std::uniform_int_distribution<std::int64_t>(1, 300)(rng);
      q.P = explicit_positions ? std::uniform_int_distribution<std::int64_t>(1, 300)(rng) : T + 3;
      q.offset = explicit_positions ? 0 : 3;
      q.explicit_positions = explicit_positions;
      q.dtype = dtype;
      q.id_type = index;
      q.pos_id_type = index;
      q.randomize(rng);
      std::bernoulli_distribution bad(bad_rate);
      for (std::size_t i = 0; i < q.ids.size(); ++i) {
        if (bad(rng)) {
          const int which = static_cast<int>(rng() % 3);
          if (which == 0 || !explicit_positions) {
            q.ids[i] = rng() % 2 ? -1 - static_cast<std::int64_t>(rng() % 1000)
                                 : q.V + static_cast<std::int64_t>(rng() % 1000);
          } else {
            q.pos_ids[i] = rng() % 2 ? -1 : q.P + static_cast<std::int64_t>(rng() % 7);
          }
        }
      }
      q.upload();
    }
    ErrorMonitor cpu_record(Device::cpu(), host_stream), gpu_record(Device::cuda(0), stream());
    auto compare_records = [&](int calls) {
      std::optional<IndexOutOfRange> errors[2];
      for (int dev = 0; dev < 2; ++dev) {
        try {
          (dev == 0 ? cpu_record : gpu_record).check(dev == 0 ? host_stream : stream());
        } catch (const IndexOutOfRange& e) {
          errors[dev] = e;
        }
      }
      ASSERT_EQ(errors[0].has_value(), errors[1].has_value());
      if (!errors[0]) return;
      const IndexOutOfRange &c = *errors[0], &g = *errors[1];
      EXPECT_EQ(g.kind(), c.kind());
      EXPECT_EQ(g.value(), c.value());
      EXPECT_EQ(g.batch(), c.batch());
      EXPECT_EQ(g.time(), c.time());
      EXPECT_EQ(g.limit(), c.limit());
      EXPECT_EQ(g.count(), c.count());
      EXPECT_EQ(std::string(g.what()), std::string(c.what()));
      if (all_bad) {
        EXPECT_EQ(g.batch(), 0);
        EXPECT_EQ(g.time(), 0);
        EXPECT_EQ(g.count(), static_cast<std::uint64_t>(calls * B * T));
      }
    };
    for (int dev = 0; dev < 2; ++dev) {
      p[dev].forward(p[dev].options(dev == 0 ? cpu_record.get() : gpu_record.get()));
      p[dev].expect_forward_result();
    }
    EXPECT_EQ(p[1].g_out.payload(), p[0].g_out.payload());
    compare_records(1);
    // Two backward calls into one record: the count adds up, the first row stays.
    for (int call = 0; call < 2; ++call)
      for (int dev = 0; dev < 2; ++dev)
        p[dev].backward(p[dev].options(dev == 0 ? cpu_record.get() : gpu_record.get()));
    EXPECT_TRUE(p[1].g_gtok.guards_intact("grad_token"));
    EXPECT_EQ(p[1].g_gtok.floats(), p[0].g_gtok.floats());
    EXPECT_EQ(p[1].g_gpos.floats(), p[0].g_gpos.floats());
    compare_records(2);
    expect_cuda_healthy();
  }
}

}  // namespace
}  // namespace tokemb::test
