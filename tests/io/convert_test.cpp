// io::ConvertCheckpoint: every source format converts to safetensors (single or sharded) or .pth with the same
// values, floating tensors are cast on request and the rest is left alone, and bad requests are errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "io/io_test_util.h"
#include "liveavatar/io/convert.h"
#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/safetensors_index.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {
namespace {

namespace fs = std::filesystem;
using testutil::TempDir;

std::vector<std::pair<std::string, at::Tensor>> Tensors() {
  at::manual_seed(7);
  return {{"w", at::randn({3, 4}).to(at::kBFloat16)},
          {"b", at::randn({4})},
          {"h", at::randn({2}).to(at::kHalf)},
          {"ids", at::arange(5, at::TensorOptions().dtype(at::kLong))},
          {"mask", at::ones({3}, at::kBool)}};
}

void ExpectStoreEquals(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& ref,
                       std::optional<c10::ScalarType> cast) {
  auto s = OpenTensorStore(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s.value()->Keys().size(), ref.size());
  for (const auto& [name, t] : ref) {
    at::Tensor got = s.value()->Get(name).value();
    at::Tensor want = t;
    if (cast && t.is_floating_point()) want = t.to(*cast);
    ASSERT_EQ(got.scalar_type(), want.scalar_type()) << path << " " << name;
    EXPECT_TRUE(at::equal(got, want)) << path << " " << name;
  }
}

TEST(ConvertTest, PthToSafetensorsWithAndWithoutCast) {
  TempDir dir;
  auto tensors = Tensors();
  ASSERT_TRUE(WritePth(dir / "in.pth", tensors).ok());
  ASSERT_TRUE(ConvertCheckpoint(dir / "in.pth", dir / "same.safetensors", std::nullopt).ok());
  ExpectStoreEquals(dir / "same.safetensors", tensors, std::nullopt);
  ASSERT_TRUE(ConvertCheckpoint(dir / "in.pth", dir / "f32.safetensors", c10::kFloat).ok());
  ExpectStoreEquals(dir / "f32.safetensors", tensors, c10::kFloat);
  ASSERT_TRUE(ConvertCheckpoint(dir / "f32.safetensors", dir / "bf16.pth", c10::kBFloat16).ok());
  ExpectStoreEquals(dir / "bf16.pth", tensors, c10::kBFloat16);
}

TEST(ConvertTest, ShardedOutputAndInput) {
  TempDir dir;
  auto tensors = Tensors();
  ASSERT_TRUE(WriteSafetensors(dir / "in.safetensors", tensors).ok());
  ConvertOptions opts;
  opts.dtype = c10::kHalf;
  opts.max_shard_bytes = 24;
  const std::string idx = dir / "out/model.safetensors.index.json";
  fs::create_directories(dir / "out");
  ASSERT_TRUE(ConvertCheckpoint(dir / "in.safetensors", idx, opts).ok());
  auto reader = SafetensorsIndexReader::Open(idx);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_GT(reader.value()->Shards().size(), 1u);
  EXPECT_EQ(reader.value()->Shards()[0].rfind("model-00001-of-", 0), 0u);
  ExpectStoreEquals(idx, tensors, c10::kHalf);
  // Index back to one file.
  ASSERT_TRUE(ConvertCheckpoint(idx, dir / "joined.safetensors", std::nullopt).ok());
  ExpectStoreEquals(dir / "joined.safetensors", tensors, c10::kHalf);
}

TEST(ConvertTest, KeepsF8Spelling) {
  TempDir dir;
  at::Tensor raw = at::arange(16, at::TensorOptions().dtype(at::kLong)).to(ToScalarType(DType::kF8_E4M3));
  ASSERT_TRUE(WriteSafetensorsTyped(dir / "f8.safetensors", {{"q", raw}, {"s", at::ones({1})}},
                                    {DType::kF8_E4M3, DType::kF32}).ok());
  ASSERT_TRUE(ConvertCheckpoint(dir / "f8.safetensors", dir / "out.safetensors", c10::kBFloat16).ok());
  auto r = SafetensorsReader::Open(dir / "out.safetensors").value();
  EXPECT_EQ(r->Meta("q").value().dtype, DType::kF8_E4M3);
  EXPECT_TRUE(at::equal(r->Get("q").value(), raw));
  EXPECT_EQ(r->Meta("s").value().dtype, DType::kBF16);
}

TEST(ConvertTest, BadRequestsAreErrors) {
  TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir / "in.safetensors", Tensors()).ok());
  Status s = ConvertCheckpoint(dir / "in.safetensors", dir / "o.safetensors", c10::kLong);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  s = ConvertCheckpoint(dir / "in.safetensors", dir / "o.npz", std::nullopt);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("o.npz"), std::string::npos);
  s = ConvertCheckpoint(dir / "missing.pth", dir / "o.safetensors", std::nullopt);
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_NE(s.message().find("missing.pth"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "o.safetensors"));
}

}  // namespace
}  // namespace liveavatar::io
