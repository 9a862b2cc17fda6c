#include "liveavatar/testing/golden.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <ATen/ATen.h>

#include "liveavatar/io/safetensors.h"

#ifndef LIVEAVATAR_SOURCE_DIR_DEFAULT
#define LIVEAVATAR_SOURCE_DIR_DEFAULT "."
#endif

namespace fs = std::filesystem;

namespace liveavatar::testing {

std::string SourceDir() {
  if (const char* e = std::getenv("LIVEAVATAR_SOURCE_DIR"); e && *e) return e;
  return LIVEAVATAR_SOURCE_DIR_DEFAULT;
}

std::string GoldenRoot() {
  if (const char* e = std::getenv("LIVEAVATAR_GOLDEN_DIR"); e && *e) return e;
  return (fs::path(SourceDir()) / "tests" / "golden").lexically_normal().string();
}

std::string GoldenDir(const std::string& component) { return (fs::path(GoldenRoot()) / component).string(); }

namespace {
constexpr char kNoCases[] = "no-golden-cases:";

// The one parameter DiscoverCases() yields when it finds nothing: GoldenCase's constructor fails on it with `why`,
// so a missing or empty fixture folder is a failing test, never a suite that passes with zero cases.
std::vector<std::string> NoCases(const std::string& why) { return {std::string(kNoCases) + why}; }

std::string KindList(const std::vector<std::string>& kinds) {
  std::string s;
  for (const auto& k : kinds) s += (s.empty() ? "" : ", ") + k;
  return s.empty() ? "any" : s;
}
}  // namespace

std::vector<std::string> DiscoverCases(const std::string& component, const std::vector<std::string>& kinds) {
  std::vector<std::string> out;
  std::error_code ec;
  const fs::path dir = GoldenDir(component);
  if (!fs::is_directory(dir, ec)) {
    return NoCases("golden fixture folder " + dir.string() +
                   " does not exist (fixtures live in tests/golden; $LIVEAVATAR_GOLDEN_DIR overrides the root)");
  }
  for (const auto& ent : fs::directory_iterator(dir, ec)) {
    const std::string name = ent.path().filename().string();
    if (name.rfind("case_", 0) != 0 || ent.path().extension() != ".safetensors") continue;
    if (!kinds.empty()) {
      auto r = io::SafetensorsReader::Open(ent.path().string());
      if (!r.ok()) {
        out.push_back(ent.path().string());  // unreadable: let the test report it
        continue;
      }
      auto it = r.value()->header().metadata.find("kind");
      if (it == r.value()->header().metadata.end()) continue;
      if (std::find(kinds.begin(), kinds.end(), it->second) == kinds.end()) continue;
    }
    out.push_back(ent.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) return NoCases(dir.string() + " holds no case_*.safetensors of kind " + KindList(kinds));
  return out;
}

GoldenCase::GoldenCase(const std::string& path) : path_(path) {
  if (path.rfind(kNoCases, 0) == 0) throw std::runtime_error(path.substr(sizeof(kNoCases) - 1));
  auto r = io::SafetensorsReader::Open(path);
  if (!r.ok()) throw std::runtime_error(r.status().ToString());
  reader_ = r.value();
}

std::string GoldenCase::name() const { return fs::path(path_).stem().string(); }

bool GoldenCase::Has(const std::string& key) const { return reader_->Contains(key); }

at::Tensor GoldenCase::Get(const std::string& key) const {
  auto t = reader_->Get(key);
  if (!t.ok()) throw std::runtime_error(path_ + ": golden case has no tensor '" + key + "'");
  return t.value().clone();
}

std::vector<std::string> GoldenCase::Keys(const std::string& prefix) const {
  std::vector<std::string> out;
  for (const auto& k : reader_->Keys()) {
    if (k.compare(0, prefix.size(), prefix) == 0) out.push_back(k);
  }
  return out;
}

bool GoldenCase::HasMeta(const std::string& key) const { return reader_->header().metadata.count(key) > 0; }

std::string GoldenCase::Meta(const std::string& key) const {
  auto it = reader_->header().metadata.find(key);
  if (it == reader_->header().metadata.end()) throw std::runtime_error(path_ + ": no metadata '" + key + "'");
  return it->second;
}

int64_t GoldenCase::MetaInt(const std::string& key) const { return std::stoll(Meta(key)); }
double GoldenCase::MetaDouble(const std::string& key) const { return std::stod(Meta(key)); }
bool GoldenCase::MetaBool(const std::string& key) const {
  const std::string v = Meta(key);
  return v == "True" || v == "true" || v == "1";
}

double RelL2(const at::Tensor& out, const at::Tensor& ref) {
  auto o = out.detach().to(at::kCPU, at::kDouble).reshape({-1});
  auto r = ref.detach().to(at::kCPU, at::kDouble).reshape({-1});
  const double rn = r.norm().item<double>();
  const double dn = (o - r).norm().item<double>();
  return rn == 0.0 ? dn : dn / rn;
}

::testing::AssertionResult RelL2Within(const at::Tensor& out, const at::Tensor& ref, double tol,
                                       const std::string& what) {
  if (out.sizes() != ref.sizes()) {
    return ::testing::AssertionFailure() << what << ": shape " << out.sizes() << " != reference " << ref.sizes();
  }
  const double e = RelL2(out, ref);
  if (!(e <= tol)) return ::testing::AssertionFailure() << what << ": rel L2 " << e << " > " << tol;
  return ::testing::AssertionSuccess() << what << ": rel L2 " << e;
}

std::string CaseName::operator()(const ::testing::TestParamInfo<std::string>& info) const {
  std::string s = info.param.rfind(kNoCases, 0) == 0 ? std::string("no_cases")
                                                       : fs::path(info.param).stem().string();
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

}  // namespace liveavatar::testing
