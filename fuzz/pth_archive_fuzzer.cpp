// libFuzzer target: the pure part of PthReader::Open on an arbitrary file image: zip central directory, the
// archive's data.pkl through the restricted unpickler, and each storage entry's bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/pth_pickle.h"
#include "liveavatar/io/zip_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace liveavatar::io;
  auto zip = ZipArchive::Parse(data, size, "fuzz");
  if (!zip.ok()) return 0;
  for (const ZipEntry& e : zip.value().entries()) {
    if (e.data_offset > size || e.compressed_size > size - e.data_offset) std::abort();
    auto p = zip.value().Data(e);
    if (!p.ok()) continue;
    // Touch the first and last byte so ASan sees any out-of-range view.
    if (e.size > 0) {
      volatile uint8_t a = p.value()[0], b = p.value()[e.size - 1];
      (void)a;
      (void)b;
    }
    if (e.name.size() >= 8 && e.name.compare(e.name.size() - 8, 8, "data.pkl") == 0) {
      auto sd = internal::ParsePickleStateDict(p.value(), static_cast<size_t>(e.size), "fuzz");
      if (!sd.ok()) continue;
      const std::string prefix = e.name.substr(0, e.name.size() - 8);
      for (const auto& t : sd.value().tensors) {
        const ZipEntry* s = zip.value().Find(prefix + "data/" + t.storage_key);
        if (s != nullptr && s->data_offset + s->size > size) std::abort();
      }
    }
  }
  return 0;
}
