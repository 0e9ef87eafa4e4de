// Argument checks shared by the CPU and CUDA bindings of mint::adamw_ (device-independent).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace mint {

// The written tensors are updated in parallel: two of them sharing memory would race.
inline void check_no_overlap(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs) {
  struct Span {
    uintptr_t begin, end;
    const char* name;
    int64_t index;
  };
  std::vector<Span> spans;
  const std::pair<at::TensorList, const char*> lists[] = {
      {params, "params"}, {exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}};
  for (const auto& [list, name] : lists) {
    for (size_t i = 0; i < list.size(); ++i) {
      const at::Tensor& t = list[i];
      if (t.numel() == 0) continue;
      const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
      spans.push_back({begin, begin + static_cast<uintptr_t>(t.nbytes()), name, static_cast<int64_t>(i)});
    }
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t k = 1; k < spans.size(); ++k) {
    const Span& a = spans[k - 1];
    const Span& b = spans[k];
    TORCH_CHECK(b.begin >= a.end, "mint.adamw_: ", a.name, "[", a.index, "] and ", b.name, "[", b.index,
                "] share memory; every parameter and moment tensor must be distinct");
  }
}

}  // namespace mint
