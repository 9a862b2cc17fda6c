// models::CheckWeights, the metadata half of LoadWeights: missing, mismatched and unexpected keys are listed
// without reading tensor data; optional specs and ignored prefixes are allowed to be absent / unused.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "liveavatar/io/tensor_store.h"
#include "liveavatar/models/weights.h"

namespace liveavatar::models {
namespace {

TEST(CheckWeightsTest, ListsEveryProblem) {
  std::map<std::string, at::Tensor> t;
  t["a.weight"] = at::zeros({4, 3});
  t["b.weight"] = at::zeros({5});
  t["extra"] = at::zeros({1});
  t["lm_head.weight"] = at::zeros({2});
  auto store = io::MakeMemoryStore(t, "mem");
  const std::vector<WeightSpec> specs = {{"a.weight", {4, 3}}, {"b.weight", {6}}, {"c.weight", {2}},
                                         {"d.weight", {2}, /*optional=*/true}};
  auto c = CheckWeights(*store, specs, {"lm_head."});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->ok());
  EXPECT_EQ(c->matched, 1u);
  ASSERT_EQ(c->missing.size(), 1u);
  EXPECT_EQ(c->missing[0], "c.weight [2]");
  ASSERT_EQ(c->mismatched.size(), 1u);
  EXPECT_EQ(c->mismatched[0], "b.weight: file [5], expected [6]");
  ASSERT_EQ(c->unexpected.size(), 1u);
  EXPECT_EQ(c->unexpected[0], "extra");

  auto ok = CheckWeights(*store, {{"a.weight", {4, 3}}, {"b.weight", {5}}, {"extra", {1}}}, {"lm_head."});
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->ok());
  EXPECT_EQ(ok->matched, 3u);
  // LoadWeights fails with the same lists.
  auto load = LoadWeights(*store, specs, LoadOptions{});
  ASSERT_FALSE(load.ok());
  EXPECT_NE(load.status().message().find("b.weight: file [5], expected [6]"), std::string::npos);
}

}  // namespace
}  // namespace liveavatar::models
