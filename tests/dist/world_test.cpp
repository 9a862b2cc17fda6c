// DetectWorld: torchrun, Open MPI and Slurm conventions, precedence and error messages.
#include <cstdlib>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "liveavatar/dist/world.h"

namespace liveavatar::dist {
namespace {

const char* const kAllVars[] = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "SLURM_LAUNCH_NODE_IPADDR"};

// Clears every launcher variable for the test's duration, sets the given ones, restores all afterwards.
class ScopedWorldEnv {
 public:
  explicit ScopedWorldEnv(const std::map<std::string, std::string>& vars) {
    for (const char* name : kAllVars) {
      const char* v = std::getenv(name);
      if (v != nullptr) saved_[name] = v;
      unsetenv(name);
    }
    for (const auto& kv : vars) setenv(kv.first.c_str(), kv.second.c_str(), 1);
  }
  ~ScopedWorldEnv() {
    for (const char* name : kAllVars) unsetenv(name);
    for (const auto& kv : saved_) setenv(kv.first.c_str(), kv.second.c_str(), 1);
  }

 private:
  std::map<std::string, std::string> saved_;
};

TEST(DetectWorldTest, NoLauncherIsASingleProcess) {
  ScopedWorldEnv env({});
  auto w = DetectWorld();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->rank, 0);
  EXPECT_EQ(w->world_size, 1);
  EXPECT_EQ(w->local_rank, 0);
  EXPECT_EQ(w->source, "single");
  EXPECT_FALSE(w->distributed());
}

TEST(DetectWorldTest, Torchrun) {
  ScopedWorldEnv env({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                      {"MASTER_ADDR", "10.0.0.7"}, {"MASTER_PORT", "29102"}});
  auto w = DetectWorld();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->source, "torchrun");
  EXPECT_EQ(w->rank, 3);
  EXPECT_EQ(w->world_size, 8);
  EXPECT_EQ(w->local_rank, 1);
  EXPECT_EQ(w->local_world_size, 2);
  EXPECT_EQ(w->master_addr, "10.0.0.7");
  EXPECT_EQ(w->master_port, 29102);
  EXPECT_TRUE(w->distributed());
}

TEST(DetectWorldTest, TorchrunDefaultsPortAndLocalRank) {
  ScopedWorldEnv env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}});
  auto w = DetectWorld();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->master_port, kDefaultMasterPort);
  EXPECT_EQ(w->local_rank, 0);
}

TEST(DetectWorldTest, OpenMpi) {
  ScopedWorldEnv env({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "6"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"},
                      {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "4000"}});
  auto w = DetectWorld();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->source, "openmpi");
  EXPECT_EQ(w->rank, 5);
  EXPECT_EQ(w->world_size, 6);
  EXPECT_EQ(w->local_rank, 2);
  EXPECT_EQ(w->local_world_size, 3);
  EXPECT_EQ(w->master_addr, "node0");
  EXPECT_EQ(w->master_port, 4000);
}

TEST(DetectWorldTest, SlurmUsesLaunchNodeAddressWithoutMasterAddr) {
  ScopedWorldEnv env({{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"},
                      {"SLURM_LAUNCH_NODE_IPADDR", "192.168.1.20"}});
  auto w = DetectWorld();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->source, "slurm");
  EXPECT_EQ(w->rank, 2);
  EXPECT_EQ(w->world_size, 4);
  EXPECT_EQ(w->local_rank, 0);
  EXPECT_EQ(w->master_addr, "192.168.1.20");
  EXPECT_EQ(w->master_port, kDefaultMasterPort);
}

TEST(DetectWorldTest, SlurmMasterAddrWins) {
  ScopedWorldEnv env({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "1"},
                      {"SLURM_LAUNCH_NODE_IPADDR", "192.168.1.20"}, {"MASTER_ADDR", "10.1.1.1"},
                      {"MASTER_PORT", "23456"}});
  auto w = DetectWorld();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->master_addr, "10.1.1.1");
  EXPECT_EQ(w->master_port, 23456);
  EXPECT_EQ(w->local_rank, 1);
}

TEST(DetectWorldTest, PrecedenceTorchrunThenOpenMpiThenSlurm) {
  {
    ScopedWorldEnv env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"OMPI_COMM_WORLD_RANK", "0"},
                        {"OMPI_COMM_WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
    auto w = DetectWorld();
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->source, "torchrun");
    EXPECT_EQ(w->rank, 1);
  }
  {
    // mpirun inside a Slurm allocation: SLURM_PROCID is the batch step's, OMPI_* is per process.
    ScopedWorldEnv env({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"MASTER_ADDR", "a"},
                        {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
    auto w = DetectWorld();
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->source, "openmpi");
    EXPECT_EQ(w->rank, 3);
  }
}

TEST(DetectWorldTest, ErrorsNameTheVariable) {
  struct Case {
    std::map<std::string, std::string> env;
    std::string expect;
  };
  const Case cases[] = {
      {{{"RANK", "0"}}, "WORLD_SIZE"},
      {{{"WORLD_SIZE", "2"}}, "RANK"},
      {{{"RANK", "two"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}, "RANK='two'"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}, "RANK=2"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}}, "MASTER_ADDR"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}, "MASTER_PORT"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE"},
      {{{"OMPI_COMM_WORLD_RANK", "1"}}, "OMPI_COMM_WORLD_SIZE"},
      {{{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}}, "SLURM_LAUNCH_NODE_IPADDR"},
      {{{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "x"}, {"MASTER_ADDR", "a"}},
       "SLURM_LOCALID"},
  };
  for (const Case& c : cases) {
    ScopedWorldEnv env(c.env);
    auto w = DetectWorld();
    ASSERT_FALSE(w.ok()) << "expected an error mentioning " << c.expect;
    EXPECT_EQ(w.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(w.status().message().find(c.expect), std::string::npos) << w.status().message();
  }
}

}  // namespace
}  // namespace liveavatar::dist
