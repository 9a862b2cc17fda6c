// FlowMatchEulerScheduler: the flow-match Euler sampler of the distilled 4-step pipeline (diffusers
// FlowMatchEulerDiscreteScheduler v0.31 as LiveAvatar builds it: num_train_timesteps 1000, shift 3, no dynamic
// shifting; golden README §3). Note the upstream quirk kept here on purpose: the shift is applied twice (σ_min
// comes from the shifted training table, then the inference sigmas are shifted again).
//
// Tables live on the CPU in float32; Step() runs on the device/dtype of its inputs.
// Thread safety: SetTimesteps() mutates; Step() and the accessors are const and safe to call concurrently.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace liveavatar::pipeline {

class FlowMatchEulerScheduler {
 public:
  // Builds the training table σ_train = shift·s / (1 + (shift−1)·s), s = (1000..1)/1000 (float32), and keeps
  // σ_max = σ_train[0], σ_min = σ_train[last]. No timesteps until SetTimesteps().
  // REQUIRES: num_train_timesteps >= 1, shift > 0.
  explicit FlowMatchEulerScheduler(int64_t num_train_timesteps = 1000, double shift = 3.0);

  // t = linspace(N·σ_max, N·σ_min, steps) (float64), σ = t/N shifted again (float64), cast to float32;
  // timesteps = N·σ (float32, [steps]); sigmas = σ with a final 0 appended (float32, [steps + 1]).
  // REQUIRES: steps >= 1.
  void SetTimesteps(int64_t steps);

  int64_t num_steps() const { return num_steps_; }
  const at::Tensor& timesteps() const { return timesteps_; }  // float32 [steps]
  const at::Tensor& sigmas() const { return sigmas_; }        // float32 [steps + 1]
  int64_t num_train_timesteps() const { return num_train_timesteps_; }
  double shift() const { return shift_; }

  // One Euler step at `step_index` (upstream forces the index per block = the TPP rank):
  // prev = float32(sample) + (σ[i+1] − σ[i])·model_output, returned in model_output's dtype.
  // REQUIRES: SetTimesteps() called; 0 <= step_index < num_steps(); sample and model_output the same shape.
  at::Tensor Step(const at::Tensor& model_output, const at::Tensor& sample, int64_t step_index) const;

 private:
  int64_t num_train_timesteps_;
  double shift_;
  double sigma_max_;
  double sigma_min_;
  int64_t num_steps_ = 0;
  at::Tensor timesteps_;
  at::Tensor sigmas_;
};

}  // namespace liveavatar::pipeline
