// Tests for the reference-image preprocessing: the generation-size rule (get_size_less_than_area), the
// PIL-exact bilinear resize, torchvision's CenterCrop padding/rounding and the full PreprocessImage chain.
//
// Expected pixels come from PIL 9.4 (/usr/bin/python3, python3-pil): `Image.fromarray(x).resize((w, h),
// Image.BILINEAR)` on the Pattern() image below; the PreprocessImage digests are of PIL's resize followed by
// torchvision's Resize(int)/CenterCrop arithmetic (re-done in numpy, torchvision is not installed there).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "liveavatar/io/image_preprocess.h"
#include "liveavatar/io/image_reader.h"

#include <filesystem>
#include <unistd.h>

namespace liveavatar::io {
namespace {

// The test image both sides build: ((x*37 + y*91 + c*53 + (x*y % 7)*19) % 256), uint8 [h, w, 3].
at::Tensor Pattern(int64_t h, int64_t w) {
  at::Tensor t = at::empty({h, w, 3}, at::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c) p[(y * w + x) * 3 + c] = static_cast<uint8_t>((x * 37 + y * 91 + c * 53 + (x * y % 7) * 19) % 256);
  return t;
}

uint64_t Fnv1a(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  const uint8_t* p = c.data_ptr<uint8_t>();
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int64_t i = 0; i < c.numel(); ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

struct ResizeCase {
  int64_t h, w, out_h, out_w;
  std::vector<int> pixels;  // PIL's output, row-major [out_h, out_w, 3]
};

const std::vector<ResizeCase>& PilResizeCases() {
  static const std::vector<ResizeCase> cases = {
    {13, 17, 5, 7,
     {
         91, 118, 149, 102, 127, 138, 147, 147, 109, 103, 118, 104, 108, 137, 118, 148, 145, 98, 106, 116, 110,
         123, 124, 127, 117, 124, 98, 137, 114, 109, 129, 106, 126, 118, 110, 98, 139, 111, 118, 137, 90, 129, 138,
         150, 101, 156, 81, 102, 105, 85, 117, 142, 138, 104, 156, 72, 105, 108, 85, 123, 147, 113, 102, 126, 130,
         139, 122, 128, 128, 117, 118, 142, 125, 117, 142, 128, 113, 129, 119, 123, 148, 132, 106, 141, 147, 141,
         136, 127, 173, 107, 89, 121, 138, 143, 114, 133, 124, 169, 112, 97, 120, 141, 148, 90, 141}},
    {5, 7, 9, 12,
     {
         0, 53, 106, 14, 67, 120, 35, 88, 141, 57, 110, 163, 79, 132, 185, 100, 153, 206, 122, 175, 228, 143, 196,
         249, 165, 218, 154, 187, 229, 37, 208, 101, 58, 222, 19, 72, 30, 83, 136, 47, 100, 153, 72, 125, 178, 97,
         104, 157, 112, 90, 143, 87, 115, 168, 88, 141, 194, 113, 166, 219, 138, 191, 166, 164, 209, 96, 189, 135,
         71, 205, 87, 55, 81, 134, 187, 101, 154, 207, 133, 186, 239, 164, 94, 147, 167, 21, 74, 65, 53, 106, 30,
         83, 136, 62, 115, 168, 94, 147, 187, 125, 177, 193, 156, 192, 92, 177, 201, 27, 131, 184, 124, 113, 166,
         148, 85, 138, 186, 117, 93, 146, 137, 65, 104, 91, 103, 76, 70, 123, 96, 73, 126, 165, 104, 157, 158, 141,
         189, 128, 179, 161, 82, 203, 142, 53, 182, 235, 32, 114, 167, 60, 9, 62, 104, 42, 95, 148, 85, 138, 159,
         129, 182, 54, 134, 187, 59, 100, 153, 174, 127, 180, 116, 171, 213, 21, 215, 108, 65, 243, 40, 93, 90,
         143, 83, 80, 133, 114, 63, 116, 165, 109, 84, 137, 149, 77, 98, 156, 168, 39, 126, 179, 50, 58, 111, 132,
         114, 102, 103, 195, 107, 51, 162, 91, 101, 141, 80, 133, 27, 80, 133, 63, 105, 158, 119, 145, 198, 167,
         84, 121, 198, 52, 52, 168, 156, 39, 112, 165, 56, 26, 79, 103, 102, 51, 90, 207, 42, 68, 122, 90, 132, 67,
         120, 173, 78, 131, 184, 117, 106, 159, 180, 69, 122, 194, 123, 83, 189, 167, 60, 126, 154, 96, 74, 127,
         120, 35, 88, 131, 94, 108, 83, 171, 143, 32, 133, 154, 143, 107, 160, 213, 108, 161, 214, 150, 107, 160,
         216, 24, 77, 210, 146, 60, 183, 236, 65, 100, 153, 131, 52, 105, 158, 41, 94, 147, 90, 143, 78, 150, 203,
         11, 139, 192, 149, 131, 184, 237}},
    {9, 31, 9, 10,
     {
         49, 102, 155, 148, 167, 160, 85, 88, 119, 127, 168, 117, 118, 100, 92, 100, 153, 145, 148, 128, 77, 83,
         126, 157, 162, 163, 78, 76, 94, 143, 127, 115, 168, 90, 118, 138, 137, 154, 95, 93, 99, 120, 135, 173,
         114, 108, 93, 104, 122, 175, 135, 130, 107, 88, 108, 154, 155, 161, 152, 79, 85, 138, 95, 143, 162, 97,
         134, 138, 83, 121, 162, 103, 160, 142, 83, 106, 159, 109, 174, 153, 82, 103, 147, 115, 172, 173, 88, 112,
         130, 114, 118, 106, 125, 115, 83, 84, 100, 95, 138, 134, 101, 81, 93, 88, 141, 141, 108, 91, 100, 88, 129,
         134, 111, 114, 119, 86, 106, 116, 104, 157, 164, 125, 114, 99, 152, 119, 157, 112, 142, 112, 99, 113, 145,
         142, 151, 134, 78, 113, 128, 161, 149, 157, 71, 124, 115, 161, 135, 186, 86, 135, 106, 155, 147, 165, 46,
         92, 150, 131, 108, 136, 73, 126, 179, 32, 85, 118, 95, 148, 194, 23, 76, 117, 102, 155, 192, 29, 82, 137,
         87, 140, 159, 109, 70, 142, 39, 92, 98, 106, 96, 180, 47, 80, 77, 98, 109, 194, 64, 76, 80, 82, 115, 184,
         89, 79, 107, 60, 113, 137, 129, 91, 170, 188, 86, 101, 102, 129, 138, 181, 136, 136, 116, 102, 111, 149,
         161, 164, 78, 90, 96, 137, 170, 176, 103, 94, 97, 110, 163, 162, 153, 115, 96, 88, 136, 157, 143, 117,
         114, 68, 121, 139, 153, 141, 133, 74, 110, 123, 144, 153, 154, 95, 109, 107, 124, 154, 174, 123, 116, 98,
         83, 136}},
  };
  return cases;
}

struct PreprocessCase {
  int64_t h, w, out_h, out_w;
  int64_t resized_h, resized_w;  // torchvision Resize(min(out_h, out_w)) output size
  uint64_t crop_hash;            // FNV-1a 64 of the uint8 [out_h, out_w, 3] after CenterCrop
  int64_t crop_sum;
};

const std::vector<PreprocessCase> kPreprocessCases = {
    {20, 36, 12, 24, 12, 21, 0x6416e278c9155fc3ULL, 95002},
    {30, 20, 16, 8, 12, 8, 0x6d910e31db8d6d36ULL, 36759},
    {17, 40, 16, 32, 16, 37, 0x4a14a972fac5d116ULL, 192921},
    {400, 720, 384, 704, 384, 691, 0x2215be677410131eULL, 101506263},
};

TEST(GenSizeRule, ReferenceExample720x400) {
  // Reference doc §2: the 720x400 (W x H) example image with --size 720*400 generates at H=384, W=704.
  auto s = ResolveGenSize(400, 720, "720*400");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->height, 384);
  EXPECT_EQ(s->width, 704);
}

TEST(GenSizeRule, ImageWithinAreaIsOnlyPaddedUp) {
  // H*W <= area: scale 1 comes first, so the image size rounded up to multiples of 64 wins when it fits.
  auto a = ResolveGenSize(384, 704, "704*384");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->height, 384);
  EXPECT_EQ(a->width, 704);
  auto b = ResolveGenSize(100, 100, "720*400");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->height, 128);
  EXPECT_EQ(b->width, 128);
  auto c = ResolveGenSize(250, 380, "384*256");  // 256 x 384 = 98304 = area exactly
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->height, 256);
  EXPECT_EQ(c->width, 384);
}

TEST(GenSizeRule, EverySizeOptionGivesMultiplesOf64WithinTheArea) {
  const std::vector<std::pair<int64_t, int64_t>> images = {{400, 720},   {720, 400},  {1080, 1920}, {1920, 1080},
                                                           {512, 512},   {100, 100},  {3000, 200},  {200, 3000},
                                                           {1024, 768}, {481, 833},  {64, 64},    {4000, 3000}};
  ASSERT_EQ(SizeOptions().size(), 12u);
  for (const std::string& opt : SizeOptions()) {
    auto area = MaxAreaForSize(opt);
    ASSERT_TRUE(area.ok()) << opt;
    const auto star = opt.find('*');
    EXPECT_EQ(*area, std::stoll(opt.substr(0, star)) * std::stoll(opt.substr(star + 1))) << opt;
    for (const auto& [h, w] : images) {
      auto s = ResolveGenSize(h, w, opt);
      ASSERT_TRUE(s.ok()) << opt << " " << h << "x" << w;
      EXPECT_GT(s->height, 0);
      EXPECT_GT(s->width, 0);
      EXPECT_EQ(s->height % 64, 0) << opt << " " << h << "x" << w;
      EXPECT_EQ(s->width % 64, 0) << opt << " " << h << "x" << w;
      EXPECT_LE(s->height * s->width, *area) << opt << " " << h << "x" << w;
      // The aspect follows the image (within the 64-pixel rounding) unless the fallback had to kick in.
      if (s->height >= 128 && s->width >= 128) {
        const double img_aspect = static_cast<double>(w) / h;
        const double gen_aspect = static_cast<double>(s->width) / s->height;
        EXPECT_LT(std::fabs(std::log(gen_aspect / img_aspect)), 0.5) << opt << " " << h << "x" << w;
      }
    }
  }
}

TEST(GenSizeRule, UnknownSizeIsInvalidArgumentNamingTheFlag) {
  auto s = ResolveGenSize(400, 720, "640*480");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.status().message().find("--size"), std::string::npos);
  EXPECT_NE(s.status().message().find("720*400"), std::string::npos);  // lists the choices
  EXPECT_FALSE(ResolveGenSize(0, 720, "720*400").ok());
}

TEST(PilResize, MatchesPilBilinear) {
  for (const ResizeCase& c : PilResizeCases()) {
    at::Tensor out = ResizeBilinearPil(Pattern(c.h, c.w), c.out_h, c.out_w);
    ASSERT_EQ(out.sizes(), (at::IntArrayRef{c.out_h, c.out_w, 3}));
    at::Tensor expect = at::tensor(c.pixels, at::kInt).to(at::kByte).reshape({c.out_h, c.out_w, 3});
    const int64_t max_diff = (out.to(at::kInt) - expect.to(at::kInt)).abs().max().item<int>();
    EXPECT_EQ(max_diff, 0) << c.h << "x" << c.w << " -> " << c.out_h << "x" << c.out_w;
  }
}

TEST(PilResize, SameSizeIsIdentity) {
  at::Tensor img = Pattern(6, 9);
  EXPECT_TRUE(at::equal(ResizeBilinearPil(img, 6, 9), img));
}

TEST(PilResize, ConstantImageStaysConstant) {
  at::Tensor img = at::full({11, 29, 3}, 77, at::kByte);
  at::Tensor out = ResizeBilinearPil(img, 5, 8);
  EXPECT_TRUE(at::equal(out, at::full({5, 8, 3}, 77, at::kByte)));
}

TEST(ShorterSide, TorchvisionArithmetic) {
  const GenSize a = ShorterSideResize(400, 720, 384);  // landscape: height is the short side
  EXPECT_EQ(a.height, 384);
  EXPECT_EQ(a.width, 691);  // int(384 * 720 / 400) = int(691.2)
  const GenSize b = ShorterSideResize(720, 400, 384);
  EXPECT_EQ(b.height, 691);
  EXPECT_EQ(b.width, 384);
  const GenSize c = ShorterSideResize(50, 50, 20);
  EXPECT_EQ(c.height, 20);
  EXPECT_EQ(c.width, 20);
}

TEST(CenterCrop, PadsWithZerosAndRoundsHalfToEven) {
  at::Tensor img = Pattern(16, 37);
  // 37 -> 32: (37 - 32) / 2 = 2.5, Python round -> 2.
  at::Tensor crop = CenterCropPad(img, 16, 32);
  EXPECT_TRUE(at::equal(crop, img.narrow(1, 2, 32)));
  // 39 -> 32: 3.5 -> 4.
  at::Tensor img2 = Pattern(16, 39);
  EXPECT_TRUE(at::equal(CenterCropPad(img2, 16, 32), img2.narrow(1, 4, 32)));
  // 21 -> 24: pad 1 left, 2 right; 12 rows unchanged.
  at::Tensor img3 = Pattern(12, 21);
  at::Tensor padded = CenterCropPad(img3, 12, 24);
  ASSERT_EQ(padded.sizes(), (at::IntArrayRef{12, 24, 3}));
  EXPECT_TRUE(at::equal(padded.narrow(1, 1, 21), img3));
  EXPECT_EQ(padded.narrow(1, 0, 1).sum().item<int64_t>(), 0);
  EXPECT_EQ(padded.narrow(1, 22, 2).sum().item<int64_t>(), 0);
}

TEST(Preprocess, MatchesPilAndTorchvision) {
  for (const PreprocessCase& c : kPreprocessCases) {
    const GenSize r = ShorterSideResize(c.h, c.w, std::min(c.out_h, c.out_w));
    EXPECT_EQ(r.height, c.resized_h);
    EXPECT_EQ(r.width, c.resized_w);
    at::Tensor img = Pattern(c.h, c.w);
    at::Tensor crop = CenterCropPad(ResizeBilinearPil(img, r.height, r.width), c.out_h, c.out_w);
    EXPECT_EQ(crop.to(at::kLong).sum().item<int64_t>(), c.crop_sum) << c.h << "x" << c.w;
    EXPECT_EQ(Fnv1a(crop), c.crop_hash) << c.h << "x" << c.w;

    at::Tensor x = PreprocessImage(img, c.out_h, c.out_w);
    ASSERT_EQ(x.sizes(), (at::IntArrayRef{3, c.out_h, c.out_w}));
    ASSERT_EQ(x.scalar_type(), at::kFloat);
    // ToTensor()*2-1 in float32 on exactly those bytes.
    at::Tensor expect = crop.permute({2, 0, 1}).to(at::kFloat).div(255.0f).mul(2.0f).sub(1.0f);
    EXPECT_TRUE(at::equal(x, expect)) << c.h << "x" << c.w;
    EXPECT_GE(x.min().item<float>(), -1.0f);
    EXPECT_LE(x.max().item<float>(), 1.0f);
  }
}

TEST(Preprocess, ReferenceExamplePadsBlackColumns) {
  // 720x400 -> Resize(384) = 691 wide, CenterCrop to 704 pads 6 columns left and 7 right with black (-1).
  at::Tensor x = PreprocessImage(Pattern(400, 720), 384, 704);
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{3, 384, 704}));
  EXPECT_TRUE(at::equal(x.narrow(2, 0, 6), at::full({3, 384, 6}, -1.0f)));
  EXPECT_TRUE(at::equal(x.narrow(2, 697, 7), at::full({3, 384, 7}, -1.0f)));
  EXPECT_GT(x.narrow(2, 6, 691).max().item<float>(), -1.0f);
}

TEST(ReferenceImageLoad, ReadsResolvesAndPreprocesses) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("la_ref_" + std::to_string(::getpid()) + ".ppm")).string();
  at::Tensor img = Pattern(400, 720);
  ASSERT_TRUE(WritePpm(path, img).ok());
  auto r = LoadReferenceImage(path, "720*400");
  auto bad = LoadReferenceImage(path, "1*1");
  std::filesystem::remove(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->source.height, 400);
  EXPECT_EQ(r->source.width, 720);
  EXPECT_EQ(r->size.height, 384);
  EXPECT_EQ(r->size.width, 704);
  EXPECT_TRUE(at::equal(r->pixels, PreprocessImage(img, 384, 704)));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--size"), std::string::npos);
  EXPECT_NE(bad.status().message().find(path), std::string::npos);
  EXPECT_FALSE(LoadReferenceImage(path + ".missing", "720*400").ok());
}

// examples/face.png (384x256 RGB PNG in the repository): PIL's decode and PIL/torchvision preprocessing
// digests (FNV-1a 64 and byte sum of the uint8 image after CenterCrop), computed with /usr/bin/python3.
TEST(ReferenceImageLoad, ExampleFaceMatchesPil) {
  const char* src = std::getenv("LIVEAVATAR_SOURCE_DIR");
  const std::filesystem::path face = std::filesystem::path(src != nullptr ? src : ".") / "examples" / "face.png";
  if (!std::filesystem::exists(face)) GTEST_SKIP() << face << " not found";
  auto rgb = ReadImage(face.string());
  if (!rgb.ok() && rgb.status().code() == Status::Code::kNotSupported) GTEST_SKIP() << "no PNG decoder";
  ASSERT_TRUE(rgb.ok()) << rgb.status().ToString();
  ASSERT_EQ(rgb->sizes(), (at::IntArrayRef{256, 384, 3}));
  EXPECT_EQ(Fnv1a(*rgb), 0x6ad52215ed0e24feULL);  // PIL: np.array(Image.open(face).convert('RGB'))
  struct Case {
    int64_t h, w;
    uint64_t hash;
    int64_t sum;
  };
  const Case cases[] = {
      {384, 704, 0x4e019c9480f2c151ULL, 79395742},  // upscale to 384x576, pad to 704
      {128, 192, 0x486c42f8b425b837ULL, 8823512},   // antialiased 2x downscale
      {192, 128, 0x0658b3e1b863974bULL, 6088612},   // downscale, pad rows, crop columns
      {100, 150, 0x6f9aa798c2967fbbULL, 5384432},   // non-integer downscale
  };
  for (const Case& c : cases) {
    const GenSize r = ShorterSideResize(256, 384, std::min(c.h, c.w));
    at::Tensor crop = CenterCropPad(ResizeBilinearPil(*rgb, r.height, r.width), c.h, c.w);
    EXPECT_EQ(Fnv1a(crop), c.hash) << c.h << "x" << c.w;
    EXPECT_EQ(crop.to(at::kLong).sum().item<int64_t>(), c.sum) << c.h << "x" << c.w;
  }
}

}  // namespace
}  // namespace liveavatar::io
