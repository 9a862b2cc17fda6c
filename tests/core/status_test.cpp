#include "liveavatar/core/status.h"

#include <gtest/gtest.h>

namespace liveavatar {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status Chain(int x, int* out) {
  LA_ASSIGN_OR_RETURN(int h, Half(x));
  LA_ASSIGN_OR_RETURN(int q, Half(h));
  *out = q;
  return Status::Ok();
}

TEST(Status, PropagatesFirstError) {
  int v = 0;
  EXPECT_TRUE(Chain(8, &v).ok());
  EXPECT_EQ(v, 2);
  Status s = Chain(6, &v);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "odd: 3");
  EXPECT_EQ(s.WithPrefix("ctx").ToString(), "Invalid argument: ctx: odd: 3");
}

TEST(Status, ValueOnErrorThrows) {
  StatusOr<int> r = Half(3);
  EXPECT_THROW(r.value(), StatusError);
  StatusOr<int> bad = Status::Ok();
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace liveavatar
