// libFuzzer target: ParseSafetensorsHeader on an arbitrary file image. Any input must yield a Status or a
// header whose entries all lie inside the image, sorted and non-overlapping, with consistent sizes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "liveavatar/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto h = liveavatar::io::ParseSafetensorsHeader(data, size, "fuzz");
  if (!h.ok()) return 0;
  const auto& hdr = h.value();
  if (hdr.data_offset > size) std::abort();
  uint64_t prev_end = 0;
  for (const auto& e : hdr.entries) {
    if (e.begin > e.end || e.end > size - hdr.data_offset || e.begin < prev_end) std::abort();
    if (e.end - e.begin != e.meta.nbytes()) std::abort();
    prev_end = e.end;
  }
  return 0;
}
