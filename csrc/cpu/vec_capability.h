// Include first, before any ATen header, in files that use at::vec.
//
// at::vec only uses AVX2 / AVX-512 intrinsics when CPU_CAPABILITY_AVX2 / _AVX512 is defined (torch
// defines them per kernel file). This enables the widest the compiler targets (-march, see
// CMakeLists.txt), in a namespace of our own so that no inline symbol can collide with torch's generic
// instantiations.
#pragma once

#if !defined(CPU_CAPABILITY) && !defined(CPU_CAPABILITY_AVX2) && !defined(CPU_CAPABILITY_AVX512)
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__FMA__)
#define CPU_CAPABILITY mint_avx512
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define CPU_CAPABILITY mint_avx2
#define CPU_CAPABILITY_AVX2
#endif
#endif
