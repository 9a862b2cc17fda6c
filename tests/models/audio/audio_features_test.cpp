// Feature bucketing unit tests (non-parity): 50 -> 30 fps interpolation, 30 -> 25 fps index sampling, zero
// padding, clip count, layout and per-block slicing (golden README §5.1).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/models/audio/audio_features.h"

namespace liveavatar::models::audio {
namespace {

TEST(AudioFeatures, LinearInterpolationLengthAndAlignCorners) {
  const at::Tensor x = at::randn({3, 173, 4});
  const at::Tensor y = LinearInterpolateFps(x, 50, 30);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 103, 4}));  // int(173 / 50 * 30) = int(103.8)
  // align_corners=True: the end points are the input end points.
  EXPECT_TRUE(at::allclose(y.select(1, 0), x.select(1, 0)));
  EXPECT_TRUE(at::allclose(y.select(1, 102), x.select(1, 172)));
  // An interior point: output j sits at input position j·(172/102).
  const double pos = 51.0 * 172.0 / 102.0;
  const int64_t i0 = static_cast<int64_t>(pos);
  const double f = pos - i0;
  const at::Tensor expect = x.select(1, i0) * (1 - f) + x.select(1, i0 + 1) * f;
  EXPECT_TRUE(at::allclose(y.select(1, 51), expect, 1e-5, 1e-6));
  EXPECT_EQ(LinearInterpolateFps(at::randn({2, 61, 4})).size(1), 36);
  EXPECT_EQ(LinearInterpolateFps(at::randn({2, 1, 4})).size(1), 0);
}

TEST(AudioFeatures, ClipCountAndSampleIndices) {
  EXPECT_EQ(NumAudioClips(103, 48), 2);  // int(103 / 57.6) + 1
  EXPECT_EQ(NumAudioClips(36, 48), 1);
  EXPECT_EQ(NumAudioClips(57, 48), 1);
  EXPECT_EQ(NumAudioClips(58, 48), 2);
  const auto idx = AudioBucketIndices(103, 48);
  ASSERT_EQ(idx.size(), 96u);
  // round(i · 1.2): 0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12 ...
  const std::vector<int64_t> head = {0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12};
  for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(idx[i], head[i]) << i;
  EXPECT_EQ(idx[95], 114);  // round(114.0)
  for (size_t i = 1; i < idx.size(); ++i) EXPECT_GT(idx[i], idx[i - 1]);
}

TEST(AudioFeatures, BucketsGatherFramesAndZeroPastTheEnd) {
  const int64_t t30 = 36, c = 3;
  const at::Tensor f = at::arange(2 * t30 * c, at::kFloat).reshape({2, t30, c}) + 1;  // no zero entries
  const AudioBuckets b = BucketAudioFeatures(f, 48);
  ASSERT_EQ(b.buckets.sizes(), (std::vector<int64_t>{48, 2, 3}));
  EXPECT_EQ(b.num_clips, 1);
  const auto idx = AudioBucketIndices(t30, 48);
  for (int64_t i = 0; i < 48; ++i) {
    if (idx[i] < t30) {
      EXPECT_TRUE(at::equal(b.buckets[i], f.select(1, idx[i]))) << i;
    } else {
      EXPECT_EQ(b.buckets[i].abs().sum().item<double>(), 0.0) << i;
    }
  }
  // m = 1: three taps (stride int(30/25) = 1), clamped at the edges.
  const AudioBuckets b1 = BucketAudioFeatures(f, 48, 25.0, 1);
  ASSERT_EQ(b1.buckets.sizes(), (std::vector<int64_t>{48, 2, 9}));
  EXPECT_TRUE(at::equal(b1.buckets[0].slice(1, 0, 3), f.select(1, 0)));  // index -1 clamped to 0
  EXPECT_TRUE(at::equal(b1.buckets[1].slice(1, 6, 9), f.select(1, 2)));
}

TEST(AudioFeatures, LayoutAndBlockSlices) {
  const AudioEmbedding e = ComputeAudioEmbedding(at::randn({25, 173, 8}), 48);  // T30 = 103
  ASSERT_EQ(e.audio_emb.sizes(), (std::vector<int64_t>{1, 25, 8, 96}));
  const AudioBuckets b = BucketAudioFeatures(at::randn({25, 103, 8}), 48);
  const at::Tensor emb = AudioEmbedLayout(b.buckets);
  ASSERT_EQ(emb.sizes(), (std::vector<int64_t>{1, 25, 8, 96}));
  EXPECT_TRUE(at::equal(emb[0].select(2, 17), b.buckets[17]));
  const at::Tensor s = AudioBlockSlice(emb, 1, 2, 48, 12);
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{1, 25, 8, 12}));
  EXPECT_TRUE(at::equal(s, emb.slice(3, 48 + 24, 48 + 36)));
  EXPECT_THROW(AudioBlockSlice(emb, 1, 4, 48, 12), c10::Error);
  EXPECT_EQ(e.num_clips, 2);
}

}  // namespace
}  // namespace liveavatar::models::audio
