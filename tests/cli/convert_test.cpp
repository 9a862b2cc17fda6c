// `liveavatar convert` (cli_convert.cpp): .pth / sharded index -> one .safetensors, values preserved or cast.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include <ATen/ATen.h>

#include "cli_commands.h"
#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::cli {
namespace {

namespace fs = std::filesystem;

class ConvertCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "la_convert_XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& rel) const { return (fs::path(dir_) / rel).string(); }
  static int Run(const std::string& in, const std::string& out, const std::string& dtype) {
    ParsedCommand cmd;
    cmd.command = Command::kConvert;
    cmd.name = "convert";
    cmd.convert = {in, out, dtype};
    return RunConvert(cmd);
  }
  std::string dir_;
};

TEST_F(ConvertCommand, PthToSafetensorsKeepsValues) {
  const at::Tensor a = at::randn({3, 5});
  const at::Tensor b = at::arange(6, at::kLong).reshape({2, 3});
  ASSERT_TRUE(io::WritePth(Path("in.pth"), {{"a.weight", a}, {"b.index", b}}).ok());
  ASSERT_EQ(Run(Path("in.pth"), Path("out.safetensors"), ""), 0);
  auto out = io::OpenTensorStore(Path("out.safetensors"));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)->Keys(), (std::vector<std::string>{"a.weight", "b.index"}));
  EXPECT_TRUE(at::equal((*out)->Get("a.weight").value(), a));
  EXPECT_TRUE(at::equal((*out)->Get("b.index").value(), b));

  // --dtype bf16 casts floating tensors only.
  ASSERT_EQ(Run(Path("in.pth"), Path("bf16.safetensors"), "bf16"), 0);
  auto cast = io::OpenTensorStore(Path("bf16.safetensors"));
  ASSERT_TRUE(cast.ok());
  EXPECT_TRUE(at::equal((*cast)->Get("a.weight").value(), a.to(at::kBFloat16)));
  EXPECT_EQ((*cast)->Get("b.index")->scalar_type(), at::kLong);
}

TEST_F(ConvertCommand, Errors) {
  EXPECT_EQ(Run(Path("missing.pth"), Path("out.safetensors"), ""), 1);
  ASSERT_TRUE(io::WriteSafetensors(Path("in.safetensors"), {{"x", at::ones({2})}}).ok());
  EXPECT_EQ(Run(Path("in.safetensors"), Path("out.bin"), ""), 1);
  EXPECT_FALSE(fs::exists(Path("out.bin")));
}

}  // namespace
}  // namespace liveavatar::cli
