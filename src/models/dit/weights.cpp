#include "liveavatar/models/dit/weights.h"

#include <string>

namespace liveavatar::models::dit {

namespace {

class SpecList {
 public:
  void Add(std::string key, std::vector<int64_t> shape, const char* init = "normal") {
    WeightSpec s;
    s.key = std::move(key);
    s.shape = std::move(shape);
    s.init = init;
    specs_.push_back(std::move(s));
  }
  // nn.Linear(in, out): weight [out, in] + bias [out].
  void Linear(const std::string& prefix, int64_t in, int64_t out, const char* bias_init = "zeros") {
    Add(prefix + ".weight", {out, in});
    Add(prefix + ".bias", {out}, bias_init);
  }
  // WanSelfAttention / WanCrossAttention with qk RMSNorm: q, k, v, o (dim -> dim) and norm_q, norm_k.
  void Attention(const std::string& prefix, int64_t dim) {
    for (const char* n : {"q", "k", "v", "o"}) Linear(prefix + "." + n, dim, dim);
    Add(prefix + ".norm_q.weight", {dim}, "ones");
    Add(prefix + ".norm_k.weight", {dim}, "ones");
  }
  std::vector<WeightSpec> Take() { return std::move(specs_); }

 private:
  std::vector<WeightSpec> specs_;
};

}  // namespace

std::vector<WeightSpec> DitWeightSpecs(const DitConfig& c) {
  SpecList s;
  const int64_t dim = c.dim;
  const auto& p = c.patch_size;
  // Embeddings. Conv3d weights [out, in, kt, kh, kw].
  s.Add("patch_embedding.weight", {dim, c.in_dim, p[0], p[1], p[2]});
  s.Add("patch_embedding.bias", {dim}, "zeros");
  s.Linear("text_embedding.0", c.text_dim, dim);  // text_embedding.1 is the GELU(tanh)
  s.Linear("text_embedding.2", dim, dim);
  s.Linear("time_embedding.0", c.freq_dim, dim);  // time_embedding.1 is the SiLU
  s.Linear("time_embedding.2", dim, dim);
  s.Linear("time_projection.1", dim, 6 * dim);  // time_projection.0 is the SiLU
  // Transformer blocks.
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    s.Add(b + ".modulation", {1, 6, dim});
    s.Attention(b + ".self_attn", dim);
    s.Attention(b + ".cross_attn", dim);
    s.Add(b + ".norm3.weight", {dim}, "ones");
    s.Add(b + ".norm3.bias", {dim}, "zeros");
    s.Linear(b + ".ffn.0", dim, c.ffn_dim);  // ffn.1 is the GELU(tanh)
    s.Linear(b + ".ffn.2", c.ffn_dim, dim);
  }
  // Head.
  s.Linear("head.head", dim, c.out_dim * p[0] * p[1] * p[2]);
  s.Add("head.modulation", {1, 2, dim});
  // S2V extras.
  s.Add("cond_encoder.weight", {dim, c.cond_dim, p[0], p[1], p[2]});
  s.Add("cond_encoder.bias", {dim}, "zeros");
  s.Add("trainable_cond_mask.weight", {3, dim});
  // CausalAudioEncoder (upstream spelling "casual"): 25-layer mix + MotionEncoder_tc.
  const std::string ae = "casual_audio_encoder";
  s.Add(ae + ".weights", {1, 25, 1, 1}, "ones");
  const std::string enc = ae + ".encoder";
  const int64_t q = dim / 4;
  s.Add(enc + ".conv1_local.conv.weight", {dim, c.audio_dim, 3});
  s.Add(enc + ".conv1_local.conv.bias", {dim}, "zeros");
  s.Add(enc + ".conv1_global.conv.weight", {q, c.audio_dim, 3});
  s.Add(enc + ".conv1_global.conv.bias", {q}, "zeros");
  s.Add(enc + ".conv2.conv.weight", {2 * q, q, 3});
  s.Add(enc + ".conv2.conv.bias", {2 * q}, "zeros");
  s.Add(enc + ".conv3.conv.weight", {dim, 2 * q, 3});
  s.Add(enc + ".conv3.conv.bias", {dim}, "zeros");
  s.Linear(enc + ".final_linear", dim, dim);
  s.Add(enc + ".padding_tokens", {1, 1, 1, dim});
  // Audio injectors: cross-attention + AdaLayerNorm (Linear dim -> 2·dim) per injected layer.
  for (int64_t j = 0; j < c.num_audio_injectors(); ++j) {
    s.Attention("audio_injector.injector." + std::to_string(j), dim);
  }
  for (int64_t j = 0; j < c.num_audio_injectors(); ++j) {
    s.Linear("audio_injector.injector_adain_layers." + std::to_string(j) + ".linear", dim, 2 * dim);
  }
  // FramePack motioner.
  s.Add("frame_packer.proj.weight", {dim, 16, 1, 2, 2});
  s.Add("frame_packer.proj.bias", {dim}, "zeros");
  s.Add("frame_packer.proj_2x.weight", {dim, 16, 2, 4, 4});
  s.Add("frame_packer.proj_2x.bias", {dim}, "zeros");
  s.Add("frame_packer.proj_4x.weight", {dim, 16, 4, 8, 8});
  s.Add("frame_packer.proj_4x.bias", {dim}, "zeros");
  return s.Take();
}

int64_t DitWeightCount(const DitConfig& c) { return 24 + 27 * c.num_layers + 12 + 12 * c.num_audio_injectors(); }

int64_t KeyIndex(const std::string& key, const std::string& prefix) {
  if (key.compare(0, prefix.size(), prefix) != 0) return -1;
  const size_t dot = key.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return -1;
  int64_t i = 0;
  for (size_t p = prefix.size(); p < dot; ++p) {
    if (key[p] < '0' || key[p] > '9') return -1;
    i = i * 10 + (key[p] - '0');
  }
  return i;
}

}  // namespace liveavatar::models::dit
