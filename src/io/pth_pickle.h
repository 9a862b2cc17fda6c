// Internal: the restricted unpickler behind the .pth reader, and the matching pickler behind WritePth.
//
// ParsePickleStateDict reads the data.pkl of a torch.save zip (pickle protocol 2; the protocol-4 opcodes a newer
// pickler may emit are understood too) WITHOUT executing anything: it interprets only the opcodes that build
// plain data and accepts only the globals a state dict needs (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter[_with_state] (the Parameter
// wrapper is dropped), and the typed storage classes
// torch.FloatStorage, ... as persistent-id storage types). Any other global (os.system, builtins.eval, ...) is
// refused at the GLOBAL opcode with an error naming module.attr and the origin. Tensors come out as
// descriptions (storage key, dtype, offset, size, stride), so this layer needs no LibTorch and is the fuzzing
// entry point. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "liveavatar/core/status.h"
#include "liveavatar/io/dtype.h"

namespace liveavatar::io::internal {

struct PickledTensor {
  std::string name;           // state-dict key
  std::string storage_key;    // persistent-id key: the zip entry <archive>/data/<storage_key>
  DType dtype = DType::kF32;  // from the storage class
  uint64_t storage_numel = 0;  // elements of the whole storage
  int64_t storage_offset = 0;  // in elements
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
};

struct PickledStateDict {
  std::vector<PickledTensor> tensors;  // in pickle order
  // Non-empty when the tensors came from a nested dict: the top-level key that held them ("state_dict",
  // "model" or "module").
  std::string nested_under;
};

// Parses a pickled state dict: a dict/OrderedDict of name -> tensor at the top, or (when the top level holds no
// tensors) a top-level "state_dict", "model" or "module" dict of them. Non-tensor values next to the tensors are
// skipped. Validates each tensor's view against its storage size (offset + extent <= storage numel).
// Errors (Corruption / NotSupported) name `origin` and the byte offset.
StatusOr<PickledStateDict> ParsePickleStateDict(const uint8_t* data, size_t size, const std::string& origin);

// The protocol-2 pickle torch.save writes for an OrderedDict of tensors: one _rebuild_tensor_v2 call per entry,
// storage persistent ids ('storage', torch.<Type>Storage, storage_key, 'cpu', storage_numel).
// NotSupported when a dtype has no storage class.
StatusOr<std::string> PickleStateDict(const std::vector<PickledTensor>& tensors);

// "FloatStorage" etc. for a dtype; nullptr when none.
const char* StorageClassName(DType d);

}  // namespace liveavatar::io::internal
