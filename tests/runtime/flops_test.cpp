// FLOP counter (runtime/flops.h) against counts done by hand for a small DiT shape.
#include <gtest/gtest.h>

#include "liveavatar/runtime/flops.h"
#include "liveavatar/runtime/kv_cache.h"

namespace liveavatar::runtime {
namespace {

// dim 8, ffn 16, 2 layers, 1 injected layer, in/cond/out 4, patch 1x2x2, text 3 tokens of 5, freq 6, 4 audio
// tokens (+1 global) per frame.
DitFlopShape Small() {
  DitFlopShape s;
  s.dim = 8;
  s.ffn_dim = 16;
  s.num_layers = 2;
  s.num_injected_layers = 1;
  s.in_dim = 4;
  s.cond_dim = 4;
  s.out_dim = 4;
  s.patch_t = 1;
  s.patch_h = 2;
  s.patch_w = 2;
  s.text_len = 3;
  s.text_dim = 5;
  s.freq_dim = 6;
  s.num_audio_token = 4;
  return s;
}

TEST(Flops, Primitives) {
  EXPECT_EQ(LinearFlops(3, 4, 5), 120.0);
  EXPECT_EQ(AttentionFlops(3, 7, 8), 4.0 * 3 * 7 * 8);
  EXPECT_EQ(ConvFlops(10, 4, 4, 8), 2.0 * 10 * 4 * 4 * 8);
}

TEST(Flops, StreamCallMatchesAHandCount) {
  // Latent grid 4x4 -> fs = 4 tokens per frame; 3 frames -> 12 queries over 20 self-attention keys.
  // Conditioning: text 2·3·5·8 + 2·3·8·8 = 624; time over 6 positions 2·6·6·8 + 2·6·8·8 + 2·6·8·48 = 5952.
  // Convs: patch and cond, 2·12·4·4·8 each = 6144.
  // Per layer: self q,k,v,o 4·2·12·8·8 = 6144; cross q,o 3072 + k,v on text 768; FFN 2·2·12·8·16 = 6144
  //   -> linear 16128; attention 4·12·20·8 + 4·12·3·8 = 8832. Two layers: 32256 / 17664.
  // Injector: AdaLN 2·3·8·16 = 768; q,o 3072; k,v on 15 audio tokens 3840 -> 7680; attention 4·12·5·8 = 1920.
  // Head: 2·12·8·16 = 3072.
  const FlopCount f = DitStreamCallFlops(Small(), 3, 4, 4, 20);
  EXPECT_EQ(f.linear, 624.0 + 5952 + 32256 + 7680 + 3072);
  EXPECT_EQ(f.attention, 17664.0 + 1920);
  EXPECT_EQ(f.conv, 6144.0);
  EXPECT_EQ(f.total(), 49584.0 + 19584 + 6144);
}

TEST(Flops, SinkPrefillMatchesAHandCount) {
  // Latent grid 8x8: fs = 16; sink tokens 16 + 16 + 2·2 + 4·1·1 = 40.
  // Conditioning: text 624; time at one position 96 + 128 + 768 = 992.
  // Convs: reference 2·16·4·4·8 = 4096; proj 4096; proj_2x 2·4·4·32·8 = 8192; proj_4x 2·4·4·256·8 = 65536.
  // Per layer on 40 tokens: self 4·2·40·64 = 20480, attention 4·40·40·8 = 51200; cross q,o 10240 + k,v 768,
  //   attention 4·40·3·8 = 3840; FFN 20480 -> linear 51968, attention 55040 (x2 layers). No injector, no head.
  EXPECT_EQ(DitSinkTokens(Small(), 8, 8), 40);
  const FlopCount f = DitSinkPrefillFlops(Small(), 8, 8);
  EXPECT_EQ(f.linear, 624.0 + 992 + 2 * 51968);
  EXPECT_EQ(f.attention, 2 * 55040.0);
  EXPECT_EQ(f.conv, 4096.0 + 4096 + 8192 + 65536);
}

TEST(Flops, SinkTokensAgreeWithTheCacheGeometry) {
  DitFlopShape big;
  for (auto [h, w] : {std::pair<int64_t, int64_t>{48, 88}, {8, 8}, {50, 90}, {16, 24}}) {
    EXPECT_EQ(DitSinkTokens(big, h, w), SinkTokenCount(h, w, 2, 2)) << h << "x" << w;
  }
  // 704x384 -> latent 48x88: 1056 tokens per frame, 2640 sink tokens (reference §2).
  EXPECT_EQ(DitSinkTokens(big, 48, 88), 2640);
}

TEST(Flops, FourteenBStepIsAboutOneHundredTwentyTeraflop) {
  // 3 latent frames at 704x384 over a full 4-block ring (12 672) + 2 640 cond keys = 15 312 keys.
  const FlopCount f = DitStreamCallFlops(DitFlopShape{}, 3, 48, 88, 15312);
  EXPECT_GT(f.total(), 1.15e14);
  EXPECT_LT(f.total(), 1.25e14);
  EXPECT_GT(f.attention / f.total(), 0.3);  // attention over 15k keys is a third of the work
}

}  // namespace
}  // namespace liveavatar::runtime
