// The fixture discovery every golden suite relies on: the fixtures live in the repository, and a missing or empty
// fixture folder fails loudly instead of instantiating zero cases.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

#include "liveavatar/testing/golden.h"

namespace fs = std::filesystem;
using liveavatar::testing::DiscoverCases;
using liveavatar::testing::GoldenCase;

namespace {

// Sets $LIVEAVATAR_GOLDEN_DIR for one scope.
class ScopedGoldenDir {
 public:
  explicit ScopedGoldenDir(const std::string& dir) {
    if (const char* e = std::getenv("LIVEAVATAR_GOLDEN_DIR")) old_ = e, had_ = true;
    setenv("LIVEAVATAR_GOLDEN_DIR", dir.c_str(), 1);
  }
  ~ScopedGoldenDir() {
    if (had_) {
      setenv("LIVEAVATAR_GOLDEN_DIR", old_.c_str(), 1);
    } else {
      unsetenv("LIVEAVATAR_GOLDEN_DIR");
    }
  }

 private:
  std::string old_;
  bool had_ = false;
};

// Asserts that `cases` is the single failing placeholder and that its error names `needle`.
void ExpectFailsNaming(const std::vector<std::string>& cases, const std::string& needle) {
  ASSERT_EQ(cases.size(), 1u);
  try {
    GoldenCase c(cases[0]);
    ADD_FAILURE() << "GoldenCase accepted the placeholder " << cases[0];
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(GoldenDiscovery, DefaultRootIsTheRepositoryCopy) {
  if (std::getenv("LIVEAVATAR_GOLDEN_DIR")) GTEST_SKIP() << "LIVEAVATAR_GOLDEN_DIR overrides the default root";
  const fs::path root = liveavatar::testing::GoldenRoot();
  EXPECT_EQ(root.lexically_normal(), (fs::path(liveavatar::testing::SourceDir()) / "tests" / "golden").lexically_normal());
  // Every component folder of the fixture set is there, with at least one case each.
  for (const char* component : {"dit", "vae", "t5", "audio", "scheduler"}) {
    const auto cases = DiscoverCases(component);
    ASSERT_FALSE(cases.empty()) << component;
    EXPECT_NO_THROW(GoldenCase c(cases.front())) << component << ": " << cases.front();
  }
}

TEST(GoldenDiscovery, MissingRootIsAFailingCaseNamingTheFolder) {
  const std::string missing = (fs::temp_directory_path() / "liveavatar-no-such-golden-dir").string();
  ScopedGoldenDir scope(missing);
  ExpectFailsNaming(DiscoverCases("dit", {"stream"}), missing);
}

TEST(GoldenDiscovery, FolderWithoutCasesOfTheKindFails) {
  const fs::path dir = fs::temp_directory_path() / ("liveavatar-empty-golden-" + std::to_string(getpid()));
  fs::create_directories(dir / "dit");
  {
    ScopedGoldenDir scope(dir.string());
    ExpectFailsNaming(DiscoverCases("dit", {"stream"}), "no case_*.safetensors of kind stream");
  }
  // And with the repository's fixtures, a kind that no case has fails the same way.
  ExpectFailsNaming(DiscoverCases("dit", {"no_such_kind"}), "no_such_kind");
  fs::remove_all(dir);
}
