// Argument checks shared by the CPU and CUDA bindings of mint::adamw_ (device-independent).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace mint {

// The written tensors are updated in parallel: two of them sharing memory would race. An optimizer passes
// the same tensors every step, so the spans (in list order) of the last call that passed are kept per
// thread: an identical list is accepted after one O(n) comparison instead of a sort of every span.
inline void check_no_overlap(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs) {
  struct Span {
    uintptr_t begin, end;
    const char* name;
    int64_t index;
  };
  std::vector<std::pair<uintptr_t, uintptr_t>> current;
  current.reserve(params.size() + exp_avgs.size() + exp_avg_sqs.size());
  const std::pair<at::TensorList, const char*> lists[] = {
      {params, "params"}, {exp_avgs, "exp_avgs"}, {exp_avg_sqs, "exp_avg_sqs"}};
  for (const auto& [list, name] : lists) {
    for (size_t i = 0; i < list.size(); ++i) {
      const at::Tensor& t = list[i];
      const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
      current.emplace_back(begin, t.numel() == 0 ? begin : begin + static_cast<uintptr_t>(t.nbytes()));
    }
  }
  thread_local std::vector<std::pair<uintptr_t, uintptr_t>> last_passed;
  if (current == last_passed) return;

  std::vector<Span> spans;
  size_t k = 0;
  for (const auto& [list, name] : lists) {
    for (size_t i = 0; i < list.size(); ++i, ++k) {
      if (current[k].first == current[k].second) continue;  // empty
      spans.push_back({current[k].first, current[k].second, name, static_cast<int64_t>(i)});
    }
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t j = 1; j < spans.size(); ++j) {
    const Span& a = spans[j - 1];
    const Span& b = spans[j];
    TORCH_CHECK(b.begin >= a.end, "mint.adamw_: ", a.name, "[", a.index, "] and ", b.name, "[", b.index,
                "] share memory; every parameter and moment tensor must be distinct");
  }
  last_passed = std::move(current);
}

}  // namespace mint
