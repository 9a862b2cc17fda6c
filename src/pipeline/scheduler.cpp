#include "liveavatar/pipeline/scheduler.h"

#include <vector>

#include <ATen/ATen.h>

namespace liveavatar::pipeline {

namespace {

// numpy.linspace(start, stop, num) in float64: start + i·step, the last entry exactly `stop`.
std::vector<double> Linspace(double start, double stop, int64_t num) {
  std::vector<double> out(static_cast<size_t>(num));
  if (num == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) out[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  out.back() = stop;
  return out;
}

}  // namespace

FlowMatchEulerScheduler::FlowMatchEulerScheduler(int64_t num_train_timesteps, double shift)
    : num_train_timesteps_(num_train_timesteps), shift_(shift) {
  TORCH_CHECK(num_train_timesteps >= 1, "FlowMatchEulerScheduler: num_train_timesteps must be >= 1");
  TORCH_CHECK(shift > 0.0, "FlowMatchEulerScheduler: shift must be > 0");
  // Training table in float32 tensor arithmetic, as upstream (torch ops on a float32 tensor).
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor t = at::arange(num_train_timesteps, 0, -1, f32);  // N, N-1, ..., 1 (exact in float32)
  at::Tensor s = t / static_cast<double>(num_train_timesteps);
  at::Tensor shifted = shift * s / (1 + (shift - 1) * s);
  sigma_max_ = shifted[0].item<float>();
  sigma_min_ = shifted[num_train_timesteps - 1].item<float>();
}

void FlowMatchEulerScheduler::SetTimesteps(int64_t steps) {
  TORCH_CHECK(steps >= 1, "FlowMatchEulerScheduler::SetTimesteps: steps must be >= 1, got ", steps);
  const double n = static_cast<double>(num_train_timesteps_);
  std::vector<double> sigma = Linspace(sigma_max_ * n, sigma_min_ * n, steps);
  for (double& v : sigma) {
    v = v / n;
    v = shift_ * v / (1 + (shift_ - 1) * v);  // the second shift (float64)
  }
  at::Tensor sig = at::tensor(sigma, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
  timesteps_ = sig * n;
  sigmas_ = at::cat({sig, at::zeros({1}, sig.options())});
  num_steps_ = steps;
}

at::Tensor FlowMatchEulerScheduler::Step(const at::Tensor& model_output, const at::Tensor& sample,
                                         int64_t step_index) const {
  TORCH_CHECK(num_steps_ > 0, "FlowMatchEulerScheduler::Step: call SetTimesteps() first");
  TORCH_CHECK(step_index >= 0 && step_index < num_steps_, "FlowMatchEulerScheduler::Step: step_index ", step_index,
              " out of range [0, ", num_steps_, ")");
  TORCH_CHECK(model_output.sizes() == sample.sizes(), "FlowMatchEulerScheduler::Step: model_output ",
              model_output.sizes(), " and sample ", sample.sizes(), " differ");
  // Same ATen ops and type promotion as upstream: a 0-dim float32 dt times model_output (its dtype wins),
  // added to the float32 sample, cast back to model_output's dtype.
  const at::Tensor dt = (sigmas_[step_index + 1] - sigmas_[step_index]).to(model_output.device());
  at::Tensor prev = sample.to(at::kFloat) + dt * model_output;
  return prev.to(model_output.scalar_type());
}

}  // namespace liveavatar::pipeline
