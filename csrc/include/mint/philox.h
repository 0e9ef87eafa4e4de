// Philox4x32-10 counter-based random numbers (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11). Torch-free so CPU and CUDA kernels share it bit for bit.
//
// mint keys every draw by key = seed (64 bit) and counter = (offset, subsequence), each 64 bit,
// laid out as the four counter words (offset lo, offset hi, subsequence lo, subsequence hi) -- the
// same layout as curand's and ATen's Philox engines, so a draw depends only on those three numbers.
#pragma once

#include <cstdint>

#ifndef MINT_HOST_DEVICE
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MINT_HOST_DEVICE __host__ __device__
#else
#define MINT_HOST_DEVICE
#endif
#endif

namespace mint {

struct PhiloxBlock {
  uint32_t x[4];
};

namespace philox_detail {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

MINT_HOST_DEVICE inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
#endif
}

}  // namespace philox_detail

// One Philox4x32 block: 10 rounds of the bijection applied to `counter` under `key`.
MINT_HOST_DEVICE inline PhiloxBlock philox4x32_10(PhiloxBlock counter, uint32_t key0, uint32_t key1) {
  using namespace philox_detail;
  uint32_t* c = counter.x;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(kMul0, c[0], &hi0);
    const uint32_t lo1 = mulhilo(kMul1, c[2], &hi1);
    const uint32_t n0 = hi1 ^ c[1] ^ key0;
    const uint32_t n2 = hi0 ^ c[3] ^ key1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The block of 128 random bits for (seed, subsequence, offset).
MINT_HOST_DEVICE inline PhiloxBlock philox_block(uint64_t seed, uint64_t subsequence, uint64_t offset) {
  PhiloxBlock counter{{static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                       static_cast<uint32_t>(subsequence), static_cast<uint32_t>(subsequence >> 32)}};
  return philox4x32_10(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A double uniform in [0, 1) with 53 random bits taken from two words.
MINT_HOST_DEVICE inline double uniform53(uint32_t a, uint32_t b) {
  const uint64_t bits = (static_cast<uint64_t>(a >> 5) << 26) | static_cast<uint64_t>(b >> 6);
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);  // 2^-53
}

// A float uniform in [0, 1) with 24 random bits.
MINT_HOST_DEVICE inline float uniform24(uint32_t a) {
  return static_cast<float>(a >> 8) * (1.0f / 16777216.0f);  // 2^-24
}

}  // namespace mint
