#include "liveavatar/models/audio/speech_features.h"

#include <ATen/ATen.h>

namespace liveavatar::models::audio {

StatusOr<SpeechEmbedding> ComputeSpeechEmbedding(const Wav2Vec2& model, const at::Tensor& waveform,
                                                 const SpeechEmbeddingOptions& options) {
  if (options.infer_frames <= 0 || options.fps <= 0) {
    return Status::InvalidArgument("speech embedding: infer_frames and fps must be positive");
  }
  LA_ASSIGN_OR_RETURN(Wav2Vec2Output out, model.Encode(waveform, options.long_audio, options.run));
  SpeechEmbedding e;
  e.clip.samples = waveform;
  e.clip.sample_rate = e.clip.source_rate = static_cast<int>(model.config().sampling_rate);
  e.clip.source_channels = 1;
  e.hidden_states = out.hidden_states;
  e.embedding = ComputeAudioEmbedding(out.hidden_states, options.infer_frames, options.fps);
  return e;
}

StatusOr<SpeechEmbedding> ComputeSpeechEmbeddingFromFile(const Wav2Vec2& model, const std::string& audio_path,
                                                         const SpeechEmbeddingOptions& options) {
  io::AudioReadOptions read;
  read.target_rate = static_cast<int>(model.config().sampling_rate);
  read.resampler = options.resampler;
  LA_ASSIGN_OR_RETURN(io::AudioClip clip, io::ReadAudio(audio_path, read));
  auto e = ComputeSpeechEmbedding(model, clip.samples, options);
  if (!e.ok()) return e.status().WithPrefix(audio_path);
  e->clip = std::move(clip);
  return e;
}

}  // namespace liveavatar::models::audio
