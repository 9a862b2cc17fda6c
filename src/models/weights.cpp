#include "liveavatar/models/weights.h"

#include <set>
#include <sstream>

#include <ATen/ATen.h>

namespace liveavatar::models {

namespace {
bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool EndsWith(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
}  // namespace

std::string ShapeString(at::IntArrayRef shape) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < shape.size(); ++i) o << (i ? ", " : "") << shape[i];
  o << "]";
  return o.str();
}

std::string WeightCheckReport(const std::string& store_path, const WeightCheck& check) {
  std::ostringstream o;
  o << store_path << ": checkpoint does not match the model:";
  auto list = [&o](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    o << "\n  " << v.size() << " " << what << ":";
    for (const auto& s : v) o << "\n    " << s;
  };
  list("missing key(s)", check.missing);
  list("shape mismatch(es)", check.mismatched);
  list("unexpected key(s)", check.unexpected);
  return o.str();
}

StatusOr<WeightCheck> CheckWeights(const io::TensorStore& store, const std::vector<WeightSpec>& specs,
                                   const std::vector<std::string>& ignore_prefixes) {
  WeightCheck c;
  std::set<std::string> consumed;
  for (const auto& spec : specs) {
    consumed.insert(spec.key);
    if (!store.Contains(spec.key)) {
      if (!spec.optional) c.missing.push_back(spec.key + " " + ShapeString(spec.shape));
      continue;
    }
    LA_ASSIGN_OR_RETURN(io::TensorMeta meta, store.Meta(spec.key));
    if (meta.shape != spec.shape) {
      c.mismatched.push_back(spec.key + ": file " + ShapeString(meta.shape) + ", expected " + ShapeString(spec.shape));
      continue;
    }
    ++c.matched;
  }
  for (const auto& key : store.Keys()) {
    if (consumed.count(key)) continue;
    bool ignored = false;
    for (const auto& p : ignore_prefixes) ignored = ignored || StartsWith(key, p);
    if (!ignored) c.unexpected.push_back(key);
  }
  return c;
}

StatusOr<WeightMap> LoadWeights(const io::TensorStore& store, const std::vector<WeightSpec>& specs,
                                const LoadOptions& options) {
  LA_ASSIGN_OR_RETURN(WeightCheck check, CheckWeights(store, specs, options.ignore_prefixes));
  if (!check.ok()) return Status::Corruption(WeightCheckReport(store.path(), check));
  WeightMap out;
  for (const auto& spec : specs) {
    if (!store.Contains(spec.key)) continue;
    LA_ASSIGN_OR_RETURN(at::Tensor t, store.Get(spec.key));
    auto dtype = t.scalar_type();
    if (at::isFloatingType(dtype)) {
      if (options.dtype_of) {
        dtype = options.dtype_of(spec.key);
      } else {
        bool keep = false;
        for (const auto& s : options.keep_fp32_suffixes) keep = keep || EndsWith(spec.key, s);
        dtype = keep ? c10::kFloat : options.dtype;
      }
    }
    bool aliases_store = true;
    if (options.transform) {
      auto r = options.transform(spec.key, t);
      if (!r.ok()) return r.status().WithPrefix(store.path() + ": " + spec.key);
      if (r.value().defined()) {
        t = std::move(r).value();
        aliases_store = false;
      }
    }
    // Copy whatever may alias the store's read-only mapping; a transformed tensor is converted in place of it.
    at::Tensor w = t.to(options.device, dtype, /*non_blocking=*/false, /*copy=*/aliases_store);
    t = at::Tensor();
    store.Release(spec.key);
    if (options.check_finite && at::isFloatingType(w.scalar_type())) {
      Status finite = CheckFinite(w, store.path() + ": tensor '" + spec.key + "'");
      if (!finite.ok()) {
        return Status::Corruption(finite.message() + " (a corrupt or mis-converted checkpoint; re-download it)");
      }
    }
    out[spec.key] = std::move(w);
  }
  return out;
}

Status CheckFinite(const at::Tensor& t, const std::string& what) {
  constexpr int64_t kChunk = int64_t{1} << 22;  // bounded transient: 4 Mi flags per step
  const at::Tensor flat = t.reshape({-1});
  for (int64_t i = 0; i < flat.numel(); i += kChunk) {
    const at::Tensor part = flat.narrow(0, i, std::min(kChunk, flat.numel() - i));
    if (!at::isfinite(part).all().item<bool>()) {
      const bool nan = at::isnan(part).any().item<bool>();
      return Status::Corruption(what + " holds " + (nan ? "NaN" : "infinite") + " values");
    }
  }
  return Status::Ok();
}

const at::Tensor& W(const WeightMap& weights, const std::string& key) {
  auto it = weights.find(key);
  TORCH_CHECK(it != weights.end(), "model weight '", key, "' was not loaded (spec/model mismatch)");
  return it->second;
}

}  // namespace liveavatar::models
