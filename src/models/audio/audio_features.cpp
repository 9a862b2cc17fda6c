#include "liveavatar/models/audio/audio_features.h"

#include <cfenv>
#include <cmath>

#include <ATen/ATen.h>

namespace liveavatar::models::audio {

at::Tensor LinearInterpolateFps(const at::Tensor& x, double input_fps, double output_fps) {
  // x: [L, T_in, C] -> [L, T_out, C]
  TORCH_CHECK(x.dim() == 3 && x.size(1) >= 1, "LinearInterpolateFps expects [L, T, C] with T >= 1, got ", x.sizes());
  // Same float arithmetic as upstream: seq_len = T / float(input_fps); int(seq_len * output_fps).
  const double seq_len = static_cast<double>(x.size(1)) / input_fps;
  const int64_t out_len = static_cast<int64_t>(seq_len * output_fps);
  if (out_len <= 0) return x.new_empty({x.size(0), 0, x.size(2)});
  const std::vector<int64_t> size = {out_len};
  const at::Tensor y = at::upsample_linear1d(x.transpose(1, 2), at::IntArrayRef(size), /*align_corners=*/true);
  return y.transpose(1, 2).contiguous();
}

int64_t NumAudioClips(int64_t t30, int64_t batch_frames, double fps, double video_rate) {
  const double scale = video_rate / fps;
  return static_cast<int64_t>(static_cast<double>(t30) / (static_cast<double>(batch_frames) * scale)) + 1;
}

std::vector<int64_t> AudioBucketIndices(int64_t t30, int64_t batch_frames, double fps, double video_rate) {
  const int64_t nr = NumAudioClips(t30, batch_frames, fps, video_rate);
  const int64_t n = nr * batch_frames;
  // Padded length: ceil(nr·F / fps · video_rate) frames at 30 fps (upstream `padd_audio_num` + T30).
  const int64_t total = static_cast<int64_t>(std::ceil(static_cast<double>(n) / fps * video_rate));
  // numpy linspace(0, N/fps, N, endpoint=False) = i · step, step = (N/fps)/N; then ·video_rate, np.round.
  const double duration = static_cast<double>(n) / fps;
  const double step = duration / static_cast<double>(n);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  const int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);  // nearbyint: round half to even, like np.round
  for (int64_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) * step;
    int64_t k = static_cast<int64_t>(std::nearbyint(t * video_rate));
    idx[static_cast<size_t>(i)] = std::min(std::max<int64_t>(k, 0), total - 1);
  }
  std::fesetround(saved);
  return idx;
}

AudioBuckets BucketAudioFeatures(const at::Tensor& features30, int64_t batch_frames, double fps, int64_t m,
                                 double video_rate) {
  // features30: [L, T30, C] -> buckets [N, L, C·(2m+1)]
  TORCH_CHECK(features30.dim() == 3, "BucketAudioFeatures expects [L, T30, C], got ", features30.sizes());
  TORCH_CHECK(batch_frames > 0 && m >= 0, "BucketAudioFeatures: batch_frames > 0 and m >= 0 required");
  const int64_t layers = features30.size(0), t30 = features30.size(1), c = features30.size(2);
  const std::vector<int64_t> idx = AudioBucketIndices(t30, batch_frames, fps, video_rate);
  const int64_t n = static_cast<int64_t>(idx.size());
  const int64_t stride = static_cast<int64_t>(video_rate / fps);
  const int64_t taps = 2 * m + 1;
  // Gather table [N, taps] of source frames; -1 marks a zero frame.
  std::vector<int64_t> gather(static_cast<size_t>(n * taps));
  std::vector<uint8_t> valid(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = idx[static_cast<size_t>(i)];
    valid[static_cast<size_t>(i)] = b < t30;
    for (int64_t j = 0; j < taps; ++j) {
      const int64_t src = b + (j - m) * stride;
      gather[static_cast<size_t>(i * taps + j)] = b < t30 ? std::min(std::max<int64_t>(src, 0), t30 - 1) : 0;
    }
  }
  AudioBuckets out;
  out.num_clips = NumAudioClips(t30, batch_frames, fps, video_rate);
  if (t30 == 0) {
    out.buckets = at::zeros({n, layers, c * taps}, features30.options());
    return out;
  }
  const auto index = at::tensor(gather, at::kLong).to(features30.device());
  // [L, N·taps, C] -> [L, N, taps·C] -> [N, L, taps·C]
  at::Tensor picked = features30.index_select(1, index).reshape({layers, n, taps * c}).permute({1, 0, 2});
  const auto mask = at::tensor(std::vector<int64_t>(valid.begin(), valid.end()), at::kLong)
                        .to(features30.device(), features30.scalar_type())
                        .view({n, 1, 1});
  out.buckets = (picked * mask).contiguous();
  return out;
}

at::Tensor AudioEmbedLayout(const at::Tensor& buckets) {
  TORCH_CHECK(buckets.dim() == 3, "AudioEmbedLayout expects [N, L, C], got ", buckets.sizes());
  return buckets.unsqueeze(0).permute({0, 2, 3, 1}).contiguous();
}

at::Tensor AudioBlockSlice(const at::Tensor& audio_emb, int64_t clip, int64_t block, int64_t frames_per_clip,
                           int64_t block_frames) {
  TORCH_CHECK(audio_emb.dim() == 4, "AudioBlockSlice expects [1, L, C, N], got ", audio_emb.sizes());
  const int64_t begin = clip * frames_per_clip + block * block_frames;
  TORCH_CHECK(clip >= 0 && block >= 0 && begin + block_frames <= audio_emb.size(3), "AudioBlockSlice: clip ", clip,
              " block ", block, " (frames [", begin, ", ", begin + block_frames, ")) is outside the ",
              audio_emb.size(3), " audio frames");
  return audio_emb.slice(3, begin, begin + block_frames);
}

AudioEmbedding ComputeAudioEmbedding(const at::Tensor& hidden_states_50hz, int64_t infer_frames, double fps) {
  AudioEmbedding e;
  e.features_30fps = LinearInterpolateFps(hidden_states_50hz, 50.0, 30.0);
  AudioBuckets b = BucketAudioFeatures(e.features_30fps, infer_frames, fps, /*m=*/0, 30.0);
  e.audio_emb = AudioEmbedLayout(b.buckets);
  e.num_clips = b.num_clips;
  return e;
}

}  // namespace liveavatar::models::audio
