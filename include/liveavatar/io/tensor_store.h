// TensorStore: read-only, name-addressed access to the tensors of a checkpoint, whatever its file format
// (one .safetensors, a sharded *.safetensors.index.json, a torch.save .pth/.bin zip, or memory).
//
// Tensors returned by Get() are CPU tensors that may alias a read-only file mapping (zero-copy): do not write
// into them; clone() first. They keep their backing mapping alive on their own, so they may outlive the store.
// Thread safety: const methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/dtype.h"

namespace liveavatar::io {

struct TensorMeta {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  int64_t numel() const;
  uint64_t nbytes() const { return static_cast<uint64_t>(numel()) * DTypeSize(dtype); }
};

class TensorStore {
 public:
  virtual ~TensorStore() = default;
  // The file or directory the tensors come from; used in error messages.
  virtual const std::string& path() const = 0;
  // All tensor names, sorted.
  virtual std::vector<std::string> Keys() const = 0;
  virtual bool Contains(const std::string& key) const = 0;
  // NotFound naming the key and path() when absent.
  virtual StatusOr<TensorMeta> Meta(const std::string& key) const = 0;
  virtual StatusOr<at::Tensor> Get(const std::string& key) const = 0;
  // Says that the caller copied `key`'s bytes and no longer needs them resident: file-backed stores drop the
  // process's mapped pages of the tensor (the page cache keeps them), so a streaming load's RSS holds one tensor
  // of the file at a time. Views obtained from Get() remain valid. No-op for memory stores.
  virtual void Release(const std::string& key) const { (void)key; }
};

// Process-wide count of tensor-data bytes that file-backed stores handed out through Get() (headers, Meta() and
// Keys() do not count). Lets tests prove that a check ran from headers alone.
uint64_t TensorDataBytesRequested();
namespace internal {
void CountTensorDataRequest(uint64_t bytes);
}  // namespace internal

// Opens by file type: *.safetensors, *.safetensors.index.json (sharded), *.pth / *.pt / *.bin (torch.save zip).
// Every header is validated before use; errors name the file (and tensor).
StatusOr<std::shared_ptr<TensorStore>> OpenTensorStore(const std::string& path);

// A store over tensors already in memory (tests, make-tiny, converted weights). `name` plays the role of path().
std::shared_ptr<TensorStore> MakeMemoryStore(std::map<std::string, at::Tensor> tensors, std::string name);

}  // namespace liveavatar::io
