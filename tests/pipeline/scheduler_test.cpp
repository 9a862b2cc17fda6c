// FlowMatchEulerScheduler against the golden fixture (golden README §3, kind flowmatch_euler) and its own
// invariants. Step counts are derived from the out.steps{N}.* keys present; the bf16 step must match exactly.
#include <iostream>
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/pipeline/scheduler.h"
#include "liveavatar/testing/golden.h"

namespace liveavatar::pipeline {
namespace {

using testing::GoldenCase;
using testing::RelL2Within;

FlowMatchEulerScheduler FromCase(const GoldenCase& c) {
  const int64_t n = c.HasMeta("num_train_timesteps") ? c.MetaInt("num_train_timesteps") : 1000;
  const double shift = c.HasMeta("shift") ? c.MetaDouble("shift") : 3.0;
  return FlowMatchEulerScheduler(n, shift);
}

// Step counts N of the out.steps{N}.timesteps keys.
std::set<int64_t> StepCounts(const GoldenCase& c) {
  std::set<int64_t> out;
  const std::string prefix = "out.steps";
  for (const auto& key : c.Keys(prefix)) {
    const auto dot = key.find('.', prefix.size());
    if (dot == std::string::npos) continue;
    out.insert(std::stoll(key.substr(prefix.size(), dot - prefix.size())));
  }
  return out;
}

class GoldenScheduler : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenScheduler, FlowMatchEulerGolden) {
  GoldenCase c(GetParam());
  ASSERT_EQ(c.kind(), "flowmatch_euler");

  // Tables for every step count present.
  const auto counts = StepCounts(c);
  EXPECT_FALSE(counts.empty()) << c.path() << ": no out.steps{N}.* keys";
  for (int64_t n : counts) {
    FlowMatchEulerScheduler s = FromCase(c);
    s.SetTimesteps(n);
    const std::string p = "out.steps" + std::to_string(n) + ".";
    EXPECT_TRUE(RelL2Within(s.timesteps(), c.Get(p + "timesteps"), 1e-6, c.name() + " " + p + "timesteps"));
    EXPECT_TRUE(RelL2Within(s.sigmas(), c.Get(p + "sigmas"), 1e-6, c.name() + " " + p + "sigmas"));
    // float32 tables computed the upstream way match bit for bit.
    EXPECT_TRUE(at::equal(s.timesteps(), c.Get(p + "timesteps"))) << p << "timesteps not bit-identical";
    EXPECT_TRUE(at::equal(s.sigmas(), c.Get(p + "sigmas"))) << p << "sigmas not bit-identical";
  }

  // The sampling loop: one Euler step per out.loop.step{i}.prev_sample.
  if (c.Has("in.loop.x_in")) {
    int64_t loop_steps = 0;
    while (c.Has("out.loop.step" + std::to_string(loop_steps) + ".prev_sample")) ++loop_steps;
    ASSERT_GT(loop_steps, 0);
    FlowMatchEulerScheduler s = FromCase(c);
    s.SetTimesteps(loop_steps);
    at::Tensor x = c.Get("in.loop.x_in");
    for (int64_t i = 0; i < loop_steps; ++i) {
      const std::string p = "loop.step" + std::to_string(i);
      x = s.Step(c.Get("in." + p + ".model_output"), x, i);
      const at::Tensor ref = c.Get("out." + p + ".prev_sample");
      EXPECT_TRUE(RelL2Within(x, ref, 1e-6, c.name() + " out." + p));
      std::cout << "[ measured ] " << c.name() << " out." << p << ".prev_sample rel L2 " << testing::RelL2(x, ref)
                << std::endl;
    }
  }

  // The bf16 step (after SetTimesteps with the loop's step count) must match exactly.
  if (c.Has("in.bf16.model_output")) {
    int64_t loop_steps = 0;
    while (c.Has("out.loop.step" + std::to_string(loop_steps) + ".prev_sample")) ++loop_steps;
    FlowMatchEulerScheduler s = FromCase(c);
    s.SetTimesteps(loop_steps > 0 ? loop_steps : 4);
    const at::Tensor mo = c.Get("in.bf16.model_output");
    const at::Tensor prev = s.Step(mo, c.Get("in.bf16.sample"), c.Get("in.bf16.step_index").item<int64_t>());
    const at::Tensor ref = c.Get("out.bf16.prev_sample");
    EXPECT_EQ(prev.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(prev, ref)) << "bf16 step differs; max abs diff "
                                      << (prev.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<float>();
  }
}

LA_GOLDEN_CASES(GoldenScheduler, "scheduler", {"flowmatch_euler"});

TEST(FlowMatchEulerScheduler, TablesAreMonotoneAndEndAtZero) {
  FlowMatchEulerScheduler s;
  for (int64_t n : {1, 2, 4, 40}) {
    s.SetTimesteps(n);
    ASSERT_EQ(s.timesteps().numel(), n);
    ASSERT_EQ(s.sigmas().numel(), n + 1);
    EXPECT_FLOAT_EQ(s.sigmas()[0].item<float>(), 1.0f);
    EXPECT_EQ(s.sigmas()[n].item<float>(), 0.0f);
    for (int64_t i = 0; i < n; ++i) EXPECT_GT(s.sigmas()[i].item<float>(), s.sigmas()[i + 1].item<float>());
    EXPECT_TRUE(at::allclose(s.timesteps(), s.sigmas().narrow(0, 0, n) * 1000.0));
  }
}

TEST(FlowMatchEulerScheduler, StepIsEulerUpdateInOutputDtype) {
  FlowMatchEulerScheduler s(1000, 3.0);
  s.SetTimesteps(4);
  at::Tensor x = at::randn({2, 3});
  at::Tensor v = at::randn({2, 3});
  const double dt = s.sigmas()[2].item<double>() - s.sigmas()[1].item<double>();
  EXPECT_TRUE(at::allclose(s.Step(v, x, 1), x + dt * v, 1e-6, 1e-6));
  EXPECT_EQ(s.Step(v.to(at::kBFloat16), x, 1).scalar_type(), at::kBFloat16);
  // Integrating the exact velocity (x1 - x0 for a straight path) from σ=1 to 0 recovers x0.
  at::Tensor x0 = at::randn({5});
  at::Tensor noise = at::randn({5});
  at::Tensor xt = noise;
  for (int64_t i = 0; i < 4; ++i) xt = s.Step(noise - x0, xt, i);
  EXPECT_TRUE(at::allclose(xt, x0, 1e-5, 1e-5));
}

TEST(FlowMatchEulerScheduler, RejectsBadArguments) {
  FlowMatchEulerScheduler s;
  EXPECT_THROW(s.Step(at::zeros({1}), at::zeros({1}), 0), c10::Error);  // no SetTimesteps yet
  EXPECT_THROW(s.SetTimesteps(0), c10::Error);
  s.SetTimesteps(4);
  EXPECT_THROW(s.Step(at::zeros({1}), at::zeros({1}), 4), c10::Error);
  EXPECT_THROW(s.Step(at::zeros({2}), at::zeros({1}), 0), c10::Error);
}

}  // namespace
}  // namespace liveavatar::pipeline
