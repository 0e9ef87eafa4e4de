// Fresh output tensors of the CPU ops, backed by transparent huge pages where the OS offers them.
//
// A buffer of more than 32 MB never comes from glibc's heap: each call maps fresh memory, and the first
// write to each 4 KB page takes a page fault (about 1-2 us on these VMs: 23 ms of a 90 MB output). Asking
// Linux for 2 MB pages on the buffer (MADV_HUGEPAGE, honoured when THP is in "madvise" or "always" mode)
// takes one fault per 2 MB instead. The advice is a hint: where it is refused, nothing changes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mint::cpu {

// Advises huge pages for the 2 MB-aligned part of [data, data + bytes) when it holds at least two of them.
inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end >= begin + 2 * kHuge) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

// at::empty(sizes, options), contiguous, with huge pages advised before anything touches it.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options.memory_format(at::MemoryFormat::Contiguous));
  advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

// empty_output filled with zeros.
inline at::Tensor zeros_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return empty_output(sizes, options).zero_();
}

}  // namespace mint::cpu
