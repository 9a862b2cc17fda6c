#include "liveavatar/dist/flat_param.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include <ATen/ATen.h>

#include "liveavatar/models/fp8.h"
#include "liveavatar/models/lora.h"

namespace liveavatar::dist {

namespace {

int64_t AlignUp(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

}  // namespace

FlatLayout MakeFlatLayout(const std::vector<models::WeightSpec>& specs,
                          const std::function<c10::ScalarType(const std::string& key)>& dtype_of, int group_size,
                          const std::function<bool(const std::string& key)>& fp8_of) {
  TORCH_CHECK(group_size >= 1, "MakeFlatLayout: group_size must be >= 1, got ", group_size);
  FlatLayout layout;
  layout.group_size = group_size;
  int64_t cursor = 0;
  for (const auto& spec : specs) {
    FlatParam p;
    p.key = spec.key;
    p.shape = spec.shape;
    p.value_dtype = dtype_of(spec.key);
    TORCH_CHECK(c10::isFloatingType(p.value_dtype), "MakeFlatLayout: ", spec.key, " has non-floating dtype ",
                p.value_dtype);
    p.fp8 = fp8_of && fp8_of(spec.key);
    p.dtype = p.fp8 ? c10::kByte : p.value_dtype;
    p.numel = 1;
    for (int64_t d : spec.shape) p.numel *= d;
    TORCH_CHECK(p.numel > 0, "MakeFlatLayout: ", spec.key, " has no elements");
    p.nbytes = p.numel * static_cast<int64_t>(c10::elementSize(p.dtype));
    p.offset = AlignUp(cursor, kFlatParamAlignment);
    cursor = p.offset + p.nbytes;
    layout.param_bytes += p.nbytes;
    layout.params.push_back(std::move(p));
  }
  layout.used_bytes = cursor;
  const int64_t per_rank = (cursor + group_size - 1) / group_size;
  layout.shard_bytes = std::max(AlignUp(per_rank, kFlatParamAlignment), kFlatParamAlignment);
  layout.padded_bytes = layout.shard_bytes * group_size;
  return layout;
}

bool HasFp8(const FlatLayout& layout) {
  return std::any_of(layout.params.begin(), layout.params.end(), [](const FlatParam& p) { return p.fp8; });
}

StatusOr<SliceLora> ResolveSliceLora(std::shared_ptr<io::TensorStore> lora,
                                     const std::vector<models::WeightSpec>& specs, double alpha, int rank,
                                     const std::vector<std::string>& targets) {
  if (lora == nullptr) return Status::InvalidArgument("ResolveSliceLora: no LoRA store");
  std::map<std::string, std::vector<int64_t>> base_shapes;
  for (const auto& s : specs) base_shapes[s.key] = s.shape;
  LA_ASSIGN_OR_RETURN(models::LoraMatch match, models::ResolveLora(*lora, base_shapes, rank, targets));
  SliceLora out;
  out.scale = alpha / static_cast<double>(rank);
  for (const auto& [module, keys] : match.pairs) out.pairs[module + ".weight"] = {keys.first, keys.second};
  out.store = std::move(lora);
  return out;
}

StatusOr<SliceLora> OpenSliceLora(const std::string& lora_path, std::optional<double> alpha, std::optional<int> rank,
                                  const std::vector<models::WeightSpec>& specs) {
  LA_ASSIGN_OR_RETURN(models::LoraTrainingConfig params, models::ResolveLoraParams(lora_path, alpha, rank));
  LA_ASSIGN_OR_RETURN(auto store, io::OpenTensorStore(lora_path));
  return ResolveSliceLora(std::move(store), specs, params.alpha, params.rank, params.targets);
}

StatusOr<at::Tensor> ConvertRange(const io::TensorStore& store, const FlatParam& param, int64_t begin, int64_t end,
                                  const SliceLora* lora, int64_t* bytes_read, int64_t* lora_bytes_read) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= param.numel, "ConvertRange: bad range [", begin, ", ", end,
              ") of ", param.key, " (", param.numel, " elements)");
  LA_ASSIGN_OR_RETURN(at::Tensor stored, store.Get(param.key));
  if (stored.sizes().vec() != param.shape) {
    return Status::InvalidArgument(store.path() + ": " + param.key + " has shape " +
                                   models::ShapeString(stored.sizes()) + ", expected " + models::ShapeString(param.shape));
  }
  if (!c10::isFloatingType(stored.scalar_type())) {
    return Status::InvalidArgument(store.path() + ": " + param.key + " has non-floating dtype " +
                                   std::string(c10::toString(stored.scalar_type())));
  }
  if (!stored.is_contiguous()) stored = stored.contiguous();  // only memory stores can hand out strided tensors
  const int64_t n = end - begin;
  const at::Tensor range = stored.view({-1}).narrow(0, begin, n);
  if (bytes_read != nullptr) *bytes_read += n * static_cast<int64_t>(stored.element_size());
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(param.value_dtype));
  const SliceLora::Pair* pair = nullptr;
  if (lora != nullptr) {
    auto it = lora->pairs.find(param.key);
    if (it != lora->pairs.end()) pair = &it->second;
  }
  if (pair == nullptr || n == 0) {
    out.copy_(range);
    return out;
  }
  // W[r0:r1] += scale * B[r0:r1] @ A for the rows the range touches (MergeLora merges in fp32 the same way).
  LA_ASSIGN_OR_RETURN(at::Tensor a, lora->store->Get(pair->key_a));
  LA_ASSIGN_OR_RETURN(at::Tensor b, lora->store->Get(pair->key_b));
  const int64_t cols = param.shape[1];
  const int64_t r0 = begin / cols;
  const int64_t r1 = (end + cols - 1) / cols;
  const at::Tensor b_rows = b.narrow(0, r0, r1 - r0);
  if (lora_bytes_read != nullptr) {
    *lora_bytes_read += a.numel() * static_cast<int64_t>(a.element_size()) +
                        b_rows.numel() * static_cast<int64_t>(b.element_size());
  }
  const at::Tensor delta = at::matmul(b_rows.to(at::kFloat), a.to(at::kFloat)) * lora->scale;
  out.copy_(range.to(at::kFloat) + delta.reshape({-1}).narrow(0, begin - r0 * cols, n));
  return out;
}

StatusOr<std::vector<ShardPiece>> ReadShard(const FlatLayout& layout, int rank, const io::TensorStore& store,
                                            const SliceLora* lora, int64_t* bytes_read, int64_t* lora_bytes_read) {
  TORCH_CHECK(rank >= 0 && rank < layout.group_size, "ReadShard: rank ", rank, " outside the group of ",
              layout.group_size);
  std::vector<ShardPiece> pieces;
  const int64_t s0 = layout.ShardBegin(rank);
  const int64_t s1 = s0 + layout.shard_bytes;
  for (const auto& p : layout.params) {
    const int64_t lo = std::max(p.offset, s0);
    const int64_t hi = std::min(p.offset + p.nbytes, s1);
    if (lo >= hi) continue;
    const int64_t es = static_cast<int64_t>(c10::elementSize(p.dtype));
    ShardPiece piece;
    piece.param = &p;
    piece.shard_offset = lo - s0;
    LA_ASSIGN_OR_RETURN(piece.values, ConvertRange(store, p, (lo - p.offset) / es, (hi - p.offset) / es, lora,
                                                   bytes_read, lora_bytes_read));
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

at::Tensor Fp8AbsMaxOfPieces(const FlatLayout& layout, const std::vector<ShardPiece>& pieces, int64_t extra) {
  std::map<const FlatParam*, int64_t> index;
  for (const auto& p : layout.params) {
    if (p.fp8) index.emplace(&p, static_cast<int64_t>(index.size()));
  }
  at::Tensor amax = at::zeros({static_cast<int64_t>(index.size()) + extra}, at::kFloat);
  float* a = amax.data_ptr<float>();
  for (const auto& piece : pieces) {
    auto it = index.find(piece.param);
    if (it == index.end()) continue;
    float m = models::Fp8AbsMax(piece.values);
    // NaN becomes +inf: a max all-reduce may drop a NaN (std::max / fmaxf), never an inf.
    if (std::isnan(m)) m = std::numeric_limits<float>::infinity();
    if (m > a[it->second]) a[it->second] = m;
  }
  return amax;
}

Status WriteShard(const FlatLayout& layout, const std::vector<ShardPiece>& pieces, const Fp8Scales& scales,
                  const at::Tensor& shard) {
  TORCH_CHECK(shard.scalar_type() == at::kByte && shard.device().is_cpu() && shard.is_contiguous() &&
                  shard.numel() == layout.shard_bytes,
              "WriteShard: shard must be a contiguous CPU uint8 tensor of ", layout.shard_bytes, " bytes");
  shard.zero_();
  for (const auto& piece : pieces) {
    const FlatParam& p = *piece.param;
    const int64_t n = piece.values.numel();
    if (!p.fp8) {
      shard.narrow(0, piece.shard_offset, n * static_cast<int64_t>(c10::elementSize(p.dtype)))
          .view(p.dtype)
          .copy_(piece.values);
      continue;
    }
    auto it = scales.find(p.key);
    if (it == scales.end()) return Status::InvalidArgument("FP8 slice: no scale for " + p.key);
    shard.narrow(0, piece.shard_offset, n).copy_(models::EncodeFp8Scaled(piece.values, it->second));
  }
  return Status::Ok();
}

Status FillShard(const FlatLayout& layout, int rank, const io::TensorStore& store, const SliceLora* lora,
                 const at::Tensor& shard, int64_t* bytes_read, int64_t* lora_bytes_read, const Fp8Scales& scales) {
  LA_ASSIGN_OR_RETURN(std::vector<ShardPiece> pieces,
                      ReadShard(layout, rank, store, lora, bytes_read, lora_bytes_read));
  return WriteShard(layout, pieces, scales, shard);
}

models::WeightMap ViewParams(const FlatLayout& layout, const at::Tensor& flat) {
  TORCH_CHECK(flat.scalar_type() == at::kByte && flat.dim() == 1 && flat.is_contiguous() &&
                  flat.numel() == layout.padded_bytes,
              "ViewParams: flat must be a contiguous uint8 tensor of ", layout.padded_bytes, " bytes");
  models::WeightMap views;
  for (const auto& p : layout.params) {
    views[p.key] = flat.narrow(0, p.offset, p.nbytes).view(p.dtype).view(p.shape);
  }
  return views;
}

}  // namespace liveavatar::dist
