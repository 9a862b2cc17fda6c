// Multi-process tests of the Gloo backend on 127.0.0.1 (dist_test_harness.h: a copy of the test binary started
// with LA_DIST_TEST_SCENARIO set runs that scenario as one rank and exits with 0 or 1).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "dist/dist_test_harness.h"
#include "liveavatar/dist/communicator.h"
#include "liveavatar/dist/launcher.h"
#include "liveavatar/dist/world.h"

namespace liveavatar::dist {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kScenarioEnv[] = "LA_DIST_TEST_SCENARIO";

// ---------------------------------------------------------------------------------------------------------------
// Worker side.

// The value rank `r` contributes: distinct per rank and element, exactly representable in bf16 for small sizes.
at::Tensor Data(int r, int64_t rows, int64_t cols, at::ScalarType dtype = at::kFloat) {
  return (at::arange(rows * cols, at::kFloat).view({rows, cols}) * 0.5 + 100.0 * r + 0.25).to(dtype);
}

// Rows rank i sends to rank j in the uneven all-to-all (zero for some pairs).
int64_t UnevenRows(int i, int j) { return (i + 2 * j) % 3; }

int CheckCollectives(Communicator& comm, at::ScalarType dtype) {
  const int rank = comm.Rank();
  const int size = comm.Size();
  const std::string dt = c10::toString(dtype);

  {  // all_gather_into_tensor
    at::Tensor in = Data(rank, 2, 3, dtype);
    at::Tensor out = at::full({size * 2, 3}, -1.0, at::TensorOptions().dtype(dtype));
    Status s = comm.AllGatherIntoTensor(out, in)->Wait();
    WORKER_OK(s);
    std::vector<at::Tensor> parts;
    for (int r = 0; r < size; ++r) parts.push_back(Data(r, 2, 3, dtype));
    WORKER_CHECK(out.equal(at::cat(parts, 0)), "all_gather_into_tensor " + dt);
  }
  {  // all_to_all, equal splits
    at::Tensor in = Data(rank, size * 2, 3, dtype);
    at::Tensor out = at::full({size * 2, 3}, -1.0, at::TensorOptions().dtype(dtype));
    Status s = comm.AllToAll(out, in)->Wait();
    WORKER_OK(s);
    std::vector<at::Tensor> parts;
    for (int j = 0; j < size; ++j) parts.push_back(Data(j, size * 2, 3, dtype).narrow(0, rank * 2, 2));
    WORKER_CHECK(out.equal(at::cat(parts, 0)), "all_to_all equal " + dt);
  }
  {  // all_to_all, uneven splits (some zero)
    AllToAllOptions o;
    int64_t in_rows = 0, out_rows = 0;
    for (int j = 0; j < size; ++j) {
      o.input_split_sizes.push_back(UnevenRows(rank, j));
      o.output_split_sizes.push_back(UnevenRows(j, rank));
      in_rows += UnevenRows(rank, j);
      out_rows += UnevenRows(j, rank);
    }
    at::Tensor in = Data(rank, in_rows, 4, dtype);
    at::Tensor out = at::full({out_rows, 4}, -1.0, at::TensorOptions().dtype(dtype));
    Status s = comm.AllToAll(out, in, o)->Wait();
    WORKER_OK(s);
    std::vector<at::Tensor> parts;
    for (int j = 0; j < size; ++j) {
      int64_t their_rows = 0, offset = 0;
      for (int k = 0; k < size; ++k) {
        if (k < rank) offset += UnevenRows(j, k);
        their_rows += UnevenRows(j, k);
      }
      parts.push_back(Data(j, their_rows, 4, dtype).narrow(0, offset, UnevenRows(j, rank)));
    }
    WORKER_CHECK(out.equal(at::cat(parts, 0)), "all_to_all uneven " + dt);
  }
  {  // broadcast from the last rank
    at::Tensor t = Data(rank, 3, 2, dtype);
    BroadcastOptions o;
    o.root = size - 1;
    Status s = comm.Broadcast(t, o)->Wait();
    WORKER_OK(s);
    WORKER_CHECK(t.equal(Data(size - 1, 3, 2, dtype)), "broadcast " + dt);
  }
  if (size > 1) {  // send/recv around the ring (both issued before either is waited for)
    at::Tensor mine = Data(rank, 2, 2, dtype);
    at::Tensor got = at::full({2, 2}, -1.0, at::TensorOptions().dtype(dtype));
    P2POptions o;
    o.tag = 3;
    WorkPtr send = comm.Send(mine, (rank + 1) % size, o);
    WorkPtr recv = comm.Recv(got, (rank + size - 1) % size, o);
    Status s1 = send->Wait();
    Status s2 = recv->Wait();
    WORKER_OK(s1);
    WORKER_OK(s2);
    WORKER_CHECK(got.equal(Data((rank + size - 1) % size, 2, 2, dtype)), "send/recv ring " + dt);
  }
  {  // all_reduce (sum)
    at::Tensor t = Data(rank, 3, 4, dtype);
    Status s = comm.AllReduceSum(t)->Wait();
    WORKER_OK(s);
    at::Tensor expect = at::zeros({3, 4});
    for (int r = 0; r < size; ++r) expect += Data(r, 3, 4, dtype).to(at::kFloat);
    // Gloo sums fp16 in fp16 (rounding at every step); every other dtype must match exactly.
    const bool close = dtype == at::kHalf ? at::allclose(t.to(at::kFloat), expect, 1e-3, 1.0) : t.equal(expect.to(dtype));
    WORKER_CHECK(close, "all_reduce " + dt);
  }
  {  // all_reduce (max): exact in every dtype; rank r holds r at one position and -r elsewhere
    at::Tensor t = -Data(rank, 3, 4, dtype);
    t.view({-1})[rank % 12] = 100 + rank;
    Status s = comm.AllReduceMax(t)->Wait();
    WORKER_OK(s);
    at::Tensor expect = -Data(0, 3, 4, dtype).to(at::kFloat);
    for (int r = 1; r < size; ++r) expect = at::maximum(expect, -Data(r, 3, 4, dtype).to(at::kFloat));
    for (int r = 0; r < size; ++r) {
      auto e = expect.view({-1});
      e[r % 12] = std::max(e[r % 12].item<float>(), 100.0f + r);
    }
    WORKER_CHECK(t.to(at::kFloat).equal(expect), "all_reduce max " + dt);
  }
  {  // reduce_scatter (sum)
    at::Tensor in = Data(rank, size * 2, 3, dtype);
    at::Tensor out = at::full({2, 3}, -1.0, at::TensorOptions().dtype(dtype));
    Status s = comm.ReduceScatterSum(out, in)->Wait();
    WORKER_OK(s);
    at::Tensor expect = at::zeros({2, 3});
    for (int r = 0; r < size; ++r) expect += Data(r, size * 2, 3, dtype).to(at::kFloat).narrow(0, rank * 2, 2);
    WORKER_CHECK(out.equal(expect.to(dtype)), "reduce_scatter " + dt);
  }
  Status s = comm.Barrier()->Wait();
  WORKER_OK(s);
  return 0;
}

int CheckGroups(Communicator& world) {
  const int rank = world.Rank();
  const int size = world.Size();
  // Even and odd ranks.
  std::vector<int> evens, odds;
  for (int r = 0; r < size; ++r) (r % 2 == 0 ? evens : odds).push_back(r);
  auto even_group = world.NewGroup(evens);
  auto odd_group = world.NewGroup(odds);
  WORKER_OK(even_group.status().ok() ? Status::Ok() : even_group.status());
  WORKER_OK(odd_group.status().ok() ? Status::Ok() : odd_group.status());
  CommunicatorPtr mine = rank % 2 == 0 ? *even_group : *odd_group;
  CommunicatorPtr other = rank % 2 == 0 ? *odd_group : *even_group;
  WORKER_CHECK(mine != nullptr && other == nullptr, "membership of even/odd groups");
  const std::vector<int>& members = rank % 2 == 0 ? evens : odds;
  WORKER_CHECK(mine->Size() == static_cast<int>(members.size()) && mine->Rank() == rank / 2, "group rank/size");
  at::Tensor out = at::zeros({mine->Size() * 2, 3});
  Status s = mine->AllGatherIntoTensor(out, Data(rank, 2, 3))->Wait();
  WORKER_OK(s);
  std::vector<at::Tensor> parts;
  for (int g : members) parts.push_back(Data(g, 2, 3));
  WORKER_CHECK(out.equal(at::cat(parts, 0)), "all_gather in " + mine->GroupName());
  WORKER_CHECK(CheckCollectives(*mine, at::kFloat) == 0, "collectives in " + mine->GroupName());

  // Everyone but rank 0.
  std::vector<int> rest;
  for (int r = 1; r < size; ++r) rest.push_back(r);
  auto rest_group = world.NewGroup(rest);
  WORKER_OK(rest_group.status().ok() ? Status::Ok() : rest_group.status());
  WORKER_CHECK((rank == 0) == (*rest_group == nullptr), "membership of ranks 1..n-1");
  if (rank != 0) {
    at::Tensor t = at::full({4}, static_cast<double>(rank));
    s = (*rest_group)->AllReduceSum(t)->Wait();
    WORKER_OK(s);
    WORKER_CHECK(t.equal(at::full({4}, size * (size - 1) / 2.0)), "all_reduce in ranks 1..n-1");
  }
  s = world.Barrier()->Wait();
  WORKER_OK(s);
  return 0;
}

StatusOr<CommunicatorPtr> JoinWorld() {
  LA_ASSIGN_OR_RETURN(WorldInfo world, DetectWorld());
  CommOptions options;
  options.backend = BackendKind::kGloo;
  options.timeout = std::chrono::seconds(30);
  return InitCommunicator(world, options);
}

int RunCollectives() {
  auto comm = JoinWorld();
  int rank = -1;
  WORKER_OK(comm.status().ok() ? Status::Ok() : comm.status());
  rank = (*comm)->Rank();
  WORKER_CHECK(std::string((*comm)->BackendName()) == "gloo", "backend name");
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf, at::kLong}) {
    if (CheckCollectives(**comm, dt) != 0) return 1;
  }
  {  // bool moves bit for bit (reinterpreted), too
    at::Tensor in = (Data(rank, 2, 3).to(at::kLong) % 2).to(at::kBool);
    at::Tensor out = at::zeros({(*comm)->Size() * 2, 3}, at::kBool);
    Status s = (*comm)->AllGatherIntoTensor(out, in)->Wait();
    WORKER_OK(s);
    WORKER_CHECK(out.narrow(0, rank * 2, 2).equal(in), "bool all_gather");
  }
  {  // argument errors are local: no communication, no sequence number consumed
    Status s = (*comm)->AllReduceSum(at::ones({4}, at::kBool))->Wait();
    WORKER_CHECK(s.code() == Status::Code::kNotSupported &&
                     s.message() == "Backend gloo does not support all_reduce on dtype Bool",
                 "bool all_reduce: " + s.ToString());
    AllToAllOptions bad;
    bad.input_split_sizes = {1};
    s = (*comm)->AllToAll(at::zeros({2, 2}), at::zeros({2, 2}), bad)->Wait();
    WORKER_CHECK(s.code() == Status::Code::kInvalidArgument, "split count check: " + s.ToString());
    s = (*comm)->Send(at::zeros({2}), rank)->Wait();
    WORKER_CHECK(s.code() == Status::Code::kInvalidArgument, "send to self: " + s.ToString());
  }
  return CheckGroups(**comm);
}

// The same collectives through the host-staging wrapper (--max_gpu_mem_gb with ranks sharing a GPU), forced to
// stage CPU tensors: every op goes through host copies, results are copied back at Wait().
int RunStaged() {
  auto joined = JoinWorld();
  int rank = -1;
  WORKER_OK(joined.status().ok() ? Status::Ok() : joined.status());
  CommunicatorPtr comm = MakeHostStagedCommunicator(*joined, /*always_stage=*/true);
  rank = comm->Rank();
  WORKER_CHECK(std::string(comm->BackendName()) == "gloo+host", "backend name");
  WORKER_CHECK(!UsesHostStaging(WorldInfo{}, BackendKind::kGloo) || at::hasCUDA(), "staging without a GPU");
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    if (CheckCollectives(*comm, dt) != 0) return 1;
  }
  return CheckGroups(*comm);
}

int RunNeverJoined() {
  auto comm = JoinWorld();
  int rank = -1;
  WORKER_OK(comm.status().ok() ? Status::Ok() : comm.status());
  rank = (*comm)->Rank();
  Status s = (*comm)->Barrier()->Wait();
  WORKER_OK(s);
  auto pair = (*comm)->NewGroup({0, 1});
  WORKER_OK(pair.status().ok() ? Status::Ok() : pair.status());
  if (rank != 0) {
    // Never joins the all_reduce; stays alive well past rank 0's timeout.
    std::this_thread::sleep_for(std::chrono::seconds(4));
    return 0;
  }
  {  // a receive whose send never comes
    P2POptions p2p;
    p2p.timeout = std::chrono::milliseconds(1000);
    p2p.tag = 5;
    at::Tensor buf = at::zeros({4});
    s = (*pair)->Recv(buf, 1, p2p)->Wait();
    std::fprintf(stderr, "rank 0 got: %s\n", s.ToString().c_str());
    WORKER_CHECK(s.code() == Status::Code::kDeadlineExceeded, "recv timeout must be DeadlineExceeded: " + s.ToString());
    WORKER_CHECK(s.message().find("gloo recv") != std::string::npos, "message names the op");
    WORKER_CHECK(s.message().find("rank 1 did not post the matching send (tag 5)") != std::string::npos,
                 "message names the peer");
  }
  CollectiveOptions o;
  o.timeout = std::chrono::milliseconds(1500);
  at::Tensor t = at::ones({8});
  auto start = Clock::now();
  s = (*comm)->AllReduceSum(t, o)->Wait();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr, "rank 0 got (%.2f s): %s\n", seconds, s.ToString().c_str());
  WORKER_CHECK(s.code() == Status::Code::kDeadlineExceeded, "timeout must be DeadlineExceeded: " + s.ToString());
  WORKER_CHECK(s.message().find("all_reduce") != std::string::npos, "message names the op");
  WORKER_CHECK(s.message().find("rank 1 never joined") != std::string::npos, "message names the missing rank");
  WORKER_CHECK(s.message().find("rank 0 of 2") != std::string::npos, "message names this rank");
  WORKER_CHECK(seconds >= 1.0 && seconds < 10.0, "timeout honoured: " + std::to_string(seconds) + " s");
  // The communicator is broken now: later ops fail at once.
  start = Clock::now();
  s = (*comm)->Barrier()->Wait();
  WORKER_CHECK(!s.ok() && s.message().find("broken") != std::string::npos, "later op fails: " + s.ToString());
  WORKER_CHECK(Clock::now() - start < std::chrono::seconds(1), "later op fails at once");
  // Releasing a broken communicator must not wait for the absent peer (rank 1 is still asleep).
  start = Clock::now();
  comm = Status::Internal("released");
  WORKER_CHECK(Clock::now() - start < std::chrono::milliseconds(500), "releasing a broken communicator blocks");
  return 0;
}

int RunScenario(const std::string& scenario) {
  alarm(60);  // a hung worker dies (and the launcher reports it) instead of hanging the test
  int rank = -1;
  if (scenario == "collectives") return RunCollectives();
  if (scenario == "never_joined") return RunNeverJoined();
  if (scenario == "staged") return RunStaged();
  WORKER_CHECK(false, "unknown scenario " + scenario);
  return 1;
}

LA_DIST_WORKER_HOOK(kScenarioEnv, RunScenario);

// ---------------------------------------------------------------------------------------------------------------
// Test side.

LaunchResult RunWorkers(int nproc, const std::string& scenario) {
  return testutil::RunScenarioWorkers(kScenarioEnv, nproc, scenario);
}

TEST(GlooCommunicatorTest, CollectivesMatchSingleProcessOnTwoRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(2, "collectives");
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(GlooCommunicatorTest, CollectivesMatchSingleProcessOnFourRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(4, "collectives");
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(GlooCommunicatorTest, HostStagedCollectivesMatchSingleProcessOnThreeRanks) {
  SKIP_WITHOUT_GLOO();
  LaunchResult r = RunWorkers(3, "staged");
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
}

TEST(GlooCommunicatorTest, CollectiveThatOneRankNeverJoinsTimesOut) {
  SKIP_WITHOUT_GLOO();
  auto start = Clock::now();
  LaunchResult r = RunWorkers(2, "never_joined");
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
}

TEST(GlooCommunicatorTest, RendezvousWithoutMasterFailsNamingTheAddress) {
  SKIP_WITHOUT_GLOO();
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok());
  WorldInfo w;
  w.rank = 1;
  w.world_size = 2;
  w.master_port = *port;  // nobody listens there
  CommOptions o;
  o.backend = BackendKind::kGloo;
  o.rendezvous_timeout = std::chrono::milliseconds(1000);
  auto start = Clock::now();
  auto comm = InitCommunicator(w, o);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), Status::Code::kUnavailable);
  EXPECT_NE(comm.status().message().find("127.0.0.1:" + std::to_string(*port)), std::string::npos)
      << comm.status().message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(15));
}

}  // namespace
}  // namespace liveavatar::dist
