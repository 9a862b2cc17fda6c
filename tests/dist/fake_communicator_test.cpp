// The in-process fake backend: identity collectives of a world of one, the same argument checks as the real
// backends, and the NotSupported contract of the Communicator base.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"

namespace liveavatar::dist {
namespace {

TEST(FakeCommunicatorTest, IdentityCollectives) {
  CommunicatorPtr comm = MakeFakeCommunicator();
  EXPECT_STREQ(comm->BackendName(), "fake");
  EXPECT_EQ(comm->Rank(), 0);
  EXPECT_EQ(comm->Size(), 1);

  at::Tensor in = at::arange(12, at::kFloat).view({3, 4});
  at::Tensor out = at::zeros({3, 4});
  ASSERT_TRUE(comm->AllGatherIntoTensor(out, in)->Wait().ok());
  EXPECT_TRUE(out.equal(in));

  at::Tensor a2a = at::zeros({3, 4});
  ASSERT_TRUE(comm->AllToAll(a2a, in)->Wait().ok());
  EXPECT_TRUE(a2a.equal(in));
  AllToAllOptions uneven;
  uneven.input_split_sizes = {3};
  uneven.output_split_sizes = {3};
  a2a.zero_();
  ASSERT_TRUE(comm->AllToAll(a2a, in, uneven)->Wait().ok());
  EXPECT_TRUE(a2a.equal(in));

  at::Tensor b = in.clone();
  ASSERT_TRUE(comm->Broadcast(b)->Wait().ok());
  EXPECT_TRUE(b.equal(in));
  ASSERT_TRUE(comm->AllReduceSum(b)->Wait().ok());
  EXPECT_TRUE(b.equal(in));
  ASSERT_TRUE(comm->Barrier()->Wait().ok());

  at::Tensor rs = at::zeros({12});
  ASSERT_TRUE(comm->ReduceScatterSum(rs, in)->Wait().ok());
  EXPECT_TRUE(rs.equal(in.view({-1})));

  at::Tensor got = at::zeros({3, 4});
  P2POptions tag7;
  tag7.tag = 7;
  ASSERT_TRUE(comm->Send(in, 0, tag7)->Wait().ok());
  ASSERT_TRUE(comm->Recv(got, 0, tag7)->Wait().ok());
  EXPECT_TRUE(got.equal(in));
  // Nothing left to receive: an error instead of a hang.
  Status s = comm->Recv(got, 0, tag7)->Wait();
  EXPECT_EQ(s.code(), Status::Code::kDeadlineExceeded) << s.ToString();

  auto sub = comm->NewGroup({0});
  ASSERT_TRUE(sub.ok());
  ASSERT_NE(sub->get(), nullptr);
  EXPECT_EQ((*sub)->Size(), 1);
}

TEST(FakeCommunicatorTest, ArgumentErrors) {
  CommunicatorPtr comm = MakeFakeCommunicator();
  at::Tensor in = at::ones({4, 2});
  Status s = comm->AllGatherIntoTensor(at::zeros({5, 2}), in)->Wait();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("all_gather_into_tensor"), std::string::npos) << s.message();

  s = comm->AllGatherIntoTensor(at::zeros({4, 2}, at::kDouble), in)->Wait();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);

  AllToAllOptions bad;
  bad.input_split_sizes = {3};
  s = comm->AllToAll(at::zeros({4, 2}), in, bad)->Wait();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("sum to 3"), std::string::npos) << s.message();

  s = comm->AllToAll(at::zeros({4, 3}), in)->Wait();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);

  s = comm->AllGatherIntoTensor(at::zeros({4, 2}), at::ones({2, 4}).t())->Wait();
  EXPECT_NE(s.message().find("contiguous"), std::string::npos) << s.message();

  BroadcastOptions root1;
  root1.root = 1;
  EXPECT_EQ(comm->Broadcast(in, root1)->Wait().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(comm->Send(in, 1)->Wait().code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(comm->NewGroup({0, 1}).ok());
  EXPECT_FALSE(comm->NewGroup({}).ok());
}

// A backend that implements nothing: every op fails naming the backend and the op.
class NothingCommunicator : public Communicator {
 public:
  const char* BackendName() const override { return "nothing"; }
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  std::string GroupName() const override { return "world"; }
  Milliseconds DefaultTimeout() const override { return Milliseconds(1000); }
};

TEST(CommunicatorTest, UnsupportedOpsNameBackendAndOp) {
  NothingCommunicator comm;
  at::Tensor t = at::ones({2});
  struct Case {
    WorkPtr work;
    const char* op;
  };
  const Case cases[] = {
      {comm.AllGatherIntoTensor(t, t), "all_gather_into_tensor"},
      {comm.AllToAll(t, t), "all_to_all"},
      {comm.Broadcast(t), "broadcast"},
      {comm.Send(t, 0), "send"},
      {comm.Recv(t, 0), "recv"},
      {comm.Barrier(), "barrier"},
      {comm.AllReduceSum(t), "all_reduce"},
      {comm.ReduceScatterSum(t, t), "reduce_scatter"},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(c.work->IsCompleted());
    Status s = c.work->Wait();
    EXPECT_EQ(s.code(), Status::Code::kNotSupported);
    EXPECT_EQ(s.message(), std::string("Backend nothing does not support ") + c.op);
  }
  auto g = comm.NewGroup({0});
  EXPECT_EQ(g.status().code(), Status::Code::kNotSupported);
}

TEST(CommunicatorTest, BackendNamesAndTimeouts) {
  EXPECT_EQ(ParseBackendKind("gloo").value(), BackendKind::kGloo);
  EXPECT_EQ(ParseBackendKind("nccl").value(), BackendKind::kNccl);
  auto bad = ParseBackendKind("mpi", "--backend");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--backend"), std::string::npos);

  EXPECT_TRUE(BackendCompiled(BackendKind::kFake));
  EXPECT_TRUE(BackendCompiled(BackendKind::kAuto));
  EXPECT_EQ(ResolveTimeout(Milliseconds(1234)).value(), Milliseconds(1234));
  setenv("LIVEAVATAR_DIST_TIMEOUT_S", "2.5", 1);
  EXPECT_EQ(ResolveTimeout(Milliseconds(0)).value(), Milliseconds(2500));
  setenv("LIVEAVATAR_DIST_TIMEOUT_S", "soon", 1);
  auto r = ResolveTimeout(Milliseconds(0));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("LIVEAVATAR_DIST_TIMEOUT_S"), std::string::npos);
  unsetenv("LIVEAVATAR_DIST_TIMEOUT_S");
  EXPECT_EQ(ResolveTimeout(Milliseconds(0)).value(), kDefaultCollectiveTimeout);
}

TEST(CommunicatorTest, InitSingleProcessWorld) {
  WorldInfo single;
  single.master_port = PickFreePort().value();  // auto picks NCCL (and a store) in CUDA builds
  CommOptions options;
  options.backend = BackendKind::kAuto;
  auto comm = InitCommunicator(single, options);
  ASSERT_TRUE(comm.ok()) << comm.status().ToString();
  EXPECT_EQ((*comm)->Size(), 1);
  WorldInfo two;
  two.world_size = 2;
  options.backend = BackendKind::kFake;
  EXPECT_EQ(InitCommunicator(two, options).status().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace liveavatar::dist
