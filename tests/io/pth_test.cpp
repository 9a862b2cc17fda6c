// io::PthReader / WritePth / ZipArchive: torch.save zips round-trip for several dtypes, views and shared
// storages come out as torch.load builds them, the fixture .pth files equal their .safetensors copies, and
// malicious or broken archives are refused with an error naming the file (and the refused global).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "io/io_test_util.h"
#include "io/pth_pickle.h"
#include "liveavatar/io/mapped_file.h"
#include "liveavatar/io/pth.h"
#include "liveavatar/io/safetensors.h"
#include "liveavatar/io/tensor_store.h"
#include "liveavatar/io/zip_reader.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::io {
namespace {

namespace fs = std::filesystem;
using testutil::ReadBytes;
using testutil::TempDir;
using testutil::WriteBytes;

// Writes a zip whose entries are (name, bytes) through ZipWriter.
void WriteZip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ZipWriter zip(f, path);
  for (const auto& [name, bytes] : entries) ASSERT_TRUE(zip.Add(name, bytes.data(), bytes.size()).ok());
  ASSERT_TRUE(zip.Finish().ok());
  std::fclose(f);
}

std::vector<std::pair<std::string, at::Tensor>> SampleTensors() {
  at::manual_seed(3);
  return {
      {"blocks.0.weight", at::randn({4, 3})},
      {"blocks.0.bias", at::randn({4}).to(at::kHalf)},
      {"emb", at::randn({5, 2}).to(at::kBFloat16)},
      {"dbl", at::randn({2, 2, 2}).to(at::kDouble)},
      {"ids", at::randint(-(1LL << 40), 1LL << 40, {6}, at::TensorOptions().dtype(at::kLong))},
      {"i32", at::randint(-9, 9, {3}).to(at::kInt)},
      {"i16", at::randint(-9, 9, {3}).to(at::kShort)},
      {"i8", at::randint(-9, 9, {3}).to(at::kChar)},
      {"u8", at::randint(0, 255, {7}).to(at::kByte)},
      {"mask", at::randint(0, 2, {2, 3}).to(at::kBool)},
      {"scalar", at::tensor(1.5f).reshape({})},
      {"empty", at::zeros({0, 3})},
      {"transposed", at::arange(12, at::kFloat).reshape({3, 4}).t()},
  };
}

TEST(PthTest, RoundTripsDtypesAndShapes) {
  TempDir dir;
  auto tensors = SampleTensors();
  for (bool zip64 : {false, true}) {
    const std::string path = dir / (zip64 ? "z64.pth" : "plain.pth");
    PthWriteOptions opts;
    opts.force_zip64 = zip64;
    ASSERT_TRUE(WritePth(path, tensors, opts).ok());
    auto r = PthReader::Open(path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r.value()->archive_prefix(), "archive/");
    ASSERT_EQ(r.value()->tensors().size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& [name, ref] = tensors[i];
      EXPECT_EQ(r.value()->tensors()[i].name, name);  // pickle order kept
      auto t = r.value()->Get(name);
      ASSERT_TRUE(t.ok()) << name;
      ASSERT_EQ(t.value().scalar_type(), ref.scalar_type()) << name;
      EXPECT_TRUE(at::equal(t.value(), ref)) << name;
      EXPECT_EQ(r.value()->Meta(name).value().shape, ref.sizes().vec());
    }
    // Through OpenTensorStore with each accepted extension.
    for (const char* ext : {".pt", ".bin"}) {
      const std::string other = dir / (std::string("copy") + ext);
      fs::copy_file(path, other, fs::copy_options::overwrite_existing);
      auto s = OpenTensorStore(other);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      EXPECT_EQ(s.value()->Keys().size(), tensors.size());
    }
  }
}

TEST(PthTest, ZeroCopyAlignedViewsOutliveTheReader) {
  TempDir dir;
  const std::string path = dir / "a.pth";
  at::Tensor ref = at::randn({16, 16});
  ASSERT_TRUE(WritePth(path, {{"u8", at::ones({3}, at::kByte)}, {"w", ref}}).ok());
  at::Tensor w;
  {
    auto r = PthReader::Open(path);
    ASSERT_TRUE(r.ok());
    w = r.value()->Get("w").value();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data_ptr()) % 64, 0u);  // 64-byte aligned entries, like torch
    EXPECT_EQ(r.value()->tensors()[1].storage_file_offset % 64, 0u);
  }
  EXPECT_TRUE(at::equal(w, ref));
}

// Views: tensors sharing one storage with offsets and strides, as torch.save writes them for views.
TEST(PthTest, SharedStorageViewsUseOffsetAndStride) {
  TempDir dir;
  at::Tensor base = at::arange(20, at::kFloat);
  std::vector<internal::PickledTensor> d(2);
  d[0].name = "full";
  d[0].storage_key = "7";
  d[0].storage_numel = 20;
  d[0].size = {4, 5};
  d[0].stride = {5, 1};
  d[1].name = "col";
  d[1].storage_key = "7";
  d[1].storage_numel = 20;
  d[1].storage_offset = 2;
  d[1].size = {4};
  d[1].stride = {5};
  auto pkl = internal::PickleStateDict(d);
  ASSERT_TRUE(pkl.ok());
  const std::string path = dir / "views.pth";
  WriteZip(path, {{"views/data.pkl", pkl.value()},
                  {"views/data/7", std::string(static_cast<const char*>(base.data_ptr()), 80)},
                  {"views/version", "3\n"}});
  auto r = PthReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()->archive_prefix(), "views/");
  at::Tensor full = r.value()->Get("full").value();
  at::Tensor col = r.value()->Get("col").value();
  EXPECT_TRUE(at::equal(full, base.reshape({4, 5})));
  EXPECT_TRUE(at::equal(col, base.reshape({4, 5}).select(1, 2)));
  EXPECT_EQ(col.data_ptr<float>(), full.data_ptr<float>() + 2);  // shared memory

  // A view reaching past its storage is Corruption naming the tensor.
  d[1].storage_offset = 5;
  WriteZip(path, {{"views/data.pkl", internal::PickleStateDict(d).value()},
                  {"views/data/7", std::string(static_cast<const char*>(base.data_ptr()), 80)}});
  auto bad = PthReader::Open(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path), std::string::npos);
  EXPECT_NE(bad.status().message().find("exceeds its storage"), std::string::npos) << bad.status().message();
}

// A stride-0 (broadcast) view of a 1-element storage would make a 651-byte file a 1 GiB tensor: refused.
TEST(PthTest, OverlappingViewsAreRefused) {
  TempDir dir;
  std::vector<internal::PickledTensor> d(1);
  d[0].name = "bomb";
  d[0].storage_key = "0";
  d[0].storage_numel = 1;
  d[0].size = {16384, 16384};
  d[0].stride = {0, 0};
  const std::string path = dir / "bomb.pth";
  float one = 1.0f;
  WriteZip(path, {{"archive/data.pkl", internal::PickleStateDict(d).value()},
                  {"archive/data/0", std::string(reinterpret_cast<const char*>(&one), 4)},
                  {"archive/version", "3\n"}});
  auto r = PthReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("stride-0"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path), std::string::npos);
}

// OrderedDict(l) copies l: one memoised list of N pairs reduced R times is O(N*R) work from O(N + R) bytes. The
// unpickler's work budget refuses it (on the old code this 80 KB pickle built 32 million dict entries).
TEST(PthTest, MemoisedListReusedInManyReductionsIsRefused) {
  const int n = 4000, reductions = 8000;
  std::string pkl("\x80\x02]q\x00(", 6);  // PROTO 2, EMPTY_LIST, BINPUT 0, MARK
  for (int i = 0; i < n; ++i) pkl += "K\x01K\x01\x86";  // (1, 1)
  pkl += "e";                                        // APPENDS
  pkl += "ccollections\nOrderedDict\nq\x01";           // GLOBAL, BINPUT 1
  for (int i = 0; i < reductions; ++i) pkl += std::string("h\x01h\x00\x85R0", 7);  // OrderedDict(l), POP
  pkl += "}.";
  TempDir dir;
  const std::string path = dir / "memo_bomb.pth";
  WriteZip(path, {{"archive/data.pkl", pkl}, {"archive/version", "3\n"}});
  auto r = PthReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("more work than its size allows"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path), std::string::npos);
}

TEST(PthTest, NestedStateDictIsFoundOneLevelDown) {
  // {"epoch": 3, "state_dict": OrderedDict(w=tensor)} written by hand in protocol 2.
  at::Tensor w = at::arange(6, at::kFloat);
  std::vector<internal::PickledTensor> d(1);
  d[0].name = "w";
  d[0].storage_key = "0";
  d[0].storage_numel = 6;
  d[0].size = {6};
  d[0].stride = {1};
  std::string inner = internal::PickleStateDict(d).value();
  inner = inner.substr(2, inner.size() - 3);  // drop PROTO and STOP
  std::string pkl = std::string("\x80\x02}(X\x05\x00\x00\x00", 9) + "epoch" + std::string("K\x03X\x0a\x00\x00\x00", 7) +
                    "state_dict" + inner + "u.";
  TempDir dir;
  const std::string path = dir / "ckpt.pt";
  WriteZip(path, {{"archive/data.pkl", pkl}, {"archive/data/0", std::string(static_cast<const char*>(w.data_ptr()), 24)}});
  auto r = PthReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()->nested_under(), "state_dict");
  EXPECT_TRUE(at::equal(r.value()->Get("w").value(), w));
}

TEST(PthTest, RefusesDangerousGlobals) {
  TempDir dir;
  const std::string path = dir / "evil.pth";
  // os.system("touch <marker>"), the classic pickle payload, in protocol 2.
  const std::string marker = dir / "pwned";
  const std::string cmd = "touch " + marker;
  std::string pkl = "\x80\x02" "cos\nsystem\nq\x00X";
  const uint32_t n = static_cast<uint32_t>(cmd.size());
  for (int i = 0; i < 4; ++i) pkl.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  pkl += cmd + "\x85R.";
  WriteZip(path, {{"archive/data.pkl", pkl}, {"archive/version", "3\n"}});
  auto r = PthReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("os.system"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path), std::string::npos);
  EXPECT_FALSE(fs::exists(marker));

  // builtins.eval via STACK_GLOBAL (protocol 4 spelling) and posix.system are refused too.
  const std::string p4 = "\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93)R.";
  WriteZip(path, {{"archive/data.pkl", p4}});
  r = PthReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("builtins.eval"), std::string::npos) << r.status().message();
  WriteZip(path, {{"archive/data.pkl", "\x80\x02" "cposix\nsystem\n)R."}});
  r = PthReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("posix.system"), std::string::npos);
  // Object-building opcodes (INST) are refused as well.
  WriteZip(path, {{"archive/data.pkl", "\x80\x02(ios\nsystem\n."}});
  EXPECT_FALSE(PthReader::Open(path).ok());
}

TEST(PthTest, CorruptArchivesAreErrors) {
  TempDir dir;
  const std::string good = dir / "good.pth";
  ASSERT_TRUE(WritePth(good, SampleTensors()).ok());
  const std::string bytes = ReadBytes(good);
  const std::string path = dir / "bad.pth";
  auto expect_error = [&](const std::string& image, const char* what) {
    WriteBytes(path, image);
    auto r = PthReader::Open(path);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.status().message().find(path), std::string::npos) << what << ": " << r.status().message();
  };
  expect_error("", "empty");
  expect_error("PK", "tiny");
  expect_error(bytes.substr(0, bytes.size() / 2), "truncated half");
  expect_error(bytes.substr(0, bytes.size() - 10), "truncated end record");
  expect_error("not a zip at all, just some text that is long enough", "text");
  expect_error(std::string("\x80\x02}q\x00.", 6), "legacy format");
  // A data entry cut short: rewrite the central-directory size of data/0 smaller than its storage.
  {
    std::vector<internal::PickledTensor> d(1);
    d[0].name = "w";
    d[0].storage_key = "0";
    d[0].storage_numel = 4;
    d[0].size = {4};
    d[0].stride = {1};
    WriteZip(path, {{"archive/data.pkl", internal::PickleStateDict(d).value()}, {"archive/data/0", "short"}});
    auto r = PthReader::Open(path);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("'w'"), std::string::npos) << r.status().message();
    WriteZip(path, {{"archive/data.pkl", internal::PickleStateDict(d).value()}});
    r = PthReader::Open(path);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("missing"), std::string::npos) << r.status().message();
  }
  // A compressed (deflate) entry: flip the method field of every header to 8.
  {
    std::string z = bytes;
    for (size_t i = 0; i + 12 < z.size(); ++i) {
      if (z.compare(i, 4, "PK\x03\x04") == 0) z[i + 8] = 8;
      if (z.compare(i, 4, "PK\x01\x02") == 0) z[i + 10] = 8;
    }
    WriteBytes(path, z);
    auto r = PthReader::Open(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Status::Code::kNotSupported);
    EXPECT_NE(r.status().message().find("compressed"), std::string::npos) << r.status().message();
  }
  // Truncated pickle.
  WriteZip(path, {{"archive/data.pkl", "\x80\x02}(X\x05\x00\x00"}});
  EXPECT_FALSE(PthReader::Open(path).ok());
  // A pickle whose top level is not a dict.
  WriteZip(path, {{"archive/data.pkl", "\x80\x02K\x05."}});
  EXPECT_FALSE(PthReader::Open(path).ok());
  // No data.pkl.
  WriteZip(path, {{"archive/version", "3\n"}});
  EXPECT_FALSE(PthReader::Open(path).ok());
}

TEST(PthTest, WriterFailureLeavesNoFile) {
  TempDir dir;
  const std::string path = dir / "x.pth";
  EXPECT_FALSE(WritePth(path, {{"a", at::ones({2})}, {"a", at::ones({2})}}).ok());
  EXPECT_FALSE(WritePth(path, {{"c", at::ones({2}, at::kComplexFloat)}}).ok());
  EXPECT_FALSE(WritePth(dir / "missing_dir/x.pth", {{"a", at::ones({2})}}).ok());
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
}

TEST(ZipTest, Crc32MatchesKnownValue) {
  EXPECT_EQ(Crc32("123456789", 9), 0xCBF43926u);
  // The writer's CRCs are the zip standard's: every entry's stored CRC matches its data.
  TempDir dir;
  ASSERT_TRUE(WritePth(dir / "c.pth", SampleTensors()).ok());
  auto f = MappedFile::Open(dir / "c.pth").value();
  auto zip = ZipArchive::Parse(f->data(), f->size(), f->path());
  ASSERT_TRUE(zip.ok());
  for (const auto& e : zip.value().entries()) {
    EXPECT_EQ(Crc32(zip.value().Data(e).value(), e.size), e.crc32) << e.name;
  }
}

// The T5 (bf16) and VAE (fp32) .pth fixtures hold the same tensors as their .safetensors copies.
void ExpectPthMatchesSafetensors(const std::string& pth, const std::string& st) {
  if (!fs::exists(pth) || !fs::exists(st)) GTEST_SKIP() << "fixture files missing: " << pth;
  auto a = OpenTensorStore(pth);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = OpenTensorStore(st);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(a.value()->Keys(), b.value()->Keys());
  ASSERT_FALSE(a.value()->Keys().empty());
  for (const auto& key : a.value()->Keys()) {
    at::Tensor x = a.value()->Get(key).value();
    at::Tensor y = b.value()->Get(key).value();
    ASSERT_EQ(x.sizes(), y.sizes()) << key;
    EXPECT_TRUE(at::equal(x.to(y.scalar_type()), y)) << key;
  }
}

TEST(PthFixtureTest, T5EncoderPthEqualsSafetensors) {
  const std::string d = testing::GoldenRoot() + "/t5/";
  ExpectPthMatchesSafetensors(d + "models_t5_umt5-xxl-enc-bf16.pth", d + "models_t5_umt5-xxl-enc-bf16.safetensors");
  auto r = PthReader::Open(d + "models_t5_umt5-xxl-enc-bf16.pth");
  if (r.ok()) {
    for (const auto& t : r.value()->tensors()) EXPECT_EQ(t.dtype, DType::kBF16) << t.name;
  }
}

TEST(PthFixtureTest, VaePthEqualsSafetensors) {
  const std::string d = testing::GoldenRoot() + "/vae/";
  ExpectPthMatchesSafetensors(d + "Wan2.1_VAE.pth", d + "Wan2.1_VAE.safetensors");
}

}  // namespace
}  // namespace liveavatar::io
