// io::SafetensorsReader / ParseSafetensorsHeader / WriteSafetensors: every dtype round-trips bit-exactly,
// tensors are zero-copy views that outlive the reader, and each malformed header is a Status naming the file
// (and tensor).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "io/io_test_util.h"
#include "liveavatar/io/mapped_file.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"

namespace liveavatar::io {
namespace {

using testutil::SafetensorsImage;
using testutil::TempDir;
using testutil::WriteBytes;

// A deterministic tensor of `d` with varied bit patterns (raw bytes for F8).
at::Tensor Sample(DType d, std::vector<int64_t> shape) {
  const c10::ScalarType st = ToScalarType(d);
  at::Tensor bytes = at::randint(0, 256, shape, at::TensorOptions().dtype(at::kLong)).to(at::kByte);
  switch (d) {
    case DType::kBool: return at::randint(0, 2, shape).to(at::kBool);
    case DType::kF64:
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16: return at::randn(shape).to(st);
    case DType::kI64: return at::randint(-(1LL << 40), 1LL << 40, shape, at::TensorOptions().dtype(at::kLong));
    case DType::kI32:
    case DType::kI16:
    case DType::kI8: return at::randint(-100, 100, shape).to(st);
    default: return bytes.to(st);  // U8 and the F8 raw bytes
  }
}

TEST(SafetensorsTest, RoundTripsEveryDtype) {
  at::manual_seed(1);
  TempDir dir;
  const std::vector<DType> all = {DType::kF64,  DType::kF32, DType::kF16, DType::kBF16, DType::kF8_E4M3,
                                  DType::kF8_E5M2, DType::kI64, DType::kI32, DType::kI16,  DType::kI8,
                                  DType::kU8,   DType::kBool};
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::vector<DType> dtypes;
  for (DType d : all) {
    tensors.emplace_back(std::string("t.") + DTypeName(d), Sample(d, {3, 5}));
    dtypes.push_back(d);
  }
  tensors.emplace_back("scalar", at::tensor(2.5f).reshape({}));
  dtypes.push_back(DType::kF32);
  tensors.emplace_back("empty", at::zeros({0, 4}));
  dtypes.push_back(DType::kF32);
  const std::string path = dir / "all.safetensors";
  ASSERT_TRUE(WriteSafetensorsTyped(path, tensors, dtypes, {{"format", "pt"}, {"note", "x"}}).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()->header().metadata.at("note"), "x");
  EXPECT_EQ(r.value()->Keys().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, ref] = tensors[i];
    auto meta = r.value()->Meta(name);
    ASSERT_TRUE(meta.ok()) << name;
    EXPECT_EQ(meta.value().dtype, dtypes[i]) << name;
    EXPECT_EQ(meta.value().shape, ref.sizes().vec()) << name;
    auto t = r.value()->Get(name);
    ASSERT_TRUE(t.ok()) << name;
    ASSERT_EQ(t.value().scalar_type(), ref.scalar_type()) << name;
    EXPECT_TRUE(at::equal(t.value(), ref)) << name;
  }
  // The plain writer infers dtypes from the tensors (F8 stays raw U8 on LibTorch < 2.1).
  ASSERT_TRUE(WriteSafetensors(dir / "plain.safetensors", {{"a", tensors[1].second}}).ok());
  auto plain = SafetensorsReader::Open(dir / "plain.safetensors");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain.value()->Meta("a").value().dtype, DType::kF32);
}

TEST(SafetensorsTest, ZeroCopyViewOutlivesReader) {
  TempDir dir;
  const std::string path = dir / "z.safetensors";
  at::Tensor ref = at::arange(64, at::kFloat).reshape({8, 8});
  ASSERT_TRUE(WriteSafetensors(path, {{"w", ref}, {"b", at::ones({3}, at::kHalf)}}).ok());
  at::Tensor w;
  {
    auto r = SafetensorsReader::Open(path);
    ASSERT_TRUE(r.ok());
    const auto& map = r.value()->mapping();
    w = r.value()->Get("w").value();
    const auto* p = static_cast<const uint8_t*>(w.data_ptr());
    EXPECT_GE(p, map->data());
    EXPECT_LE(p + w.numel() * 4, map->data() + map->size());
    EXPECT_EQ(p, map->data() + r.value()->FileOffset(*r.value()->Find("w")));
  }
  // Reader gone, the mapping lives on through the tensor.
  EXPECT_TRUE(at::equal(w, ref));
}

TEST(SafetensorsTest, OpenTensorStoreDispatchesByExtension) {
  TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir / "a.safetensors", {{"x", at::ones({2})}}).ok());
  auto s = OpenTensorStore(dir / "a.safetensors");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.value()->Keys(), std::vector<std::string>{"x"});
  auto missing = s.value()->Get("nope");
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  auto bad = OpenTensorStore(dir / "a.npz");
  EXPECT_EQ(bad.status().code(), Status::Code::kNotSupported);
}

struct Malformed {
  const char* what;
  std::string image;
  const char* expect;  // substring of the message besides the file name ("" for none)
};

TEST(SafetensorsTest, MalformedFilesNameTheFileAndTensor) {
  TempDir dir;
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string huge_len(8, '\xff');
  std::vector<Malformed> cases = {
      {"truncated", std::string("\x05\x00\x00", 3), "8-byte"},
      {"header_past_eof", SafetensorsImage("{}", 0).substr(0, 8) + "{", "past the end"},
      {"header_len_huge", huge_len + "{}", "hex ffffffffffffffff) are not a safetensors header length"},
      {"overlap",
       SafetensorsImage(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlap"},
      {"out_of_range", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "'a'"},
      {"begin_gt_end", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "'a'"},
      {"size_mismatch", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "'a'"},
      {"unknown_dtype", SafetensorsImage(R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", 8), "F12"},
      {"not_json", SafetensorsImage("{not json", 0), "JSON"},
      {"not_object", SafetensorsImage("[1,2]", 0), "not an object"},
      {"entry_not_object", SafetensorsImage(R"({"a":3})", 0), "'a'"},
      {"metadata_not_string", SafetensorsImage(R"({"__metadata__":{"k":1},)" + ok_entry + "}", 8), "'k'"},
      {"negative_dim", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "'a'"},
      {"float_dim", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), "'a'"},
      {"negative_offset", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8), "'a'"},
      {"missing_offsets", SafetensorsImage(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "'a'"},
      {"absurd_shape",
       SafetensorsImage(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "'a'"},
  };
  for (const auto& c : cases) {
    const std::string path = dir / (std::string(c.what) + ".safetensors");
    WriteBytes(path, c.image);
    auto r = SafetensorsReader::Open(path);
    ASSERT_FALSE(r.ok()) << c.what;
    const std::string& msg = r.status().message();
    EXPECT_NE(msg.find(path), std::string::npos) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
    // The pure parser agrees.
    auto h = ParseSafetensorsHeader(reinterpret_cast<const uint8_t*>(c.image.data()), c.image.size(), "img");
    EXPECT_FALSE(h.ok()) << c.what;
  }
  // Empty file and a directory.
  WriteBytes(dir / "empty.safetensors", "");
  EXPECT_FALSE(SafetensorsReader::Open(dir / "empty.safetensors").ok());
  EXPECT_FALSE(SafetensorsReader::Open(dir.path()).ok());
  EXPECT_EQ(SafetensorsReader::Open(dir / "missing.safetensors").status().code(), Status::Code::kNotFound);
}

TEST(SafetensorsTest, FailedWriteLeavesNoFile) {
  TempDir dir;
  const std::string path = dir / "out.safetensors";
  // Duplicate names, an empty name, a complex tensor, a dtype whose size does not match: nothing is written.
  EXPECT_FALSE(WriteSafetensors(path, {{"a", at::ones({2})}, {"a", at::ones({2})}}).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"", at::ones({2})}}).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"c", at::ones({2}, at::kComplexFloat)}}).ok());
  EXPECT_FALSE(WriteSafetensorsTyped(path, {{"a", at::ones({2})}}, {DType::kF16}).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  // An unwritable location: IOError naming the path, no file.
  const std::string bad = dir / "no_such_dir/out.safetensors";
  Status s = WriteSafetensors(bad, {{"a", at::ones({2})}});
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_NE(s.message().find("out.safetensors"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(bad));
  // A failed rewrite keeps the previous complete file.
  ASSERT_TRUE(WriteSafetensors(path, {{"old", at::ones({2})}}).ok());
  EXPECT_FALSE(WriteSafetensors(path, {{"a", at::ones({2})}, {"a", at::ones({2})}}).ok());
  EXPECT_TRUE(SafetensorsReader::Open(path).value()->Contains("old"));
}

TEST(SafetensorsTest, NonContiguousAndMisalignedInputs) {
  TempDir dir;
  at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6});
  at::Tensor t = base.t();  // non-contiguous
  ASSERT_TRUE(WriteSafetensors(dir / "nc.safetensors", {{"t", t}, {"u8", at::ones({3}, at::kByte)},
                                                       {"f", at::ones({5}, at::kDouble)}}).ok());
  auto r = SafetensorsReader::Open(dir / "nc.safetensors");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(at::equal(r.value()->Get("t").value(), t));
  // The double after 3 bytes of u8 in data order is misaligned unless the reader copies: values still right.
  EXPECT_TRUE(at::equal(r.value()->Get("f").value(), at::ones({5}, at::kDouble)));
}

}  // namespace
}  // namespace liveavatar::io
