// torch.save checkpoints (.pth / .pt / pytorch_model.bin, the zip format of PyTorch >= 1.6): a zero-copy reader
// that never executes the pickle, and a writer whose files torch.load reads.
//
// Reading: the zip (STORED entries; zip64 records honoured) is memory-mapped; <archive>/data.pkl is parsed by a
// restricted unpickler that accepts only what a state dict is made of (OrderedDict, _rebuild_tensor_v2 and the
// typed storage classes; see src/io/pth_pickle.h) and refuses every other global (os.system, ...) with
// an error naming it. The archive folder inside the zip ("archive/", or the file stem for old writers) is found
// from data.pkl's location. Each tensor is a view (storage offset / size / stride applied with as_strided) of
// the mapped <archive>/data/<key> entry; tensors that share a storage share memory, like torch.load.
// A top-level dict without tensors whose "state_dict", "model" or "module" entry is a dict of tensors is read
// through that entry (one level only). Non-tensor values in the state dict (e.g. an int "epoch") are ignored.
// Not supported: compressed zip entries, the pre-1.6 non-zip format, big-endian archives.
//
// Thread safety: const methods are safe to call concurrently; returned tensors keep the mapping alive.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {

class MappedFile;

// One tensor of a .pth file as described by its pickle, with its storage located in the file.
struct PthTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
  int64_t storage_offset = 0;      // in elements
  std::string storage_key;         // <archive>/data/<storage_key>
  uint64_t storage_file_offset = 0;  // file offset of the storage's first byte
  uint64_t storage_numel = 0;
};

class PthReader : public TensorStore {
 public:
  // NotFound/IOError for the file; Corruption for a malformed zip/pickle or a tensor whose view does not fit
  // its storage entry; NotSupported for refused globals/opcodes, compressed entries or the legacy format.
  // Every message names `path` (and the tensor or global where one is involved).
  static StatusOr<std::shared_ptr<PthReader>> Open(const std::string& path);

  const std::string& path() const override { return path_; }
  std::vector<std::string> Keys() const override;
  bool Contains(const std::string& key) const override { return index_.count(key) > 0; }
  StatusOr<TensorMeta> Meta(const std::string& key) const override;
  // Zero-copy, read-only view (clone() before writing); copied only when the entry is misaligned for the dtype.
  StatusOr<at::Tensor> Get(const std::string& key) const override;
  void Release(const std::string& key) const override;

  // Tensors in pickle order.
  const std::vector<PthTensorInfo>& tensors() const { return tensors_; }
  // Folder prefix of the entries inside the zip, e.g. "archive/".
  const std::string& archive_prefix() const { return prefix_; }
  // "state_dict"/"model"/"module" when the tensors were found one level down, else empty.
  const std::string& nested_under() const { return nested_under_; }

 private:
  PthReader() = default;
  std::string path_;
  std::string prefix_;
  std::string nested_under_;
  std::shared_ptr<MappedFile> file_;
  std::vector<PthTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

struct PthWriteOptions {
  // Folder name inside the zip (torch.save uses "archive"; older versions used the file stem).
  std::string archive_name = "archive";
  // Write zip64 records even for small files (tests of the zip64 paths). Default false: zip64 only where needed.
  bool force_zip64 = false;
};

// Writes `tensors` (unique non-empty names, any device; copied to CPU contiguous) as a torch.save-compatible
// zip: protocol-2 data.pkl holding an OrderedDict of _rebuild_tensor_v2 calls, one STORED data/<i> entry per
// tensor aligned to 64 bytes, "byteorder" ("little") and "version" ("3"). Written to `path + ".partial"` and
// renamed, so no file appears under `path` on failure. InvalidArgument for bad names, NotSupported for dtypes
// without a storage class, IOError naming the path.
Status WritePth(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                const PthWriteOptions& options = {});

}  // namespace liveavatar::io
