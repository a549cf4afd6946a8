// Probes of single PTX instructions that tokemb's kernels compile to, checked against the PTX
// ISA's own definition written out on the host. They exist because of the simulator
// (scripts/sim-check.sh, GPGPU-Sim): a simulator defect shows up here as one instruction with
// one wrong value, not as a wrong gradient three kernels later. On a real GPU they confirm that
// the host definitions below are what the hardware does.
//
// bfe/bfi: nvcc compiles `2 * tile + (head ? 0 : 1)` in kernels/backward_sorted.cu's tile_reduce
// to `bfi.b64 d, tile, flag, 1, 32`. GPGPU-Sim as published computed 64-bit bfi on 32 bits with
// an int shift by 32 (undefined; on x86 it cleared bit 0), so every partial sum went to the
// "head" slot and the deterministic backward read slots no tile had written (the issue-22
// failures). Fixed by scripts/gpusim/20-bitfield-64bit.patch; this suite fails without it.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tests/test_helpers.hpp"

namespace tokemb::test {
namespace {

struct BitfieldCase {
  std::uint64_t a, b;
  std::uint32_t pos, len;
};

struct BitfieldResult {
  std::uint64_t bfi64, bfe_u64, bfe_s64;
  std::uint32_t bfi32, bfe_u32, bfe_s32;
};

// The PTX ISA's pseudo-code, bit by bit (pos and len are taken modulo 256 by the instruction).
std::uint64_t bit(std::uint64_t x, unsigned i) { return (x >> i) & 1u; }

std::uint64_t ref_bfi(std::uint64_t a, std::uint64_t b, unsigned pos, unsigned len, unsigned msb) {
  pos &= 0xff;
  len &= 0xff;
  std::uint64_t f = b;
  for (unsigned i = 0; i < len && pos + i <= msb; ++i)
    f = (f & ~(std::uint64_t{1} << (pos + i))) | (bit(a, i) << (pos + i));
  return msb == 31 ? (f & 0xffffffffu) : f;
}

std::uint64_t ref_bfe(std::uint64_t a, unsigned pos, unsigned len, unsigned msb, bool is_signed) {
  pos &= 0xff;
  len &= 0xff;
  const std::uint64_t sbit =
      is_signed && len != 0 ? bit(a, std::min(pos + len - 1, msb)) : std::uint64_t{0};
  std::uint64_t d = 0;
  for (unsigned i = 0; i <= msb; ++i)
    d |= ((i < len && pos + i <= msb) ? bit(a, pos + i) : sbit) << i;
  return d;
}

__global__ void bitfield_kernel(const BitfieldCase* in, BitfieldResult* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const BitfieldCase c = in[i];
  BitfieldResult r;
  const auto a32 = static_cast<std::uint32_t>(c.a), b32 = static_cast<std::uint32_t>(c.b);
  asm("bfi.b64 %0, %1, %2, %3, %4;" : "=l"(r.bfi64) : "l"(c.a), "l"(c.b), "r"(c.pos), "r"(c.len));
  asm("bfi.b32 %0, %1, %2, %3, %4;" : "=r"(r.bfi32) : "r"(a32), "r"(b32), "r"(c.pos), "r"(c.len));
  asm("bfe.u64 %0, %1, %2, %3;" : "=l"(r.bfe_u64) : "l"(c.a), "r"(c.pos), "r"(c.len));
  asm("bfe.s64 %0, %1, %2, %3;" : "=l"(r.bfe_s64) : "l"(c.a), "r"(c.pos), "r"(c.len));
  asm("bfe.u32 %0, %1, %2, %3;" : "=r"(r.bfe_u32) : "r"(a32), "r"(c.pos), "r"(c.len));
  asm("bfe.s32 %0, %1, %2, %3;" : "=r"(r.bfe_s32) : "r"(a32), "r"(c.pos), "r"(c.len));
  out[i] = r;
}

class GpuPtxProbe : public GpuTest {};

TEST_F(GpuPtxProbe, BitFieldInsertAndExtractMatchThePtxDefinition) {
  std::mt19937_64 rng(fresh_seed());
  std::vector<BitfieldCase> cases = {
      {5, 1, 1, 32},   // tile_reduce's 2 * tile + 1: the case the simulator got wrong
      {5, 0, 1, 32},   // ... and 2 * tile + 0
      {~0ull, 0, 0, 64},  {~0ull, 0, 60, 10},  {0x8000000000000000ull, ~0ull, 63, 1},
      {0x123456789abcdefull, 0xfedcba9876543210ull, 0, 0},  // len 0: b unchanged, bfe gives 0
      {0x123456789abcdefull, 0, 31, 2},  {0x80000000ull, 0, 31, 1},  {0x80000000ull, 0, 31, 5},
      {1, 0, 255, 255},  {3, 0, 256 + 4, 256 + 2},  // pos and len are taken modulo 256
  };
  for (int i = 0; i < 500; ++i)
    cases.push_back({rng(), rng(), static_cast<std::uint32_t>(rng() % 80),
                     static_cast<std::uint32_t>(rng() % 80)});
  const int n = static_cast<int>(cases.size());
  BitfieldCase* in = nullptr;
  BitfieldResult* out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, n * sizeof(BitfieldCase)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, n * sizeof(BitfieldResult)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(in, cases.data(), n * sizeof(BitfieldCase), cudaMemcpyHostToDevice),
            cudaSuccess);
  bitfield_kernel<<<(n + 127) / 128, 128, 0, stream().value()>>>(in, out, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<BitfieldResult> got(n);
  ASSERT_EQ(cudaStreamSynchronize(stream().value()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.data(), out, n * sizeof(BitfieldResult), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(in);
  cudaFree(out);
  for (int i = 0; i < n; ++i) {
    const BitfieldCase& c = cases[i];
    SCOPED_TRACE(::testing::Message() << "a=0x" << std::hex << c.a << " b=0x" << c.b << std::dec
                                      << " pos=" << c.pos << " len=" << c.len);
    EXPECT_EQ(got[i].bfi64, ref_bfi(c.a, c.b, c.pos, c.len, 63));
    EXPECT_EQ(got[i].bfi32, ref_bfi(c.a & 0xffffffffu, c.b & 0xffffffffu, c.pos, c.len, 31));
    EXPECT_EQ(got[i].bfe_u64, ref_bfe(c.a, c.pos, c.len, 63, false));
    EXPECT_EQ(got[i].bfe_s64, ref_bfe(c.a, c.pos, c.len, 63, true));
    EXPECT_EQ(got[i].bfe_u32, ref_bfe(c.a & 0xffffffffu, c.pos, c.len, 31, false));
    EXPECT_EQ(got[i].bfe_s32, ref_bfe(c.a & 0xffffffffu, c.pos, c.len, 31, true));
    if (HasFailure()) break;  // one case's report is enough
  }
}


// cvt with .f16: tokemb's f16 kernels do f32 arithmetic and round once with __float2half_rn,
// i.e. `cvt.rn.f16.f32`. GPGPU-Sim as published rounded that with half_float::half_cast in
// round-to-nearest-ties-away (and ignored .rz/.rm/.rp), so a sum that fell exactly halfway
// between two f16 values came out one ulp off the CPU reference (1.62353515625 gave
// 1.6240234375, not 1.623046875); its cvt.f16.f64 aborted and cvt from .f16 to f64 or an
// integer read the 16 bits as an f32. Fixed by scripts/gpusim/30-f16-rounding.patch.
struct F16Case {
  float x;        // for cvt.{rn,rz,rm,rp}.f16.f32
  double d;       // for cvt.rn.f16.f64 (one rounding, not two via f32)
  std::uint16_t h;  // for cvt.f32.f16 and cvt.f64.f16
};

struct F16Result {
  double h_to_f64;
  float h_to_f32, rn_back;  // rn_back: cvt.f32.f16 of the rn result
  std::uint16_t rn, rz, rm, rp, rn_f64;
};

enum class F16Round { rn, rz, rm, rp };

// An f16's value from its bits, exactly (IEEE binary16: 5 exponent bits, bias 15, 10 fraction
// bits, subnormals at 2^-24 steps).
double f16_value(std::uint16_t b) {
  const int e = (b >> 10) & 0x1f;
  const int f = b & 0x3ff;
  const double mag = e == 0x1f ? (f ? std::numeric_limits<double>::quiet_NaN()
                                    : std::numeric_limits<double>::infinity())
                     : e == 0 ? std::ldexp(f, -24)
                              : std::ldexp(1024 + f, e - 25);
  return (b & 0x8000) ? -mag : mag;
}

bool f16_is_nan(std::uint16_t b) { return (b & 0x7fff) > 0x7c00; }

// The IEEE 754 rounding of v to binary16 in the given mode, by search rather than by bit
// manipulation: the two f16 magnitudes around |v|, then the one the mode picks. Round to
// nearest breaks ties to the even bit pattern and overflows to inf from 65520 (= 65504 + half
// an ulp) on; the directed modes give inf or 65504 by direction. NaN gives a NaN (0x7fff).
std::uint16_t ref_to_f16(double v, F16Round mode) {
  if (std::isnan(v)) return 0x7fff;
  const bool neg = std::signbit(v);
  const double a = std::fabs(v);
  std::uint16_t lo = 0;  // the largest finite f16 magnitude <= a
  if (a >= 65504) {
    lo = 0x7bff;
  } else {
    std::uint16_t l = 0, r = 0x7bff;  // largest k in [0, 0x7bff] with f16_value(k) <= a
    while (l < r) {
      const auto m = static_cast<std::uint16_t>((l + r + 1) / 2);
      if (f16_value(m) <= a) l = m; else r = static_cast<std::uint16_t>(m - 1);
    }
    lo = l;
  }
  const auto hi = static_cast<std::uint16_t>(lo + 1);  // the next one up (0x7c00: inf)
  std::uint16_t mag = lo;
  if (std::isinf(a)) {
    mag = 0x7c00;
  } else if (f16_value(lo) != a) {
    const bool away_is_inf = hi == 0x7c00;
    switch (mode) {
      case F16Round::rz: mag = lo; break;
      case F16Round::rm: mag = neg ? hi : lo; break;
      case F16Round::rp: mag = neg ? lo : hi; break;
      case F16Round::rn:
        if (away_is_inf) {
          mag = a >= 65520 ? hi : lo;
        } else {
          const double dlo = a - f16_value(lo), dhi = f16_value(hi) - a;
          mag = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
        }
        break;
    }
  }
  return static_cast<std::uint16_t>((neg ? 0x8000 : 0) | mag);
}

__global__ void f16_cvt_kernel(const F16Case* in, F16Result* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const F16Case c = in[i];
  F16Result r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.rn) : "f"(c.x));
  asm("cvt.rz.f16.f32 %0, %1;" : "=h"(r.rz) : "f"(c.x));
  asm("cvt.rm.f16.f32 %0, %1;" : "=h"(r.rm) : "f"(c.x));
  asm("cvt.rp.f16.f32 %0, %1;" : "=h"(r.rp) : "f"(c.x));
  asm("cvt.rn.f16.f64 %0, %1;" : "=h"(r.rn_f64) : "d"(c.d));
  asm("cvt.f32.f16 %0, %1;" : "=f"(r.rn_back) : "h"(r.rn));
  asm("cvt.f32.f16 %0, %1;" : "=f"(r.h_to_f32) : "h"(c.h));
  asm("cvt.f64.f16 %0, %1;" : "=d"(r.h_to_f64) : "h"(c.h));
  out[i] = r;
}

TEST_F(GpuPtxProbe, F16ConversionsRoundAsIeeeDefines) {
  std::mt19937_64 rng(fresh_seed());
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> xs = {
      1.62353515625f,  // halfway between 1.623046875 and 1.6240234375: the tokemb failure
      0.3599853515625f,  // halfway between 0.359863 and 0.360107 (the other one seen)
      1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -(1.0f + 0x1p-11f),  // ties to the even side
      0.0f, -0.0f, 1.0f, -1.0f, 2049.0f, 2051.0f, 65504.0f, 65519.996f, 65520.0f, -65520.0f,
      65536.0f, 1e30f, std::numeric_limits<float>::max(), inf, -inf, nan, -nan,
      0x1p-24f, -0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 3 * 0x1p-25f, 0x1p-14f - 0x1p-25f,
      0x1p-14f, 0x1.ffcp-15f, 1e-45f, -1e-45f, std::numeric_limits<float>::min(),
  };
  std::uniform_int_distribution<int> exponent(127 - 27, 127 + 17);  // f16's range, and past it
  for (int i = 0; i < 600; ++i) {  // random f32 values in and around the f16 range
    const std::uint32_t bits = (static_cast<std::uint32_t>(rng() & 1) << 31) |
                               (static_cast<std::uint32_t>(exponent(rng)) << 23) |
                               static_cast<std::uint32_t>(rng() & 0x7fffff);
    float x;
    std::memcpy(&x, &bits, sizeof x);
    xs.push_back(x);
  }
  for (int i = 0; i < 600; ++i) {  // exact ties: a random finite f16 plus half its ulp
    const auto b = static_cast<std::uint16_t>(rng() % 0x7bff);
    const double lo = f16_value(b), hi = f16_value(static_cast<std::uint16_t>(b + 1));
    xs.push_back(static_cast<float>((rng() & 1 ? -1 : 1) * (lo + hi) / 2));
  }
  std::vector<F16Case> cases;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    // d: the same value, or (every other case) nudged by 2^-40 relative, which an f64 -> f16
    // rounding must see and an f64 -> f32 -> f16 double rounding would lose.
    const double d = (i & 1) ? xs[i] * (1 + ((rng() & 1) ? 0x1p-40 : -0x1p-40)) : xs[i];
    cases.push_back({xs[i], d, static_cast<std::uint16_t>(rng())});
  }
  cases[0].h = 0x0001;  // a few f16 -> f32 edge cases: subnormals, max, inf, NaN, -0
  cases[1].h = 0x03ff;
  cases[2].h = 0x7bff;
  cases[3].h = 0xfc00;
  cases[4].h = 0x7e00;
  cases[5].h = 0x8000;
  const int n = static_cast<int>(cases.size());
  F16Case* in = nullptr;
  F16Result* out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, n * sizeof(F16Case)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, n * sizeof(F16Result)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(in, cases.data(), n * sizeof(F16Case), cudaMemcpyHostToDevice),
            cudaSuccess);
  f16_cvt_kernel<<<(n + 127) / 128, 128, 0, stream().value()>>>(in, out, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<F16Result> got(n);
  ASSERT_EQ(cudaStreamSynchronize(stream().value()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.data(), out, n * sizeof(F16Result), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(in);
  cudaFree(out);
  // Bits must match exactly, except that any NaN stands for a NaN (the payload is not pinned).
  const auto same16 = [](std::uint16_t a, std::uint16_t b) {
    return a == b || (f16_is_nan(a) && f16_is_nan(b));
  };
  const auto same = [](double a, double b) {
    return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
  };
  for (int i = 0; i < n; ++i) {
    const F16Case& c = cases[i];
    const F16Result& g = got[i];
    SCOPED_TRACE(::testing::Message() << std::hexfloat << "x=" << c.x << " d=" << c.d
                                      << std::hex << " h=0x" << c.h << " got rn=0x" << g.rn
                                      << " rz=0x" << g.rz << " rm=0x" << g.rm << " rp=0x"
                                      << g.rp << " rn_f64=0x" << g.rn_f64);
    EXPECT_PRED2(same16, g.rn, ref_to_f16(c.x, F16Round::rn));
    EXPECT_PRED2(same16, g.rz, ref_to_f16(c.x, F16Round::rz));
    EXPECT_PRED2(same16, g.rm, ref_to_f16(c.x, F16Round::rm));
    EXPECT_PRED2(same16, g.rp, ref_to_f16(c.x, F16Round::rp));
    EXPECT_PRED2(same16, g.rn_f64, ref_to_f16(c.d, F16Round::rn));
    EXPECT_PRED2(same, g.rn_back, f16_value(ref_to_f16(c.x, F16Round::rn)));
    EXPECT_PRED2(same, g.h_to_f32, f16_value(c.h));
    EXPECT_PRED2(same, g.h_to_f64, f16_value(c.h));
    if (HasFailure()) break;  // one case's report is enough
  }
}

// Loads and stores at device addresses above 4 GiB. GPGPU-Sim kept only the low 32 bits of a
// ld/st address while its cudaMemcpy used all 64 (fixed by scripts/gpusim/
// 40-ld-st-64bit-addresses.patch): past 4 GiB of simulated heap (it starts at 3 GiB, so a few
// GPT-2-sized tables reach it) kernels read zeros and their stores vanished. The probe allocates
// until it holds a buffer above 2^32 (on a real GPU the first allocation already is; on the
// simulator that costs address space, not memory), then moves values through it with ld.global,
// ld.global.nc, st.global, atom.global and 16-byte vector accesses, checked from the host.
__global__ void wide_address_kernel(const std::uint32_t* in, std::uint32_t* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  std::uint32_t nc;
  asm("ld.global.nc.u32 %0, [%1];" : "=r"(nc) : "l"(in + i));
  out[i] = in[i] * 3u + nc;                              // ld.global + st.global
  atomicAdd(out + n + (i % 4), 1u);                      // atom.global
  if (i % 4 == 0 && i + 4 <= n) {                        // ld/st.global.v4
    const uint4 v = *reinterpret_cast<const uint4*>(in + i);
    *reinterpret_cast<uint4*>(out + n + 4 + i) = make_uint4(v.w, v.z, v.y, v.x);
  }
}

TEST_F(GpuPtxProbe, LoadsAndStoresAboveFourGiB) {
  constexpr std::uintptr_t kFourGiB = std::uintptr_t{1} << 32;
  constexpr std::size_t kStep = std::size_t{512} << 20;  // spacer allocations, if needed
  std::vector<void*> spacers;
  auto release = [&] {
    for (void* p : spacers) cudaFree(p);
    spacers.clear();
  };
  constexpr int n = 1024;  // a multiple of 4
  std::uint32_t *in = nullptr, *out = nullptr;
  for (int tries = 0; tries < 16; ++tries) {
    ASSERT_EQ(cudaMalloc(&in, n * sizeof(std::uint32_t)), cudaSuccess);
    if (reinterpret_cast<std::uintptr_t>(in) >= kFourGiB) break;
    spacers.push_back(in);
    in = nullptr;
    void* spacer = nullptr;
    if (cudaMalloc(&spacer, kStep) != cudaSuccess) break;  // a small GPU: test what we have
    spacers.push_back(spacer);
  }
  if (in == nullptr) {
    release();
    (void)cudaGetLastError();
    GTEST_SKIP() << "could not place a buffer above 4 GiB of device address space";
  }
  ASSERT_EQ(cudaMalloc(&out, (2 * n + 4) * sizeof(std::uint32_t)), cudaSuccess);
  std::mt19937_64 rng(fresh_seed());
  std::vector<std::uint32_t> host(n);
  for (auto& x : host) x = static_cast<std::uint32_t>(rng());
  ASSERT_EQ(cudaMemcpy(in, host.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(out, 0, (2 * n + 4) * 4), cudaSuccess);
  wide_address_kernel<<<n / 128, 128, 0, stream().value()>>>(in, out, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream().value()), cudaSuccess);
  std::vector<std::uint32_t> got(2 * n + 4);
  ASSERT_EQ(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(in);
  cudaFree(out);
  release();
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], host[i] * 4u) << "element " << i;
  for (int q = 0; q < 4; ++q) EXPECT_EQ(got[n + q], static_cast<std::uint32_t>(n / 4)) << q;
  for (int i = 0; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j)
      ASSERT_EQ(got[n + 4 + i + j], host[i + 3 - j]) << "vector element " << i + j;
}

// fma.rn.f32 / fma.rn.f64 round once. GPGPU-Sim computed a * b + c with two roundings (fixed by
// scripts/gpusim/50-fma-single-rounding.patch), so GPU init's fmaf(u, width, low) differed from
// the CPU's std::fma in the last bit (found by GpuInitFinish). c = -(a * b rounded) makes the
// difference plain: the fused result is a*b's rounding error, the twice-rounded one is 0.
__global__ void fma_kernel(const float* a, const float* b, const float* c, float* out32,
                           const double* x, const double* y, const double* z, double* out64,
                           int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(out32[i]) : "f"(a[i]), "f"(b[i]), "f"(c[i]));
  asm("fma.rn.f64 %0, %1, %2, %3;" : "=d"(out64[i]) : "d"(x[i]), "d"(y[i]), "d"(z[i]));
}

TEST_F(GpuPtxProbe, FusedMultiplyAddRoundsOnce) {
  std::mt19937_64 rng(fresh_seed());
  std::uniform_real_distribution<double> u(-2.0, 2.0);
  constexpr int n = 1024;
  std::vector<float> a(n), b(n), c(n), want32(n);
  std::vector<double> x(n), y(n), z(n), want64(n);
  for (int i = 0; i < n; ++i) {
    a[i] = static_cast<float>(u(rng));
    b[i] = static_cast<float>(u(rng));
    c[i] = i % 2 ? static_cast<float>(u(rng)) : -(a[i] * b[i]);
    x[i] = u(rng);
    y[i] = u(rng);
    z[i] = i % 2 ? u(rng) : -(x[i] * y[i]);
    want32[i] = std::fma(a[i], b[i], c[i]);
    want64[i] = std::fma(x[i], y[i], z[i]);
  }
  std::vector<void*> bufs;
  auto up = [&](const auto& v) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, v.size() * sizeof(v[0])), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * sizeof(v[0]), cudaMemcpyHostToDevice),
              cudaSuccess);
    bufs.push_back(d);
    return d;
  };
  auto* da = static_cast<float*>(up(a));
  auto* db = static_cast<float*>(up(b));
  auto* dc = static_cast<float*>(up(c));
  auto* d32 = static_cast<float*>(up(want32));
  auto* dx = static_cast<double*>(up(x));
  auto* dy = static_cast<double*>(up(y));
  auto* dz = static_cast<double*>(up(z));
  auto* d64 = static_cast<double*>(up(want64));
  fma_kernel<<<n / 128, 128, 0, stream().value()>>>(da, db, dc, d32, dx, dy, dz, d64, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream().value()), cudaSuccess);
  std::vector<float> got32(n);
  std::vector<double> got64(n);
  ASSERT_EQ(cudaMemcpy(got32.data(), d32, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got64.data(), d64, n * 8, cudaMemcpyDeviceToHost), cudaSuccess);
  for (void* p : bufs) cudaFree(p);
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(same_bits(&got32[i], &want32[i], 4))
        << "fma.rn.f32(" << a[i] << ", " << b[i] << ", " << c[i] << ") = " << got32[i]
        << ", want " << want32[i];
    ASSERT_TRUE(same_bits(&got64[i], &want64[i], 8))
        << "fma.rn.f64(" << x[i] << ", " << y[i] << ", " << z[i] << ") = " << got64[i]
        << ", want " << want64[i];
  }
}

// atom.global.add.f64 (atomicAdd on double, sm_60+: the atomic backward of f64 gradients).
// GPGPU-Sim implemented atom.add for u32, s32, u64 and f32 only and dropped the f64 add (no
// write; "type mismatch with instruction"), so every f64 gradient stayed at its starting value.
// Fixed by scripts/gpusim/60-atom-add-f64.patch. Each of n threads adds k * 2^-30 (k = i + 1)
// to one of 4 cells and returns the old value: the sums are exact in any order, and the old
// values prove each add read what it replaced.
__global__ void atomic_add_f64_kernel(double* cells, double* old, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  old[i] = atomicAdd(cells + i % 4, static_cast<double>(i + 1) * 0x1p-30);
}

TEST_F(GpuPtxProbe, AtomicAddOnF64) {
  constexpr int n = 512;
  double* cells = nullptr;
  double* old = nullptr;
  ASSERT_EQ(cudaMalloc(&cells, 4 * sizeof(double)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&old, n * sizeof(double)), cudaSuccess);
  const double start[4] = {1.0, -2.5, 0.0, 1e-300};
  ASSERT_EQ(cudaMemcpy(cells, start, sizeof(start), cudaMemcpyHostToDevice), cudaSuccess);
  atomic_add_f64_kernel<<<n / 128, 128, 0, stream().value()>>>(cells, old, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream().value()), cudaSuccess);
  double got[4];
  std::vector<double> olds(n);
  ASSERT_EQ(cudaMemcpy(got, cells, sizeof(got), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(olds.data(), old, n * sizeof(double), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(cells);
  cudaFree(old);
  for (int c = 0; c < 4; ++c) {
    double want = start[c];
    for (int i = c; i < n; i += 4) want += static_cast<double>(i + 1) * 0x1p-30;
    EXPECT_EQ(got[c], want) << "cell " << c;
    // The old values of one cell are its start and partial sums: every one is below the total
    // (the adds are positive) and at least the start.
    for (int i = c; i < n; i += 4) {
      EXPECT_GE(olds[static_cast<std::size_t>(i)], start[c]) << "thread " << i;
      EXPECT_LT(olds[static_cast<std::size_t>(i)], want) << "thread " << i;
    }
  }
}

}  // namespace
}  // namespace tokemb::test
