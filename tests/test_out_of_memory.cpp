// Out of memory (issue 6): a host or device allocation that fails raises OutOfMemory, leaks
// nothing, and (on a device) leaves the CUDA context usable.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/bad_input_helpers.hpp"

namespace tokemb::test {
namespace {

// ---- out of memory ---------------------------------------------------------------------------
// Under AddressSanitizer these need ASAN_OPTIONS=allocator_may_return_null=1 (scripts/
// ci-sanitize.sh sets it): by default ASan reports a 2^62-byte request as an error instead of
// returning null as the system allocator does. LeakSanitizer then checks that nothing leaked.

TEST(BadInput, HostOutOfMemoryIsTypedAndLeaksNothing) {
  const std::int64_t n = std::int64_t{1} << 60;  // 2^62 bytes of f32
  expect_throw_with<OutOfMemory>([&] { Buffer b(DType::f32, Shape{n}, Device::cpu()); },
                                 {"Buffer", std::to_string(n * 4), "failed"});
  // The module's position table cannot be allocated after its token table was: the token table
  // is released (LeakSanitizer checks it in the sanitizer build).
  EmbeddingConfig c;
  c.vocab_size = 4096;
  c.dim = 1024;
  c.context_length = std::int64_t{1} << 50;  // 2^60 elements
  expect_throw_with<OutOfMemory>([&] { Embedding m(c, host_stream); },
                                 {std::to_string((std::int64_t{1} << 60) * 4)});
  Buffer ok(DType::f32, Shape{1024}, Device::cpu());
  EXPECT_NE(ok.data(), nullptr);
}

TEST_F(GpuBadInput, DeviceOutOfMemoryIsTypedLeaksNothingAndTheContextStaysUsable) {
  synchronize(stream());
  const std::size_t free_before = cuda_free_bytes();
  const std::int64_t n = std::int64_t{1} << 50;  // 4 PiB of f32
  expect_throw_with<OutOfMemory>([&] { Buffer b(DType::f32, Shape{n}, Device::cuda(0)); },
                                 {"cudaMalloc", std::to_string(n * 4), "out of memory"});
  // A module whose 64 MiB token table is allocated but whose position table is not.
  EmbeddingConfig c;
  c.vocab_size = 16384;
  c.dim = 1024;
  c.context_length = std::int64_t{1} << 40;
  c.device = Device::cuda(0);
  expect_throw_with<OutOfMemory>([&] { Embedding m(c, stream()); }, {"out of memory"});
  expect_cuda_healthy();
  const std::size_t free_after = cuda_free_bytes();
  EXPECT_GE(free_after + (std::size_t{32} << 20), free_before)
      << "device memory went from " << free_before << " to " << free_after << " bytes free";
  // The context still works: a correct forward gives the right answer.
  std::mt19937_64 rng(fresh_seed());
  Problem p = small_problem(Device::cuda(0), stream(), rng);
  p.upload();
  p.forward(p.options());
  p.expect_forward_result();
  expect_cuda_healthy();
}

}  // namespace
}  // namespace tokemb::test
