// Golden-fixture helpers for parity tests (tests only; linked into every test executable).
//
// Fixture root: $LIVEAVATAR_GOLDEN_DIR, else <repo>/tests/golden (a copy of shared/golden kept in the repository). Cases are discovered, never named: every
// `case_*.safetensors` of a component folder (dit, vae, t5, audio, scheduler) runs through the same test,
// dispatching on its `__metadata__["kind"]`. Parity test suites are named Golden* so `ctest -R golden` (ctest
// matching is case-sensitive: use `-R '[Gg]olden'` or `-R Golden`) selects them; test names carry "golden".
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

namespace liveavatar::io {
class SafetensorsReader;
}

namespace liveavatar::testing {

// Repository root (compiled in; overridable with $LIVEAVATAR_SOURCE_DIR).
std::string SourceDir();
std::string GoldenRoot();
// <GoldenRoot>/<component>
std::string GoldenDir(const std::string& component);
// Sorted paths of <GoldenDir(component)>/case_*.safetensors whose kind is in `kinds` (all kinds if empty). A
// missing folder, or one without such a case, yields one placeholder on which GoldenCase's constructor throws
// (naming the folder): a golden suite never passes with zero cases.
std::vector<std::string> DiscoverCases(const std::string& component, const std::vector<std::string>& kinds = {});

// One case file.
class GoldenCase {
 public:
  explicit GoldenCase(const std::string& path);  // throws on an unreadable file (test failure)
  const std::string& path() const { return path_; }
  std::string name() const;  // file stem, e.g. "case_stream_c0b0"
  std::string kind() const { return Meta("kind"); }
  bool Has(const std::string& key) const;
  // Tensor by key (a private clone, writable); fails the test (throws) when absent.
  at::Tensor Get(const std::string& key) const;
  // Keys starting with `prefix`, sorted.
  std::vector<std::string> Keys(const std::string& prefix = "") const;
  bool HasMeta(const std::string& key) const;
  std::string Meta(const std::string& key) const;  // throws when absent
  int64_t MetaInt(const std::string& key) const;
  double MetaDouble(const std::string& key) const;
  bool MetaBool(const std::string& key) const;  // "True"/"true"/"1"

 private:
  std::string path_;
  std::shared_ptr<io::SafetensorsReader> reader_;
};

// ||out - ref|| / ||ref|| computed in float64 (ref == 0: ||out||). Shapes must match (numel and sizes).
double RelL2(const at::Tensor& out, const at::Tensor& ref);

// gtest assertion: shapes equal and RelL2(out, ref) <= tol, message naming `what`.
::testing::AssertionResult RelL2Within(const at::Tensor& out, const at::Tensor& ref, double tol,
                                       const std::string& what);

// Parameter-name generator: the case file stem, sanitised for gtest.
struct CaseName {
  std::string operator()(const ::testing::TestParamInfo<std::string>& info) const;
};

}  // namespace liveavatar::testing

// Usage:
//   class GoldenDit : public ::testing::TestWithParam<std::string> {};
//   TEST_P(GoldenDit, Stream) { liveavatar::testing::GoldenCase c(GetParam()); ... }
//   LA_GOLDEN_CASES(GoldenDit, "dit", {"stream"});
#define LA_GOLDEN_CASES(suite, component, ...)                                                      \
  GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(suite);                                              \
  INSTANTIATE_TEST_SUITE_P(golden, suite,                                                           \
                           ::testing::ValuesIn(::liveavatar::testing::DiscoverCases(component, __VA_ARGS__)), \
                           ::liveavatar::testing::CaseName())
