// io::SafetensorsIndexReader / WriteShardedSafetensors: diffusers-style shards round-trip through
// OpenTensorStore, and every inconsistency between the index and its shards is an error naming both.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "io/io_test_util.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/safetensors_index.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {
namespace {

namespace fs = std::filesystem;
using testutil::TempDir;
using testutil::WriteBytes;

std::vector<std::pair<std::string, at::Tensor>> Tensors() {
  at::manual_seed(5);
  return {{"a", at::randn({10})},               // 40 bytes
          {"b", at::randn({10})},               // 40
          {"c", at::randn({30})},               // 120: over the limit, a shard of its own
          {"d", at::randn({4}).to(at::kHalf)},  // 8
          {"e", at::randint(0, 5, {2}, at::TensorOptions().dtype(at::kLong))}};
}

TEST(SafetensorsIndexTest, WritesDiffusersShardsAndReadsThemBack) {
  TempDir dir;
  auto tensors = Tensors();
  auto index = WriteShardedSafetensors(dir.path(), "diffusion_pytorch_model", tensors, 100);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index.value(), dir / "diffusion_pytorch_model.safetensors.index.json");
  // a+b (80), c (120), d+e (8 + 16).
  for (const char* shard : {"diffusion_pytorch_model-00001-of-00003.safetensors",
                            "diffusion_pytorch_model-00002-of-00003.safetensors",
                            "diffusion_pytorch_model-00003-of-00003.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir / shard)) << shard;
  }
  auto store = OpenTensorStore(index.value());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store.value()->Keys(), (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  for (const auto& [name, ref] : tensors) {
    EXPECT_TRUE(at::equal(store.value()->Get(name).value(), ref)) << name;
    EXPECT_EQ(store.value()->Meta(name).value().shape, ref.sizes().vec());
  }
  auto reader = SafetensorsIndexReader::Open(index.value()).value();
  EXPECT_EQ(reader->Shards().size(), 3u);
  EXPECT_EQ(reader->metadata().at("total_size"), "224");
  EXPECT_EQ(reader->ShardOf("c")->path(), dir / "diffusion_pytorch_model-00002-of-00003.safetensors");
  EXPECT_EQ(store.value()->Get("zz").status().code(), Status::Code::kNotFound);
  EXPECT_FALSE(WriteShardedSafetensors(dir.path(), "x", tensors, 0).ok());
}

TEST(SafetensorsIndexTest, InconsistenciesNameIndexAndShard) {
  TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir / "s1.safetensors", {{"a", at::ones({2})}, {"b", at::ones({2})}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir / "s2.safetensors", {{"c", at::ones({2})}}).ok());
  const std::string idx = dir / "m.safetensors.index.json";
  auto expect_error = [&](const std::string& json, const std::vector<std::string>& needles) {
    WriteBytes(idx, json);
    auto r = OpenTensorStore(idx);
    ASSERT_FALSE(r.ok()) << json;
    for (const auto& n : needles) EXPECT_NE(r.status().message().find(n), std::string::npos) << r.status().message();
  };
  // OK first.
  WriteBytes(idx, R"({"metadata": {"total_size": 24}, "weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                   "c": "s2.safetensors"}})");
  ASSERT_TRUE(OpenTensorStore(idx).ok());
  // A key missing from its shard.
  expect_error(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors",
                  "x": "s2.safetensors"}})", {idx, "s2.safetensors", "'x'"});
  // A shard tensor the map does not assign to it (b).
  expect_error(R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})", {idx, "s1.safetensors", "'b'"});
  // Missing shard file.
  expect_error(R"({"weight_map": {"a": "s9.safetensors"}})", {idx, "s9.safetensors"});
  // Broken shard.
  WriteBytes(dir / "broken.safetensors", "xx");
  expect_error(R"({"weight_map": {"a": "broken.safetensors"}})", {idx, "broken.safetensors"});
  // Structural problems.
  expect_error("{oops", {idx, "JSON"});
  expect_error(R"({"metadata": {}})", {idx, "weight_map"});
  expect_error(R"({"weight_map": {"a": 3}})", {idx, "'a'"});
  expect_error(R"({"weight_map": {"a": "../s1.safetensors"}})", {idx, ".."});
  expect_error(R"({"weight_map": {"a": "/etc/passwd"}})", {idx, "/etc/passwd"});
  EXPECT_EQ(OpenTensorStore(dir / "none.safetensors.index.json").status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace liveavatar::io
