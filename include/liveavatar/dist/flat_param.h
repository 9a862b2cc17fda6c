// Flat parameter units for FSDP-style sharding (the building blocks of dist::ShardManager, shard_manager.h).
//
// A unit (one DiT block, or the non-block "root" parameters) is laid out in ONE byte buffer: every parameter
// keeps its own final dtype (a bf16 model still has fp32 islands such as `.modulation`), starts at a byte offset
// that is a multiple of kFlatParamAlignment, and the buffer is padded so that it splits into `group_size` equal,
// aligned slices. Rank r owns bytes [r * shard_bytes, (r + 1) * shard_bytes). A parameter becomes a tensor by
// viewing its byte range as its dtype and shape (ViewParams), so an all-gathered unit needs no copies.
//
// Slices are filled straight from a checkpoint (FillShard): for every parameter overlapping the slice, only the
// overlapping element range of the stored tensor is read (io::TensorStore tensors are zero-copy file mappings,
// so only those pages are touched), converted in fp32, LoRA-merged for exactly the covered rows, and written in
// the final dtype. No full-size temporary of a unit appears.
//
// FP8 (--fp8): a parameter marked FP8 is stored as per-tensor scaled e4m3fn codes (models/fp8.h): dtype kByte,
// one byte per element, value_dtype the model dtype its values are rounded to before quantisation (the reference
// quantises the bf16 model after the LoRA merge) and dequantised into. A per-tensor scale needs the tensor's
// amax over every rank that holds part of it, so filling is two steps: ReadShard() converts the slice's ranges
// (values in value_dtype), Fp8AbsMaxOfPieces() gives this rank's amax per FP8 parameter, the caller takes the max
// over the group (Communicator::AllReduceMax) and turns it into scales (models::Fp8Scale), and WriteShard()
// encodes with them. The codes equal models::QuantizeFp8PerTensor of the whole tensor.
//
// Thread safety: the functions are pure apart from reading the store (TensorStore const methods are thread-safe).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::dist {

// Byte alignment of every parameter and of every rank's slice (the CUDA caching allocator's granularity; a
// multiple of every element size, so byte views as any dtype are legal).
constexpr int64_t kFlatParamAlignment = 256;

struct FlatParam {
  std::string key;             // checkpoint key
  std::vector<int64_t> shape;  // checkpoint shape
  c10::ScalarType dtype = c10::kFloat;  // dtype of the stored bytes (kByte for FP8 codes)
  c10::ScalarType value_dtype = c10::kFloat;  // dtype inside the model (== dtype unless fp8)
  bool fp8 = false;    // stored as per-tensor scaled e4m3fn codes
  int64_t offset = 0;  // byte offset in the unit (multiple of kFlatParamAlignment)
  int64_t numel = 0;
  int64_t nbytes = 0;  // numel * element size
};

struct FlatLayout {
  std::vector<FlatParam> params;  // in the order given to MakeFlatLayout
  int group_size = 1;
  int64_t used_bytes = 0;    // end of the last parameter (before padding)
  int64_t param_bytes = 0;   // sum of nbytes (no alignment gaps, no padding)
  int64_t padded_bytes = 0;  // group_size * shard_bytes >= used_bytes
  int64_t shard_bytes = 0;   // one rank's slice, a multiple of kFlatParamAlignment

  int64_t ShardBegin(int rank) const { return rank * shard_bytes; }
};

// Lays `specs` out in order. Each parameter's model dtype is `dtype_of(key)`; keys for which `fp8_of` (when
// given) is true are stored as FP8 codes. REQUIRES group_size >= 1. Throws c10::Error for a spec without elements
// or with a non-floating dtype (a bug in the caller).
FlatLayout MakeFlatLayout(const std::vector<models::WeightSpec>& specs,
                          const std::function<c10::ScalarType(const std::string& key)>& dtype_of, int group_size,
                          const std::function<bool(const std::string& key)>& fp8_of = {});

// Whether the layout holds FP8 parameters.
bool HasFp8(const FlatLayout& layout);

// Per-tensor FP8 scales s (models::Fp8Scale) by checkpoint key.
using Fp8Scales = std::map<std::string, float>;

// A LoRA (PEFT layout, see models/lora.h) resolved against a list of base weights: for every adapted
// "<module>.weight", the keys of its A [r, in] and B [out, r] in `store`, and the scale alpha / r.
struct SliceLora {
  std::shared_ptr<io::TensorStore> store;
  double scale = 0;
  struct Pair {
    std::string key_a, key_b;
  };
  std::map<std::string, Pair> pairs;  // base weight key -> its A/B keys
};

// Resolves every key of `lora` against `specs` (the full model's weight list) with MergeLora's rules and errors:
// InvalidArgument naming lora->path() and listing every key that is not a lora_A/lora_B weight of a targeted
// module with a base weight, unpaired A/B tensors, and rank/shape mismatches.
StatusOr<SliceLora> ResolveSliceLora(std::shared_ptr<io::TensorStore> lora,
                                     const std::vector<models::WeightSpec>& specs, double alpha, int rank,
                                     const std::vector<std::string>& targets);

// Opens `lora_path` and resolves it like models::MergeLoraFile: training_config_lora.json beside the file gives
// the targets and the alpha/rank that `alpha`/`rank` leave unset; without it both must be given (NotFound
// naming the config path otherwise) and the targets are models::DefaultLoraTargets().
StatusOr<SliceLora> OpenSliceLora(const std::string& lora_path, std::optional<double> alpha, std::optional<int> rank,
                                  const std::vector<models::WeightSpec>& specs);

// Elements [begin, end) of the flattened stored tensor `param.key`, with the LoRA delta of the covered rows
// added in fp32 when `lora` adapts this key, converted to param.value_dtype (a new CPU tensor of end - begin
// elements; FP8 parameters are not encoded here). Adds the stored bytes of the range (and the LoRA rows read)
// to *bytes_read / *lora_bytes_read when given. Errors: NotFound / InvalidArgument naming the store path and key
// (absent, wrong shape, not floating).
StatusOr<at::Tensor> ConvertRange(const io::TensorStore& store, const FlatParam& param, int64_t begin, int64_t end,
                                  const SliceLora* lora, int64_t* bytes_read = nullptr,
                                  int64_t* lora_bytes_read = nullptr);

// The part of one parameter inside a rank's slice, converted but not yet written.
struct ShardPiece {
  const FlatParam* param = nullptr;  // points into the layout given to ReadShard
  int64_t shard_offset = 0;          // byte offset of the piece in the slice
  at::Tensor values;                 // param->value_dtype, flat
};

// Converts every parameter range overlapping rank `rank`'s slice (see ConvertRange); reads only those ranges.
StatusOr<std::vector<ShardPiece>> ReadShard(const FlatLayout& layout, int rank, const io::TensorStore& store,
                                            const SliceLora* lora, int64_t* bytes_read = nullptr,
                                            int64_t* lora_bytes_read = nullptr);

// max |value| per FP8 parameter of `layout` (in layout order) over `pieces`: a float tensor with one entry per FP8
// parameter (0 where no piece covers it; +inf when a value is NaN or infinite, so that a max all-reduce keeps it),
// plus `extra` zero entries at the end.
at::Tensor Fp8AbsMaxOfPieces(const FlatLayout& layout, const std::vector<ShardPiece>& pieces, int64_t extra = 0);

// Writes `pieces` into `shard` (CPU uint8, layout.shard_bytes, contiguous); bytes of the slice not covered by a
// parameter are zero. FP8 pieces are encoded with scales.at(key): InvalidArgument naming the key when absent.
Status WriteShard(const FlatLayout& layout, const std::vector<ShardPiece>& pieces, const Fp8Scales& scales,
                  const at::Tensor& shard);

// ReadShard + WriteShard: fills `shard` with rank `rank`'s slice of the unit. FP8 parameters need `scales`.
Status FillShard(const FlatLayout& layout, int rank, const io::TensorStore& store, const SliceLora* lora,
                 const at::Tensor& shard, int64_t* bytes_read = nullptr, int64_t* lora_bytes_read = nullptr,
                 const Fp8Scales& scales = {});

// Views of every parameter of the unit inside `flat` (uint8, layout.padded_bytes, contiguous, any device):
// key -> tensor of the parameter's dtype and shape sharing flat's storage (FP8 parameters: their uint8 codes).
models::WeightMap ViewParams(const FlatLayout& layout, const at::Tensor& flat);

}  // namespace liveavatar::dist
