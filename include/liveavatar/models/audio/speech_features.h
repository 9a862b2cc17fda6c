// The whole speech-conditioning path of the pipeline (upstream spec §2.3 steps 1-5) in one call: audio file ->
// 16 kHz mono (io::ReadAudio) -> wav2vec2 hidden states (Wav2Vec2::Encode) -> 30 fps features -> per-frame
// buckets -> audio_emb [1, L+1, H, num_clips·infer_frames]. The DiT slices it per block with AudioBlockSlice().
//
// Runs on the model's device/dtype; the result stays there (upstream casts audio_emb to bf16 afterwards; the
// pipeline decides). Stateless; thread-safe for concurrent calls on a shared const model.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "liveavatar/core/status.h"
#include "liveavatar/io/audio_reader.h"
#include "liveavatar/models/audio/audio_features.h"
#include "liveavatar/models/audio/wav2vec2.h"

namespace liveavatar::models::audio {

struct SpeechEmbeddingOptions {
  int64_t infer_frames = 48;  // video frames per clip (F)
  double fps = 25.0;          // output video frame rate
  Wav2Vec2LongAudioOptions long_audio;
  Wav2Vec2RunOptions run;
  io::Resampler resampler = io::Resampler::kAuto;
};

struct SpeechEmbedding {
  io::AudioClip clip;           // the decoded 16 kHz mono waveform
  at::Tensor hidden_states;     // [L+1, T50, H]
  AudioEmbedding embedding;     // features_30fps, audio_emb, num_clips
};

// From a waveform already at model.config().sampling_rate ([N] float).
StatusOr<SpeechEmbedding> ComputeSpeechEmbedding(const Wav2Vec2& model, const at::Tensor& waveform,
                                                 const SpeechEmbeddingOptions& options = {});
// From an audio file (any format io::ReadAudio decodes). Errors name the file.
StatusOr<SpeechEmbedding> ComputeSpeechEmbeddingFromFile(const Wav2Vec2& model, const std::string& audio_path,
                                                         const SpeechEmbeddingOptions& options = {});

}  // namespace liveavatar::models::audio
