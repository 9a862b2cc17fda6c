// libFuzzer target: the restricted unpickler. Any input must yield a Status or tensors whose views fit their
// storages; nothing may crash, hang or leak.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "io/pth_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto sd = liveavatar::io::internal::ParsePickleStateDict(data, size, "fuzz");
  if (!sd.ok()) return 0;
  for (const auto& t : sd.value().tensors) {
    if (t.size.size() != t.stride.size() || t.storage_offset < 0) std::abort();
    bool empty = false;
    uint64_t last = static_cast<uint64_t>(t.storage_offset);
    for (size_t k = 0; k < t.size.size(); ++k) {
      if (t.size[k] < 0 || t.stride[k] < 0) std::abort();
      if (t.size[k] == 0) empty = true;
      else last += static_cast<uint64_t>(t.size[k] - 1) * static_cast<uint64_t>(t.stride[k]);
    }
    if (!empty && last >= t.storage_numel) std::abort();
  }
  // The pickler's output for the parsed tensors parses back to the same descriptions.
  auto again = liveavatar::io::internal::PickleStateDict(sd.value().tensors);
  if (again.ok() && sd.value().nested_under.empty()) {
    auto back = liveavatar::io::internal::ParsePickleStateDict(
        reinterpret_cast<const uint8_t*>(again.value().data()), again.value().size(), "fuzz-repickle");
    if (!back.ok() || back.value().tensors.size() != sd.value().tensors.size()) std::abort();
  }
  return 0;
}
