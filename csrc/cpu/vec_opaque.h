// An optimisation barrier for one fp32 vector of at::vec. Include after vec_capability.h.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace mint {

// x, hidden from the optimiser at this point: GCC can then neither contract it with the operation that
// consumes it (a product and a sum into one fma, skipping a rounding torch performs) nor re-read it from
// memory at every use (folding one load into each fma that uses it, which makes a loop load-bound). No
// instruction where x is in a register; the generic (no SIMD) build passes x through memory.
C10_ALWAYS_INLINE at::vec::Vectorized<float> opaque(at::vec::Vectorized<float> x) {
#if defined(CPU_CAPABILITY_AVX512)
  __m512 r = x;
  asm("" : "+v"(r));
  return at::vec::Vectorized<float>(r);
#elif defined(CPU_CAPABILITY_AVX2)
  __m256 r = x;
  asm("" : "+x"(r));
  return at::vec::Vectorized<float>(r);
#else
  asm("" : "+m"(x));
  return x;
#endif
}

}  // namespace mint
