// LaunchLocal with /bin/sh workers: environment, failure propagation (exit status, signal), escalation to
// SIGKILL, and SIGINT forwarding. Every test must finish in seconds; none may hang.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "liveavatar/dist/launcher.h"

namespace liveavatar::dist {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

LaunchResult RunShell(int nproc, const std::string& script, LaunchOptions options = {}) {
  return LaunchLocal(nproc, {"/bin/sh", "-c", script}, options);
}

std::string TempDir() {
  std::string tmpl = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : std::string("/tmp")) +
                     "/la_launcher_XXXXXX";
  char* made = mkdtemp(tmpl.data());
  return made ? std::string(made) : std::string();
}

TEST(LaunchLocalTest, WorkersSeeTorchrunEnvironment) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  LaunchOptions o;
  o.extra_env = {{"LA_TEST_DIR", dir}};
  LaunchResult r = RunShell(3,
                            "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT "
                            "$LIVEAVATAR_LOCAL_LAUNCHER\" "
                            "> \"$LA_TEST_DIR/env.$RANK\"; echo \"hello from $RANK\" >&2",
                            o);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.failed_rank, -1);
  std::string port;
  for (int rank = 0; rank < 3; ++rank) {
    std::ifstream in(dir + "/env." + std::to_string(rank));
    std::string got_rank, local, size, local_size, addr, got_port, launched;
    ASSERT_TRUE(static_cast<bool>(in >> got_rank >> local >> size >> local_size >> addr >> got_port >> launched))
        << rank;
    EXPECT_EQ(launched, "1");
    EXPECT_EQ(got_rank, std::to_string(rank));
    EXPECT_EQ(local, std::to_string(rank));
    EXPECT_EQ(size, "3");
    EXPECT_EQ(local_size, "3");
    EXPECT_EQ(addr, "127.0.0.1");
    EXPECT_GT(std::stoi(got_port), 0);
    if (rank == 0) port = got_port;
    EXPECT_EQ(got_port, port);
    std::remove((dir + "/env." + std::to_string(rank)).c_str());
  }
  rmdir(dir.c_str());
}

TEST(LaunchLocalTest, FailingWorkerStopsTheOthersAndIsNamed) {
  auto start = Clock::now();
  LaunchResult r = RunShell(3, "if [ \"$RANK\" = 1 ]; then echo 'boom: weights missing' >&2; exit 3; fi; sleep 60");
  const double seconds = SecondsSince(start);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.failed_rank, 1);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.status.message().find("worker rank 1"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("exited with status 3"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("boom: weights missing"), std::string::npos) << r.status.message();
  EXPECT_LT(seconds, 30.0);
  EXPECT_LT(seconds, 10.0);  // SIGTERM ends `sleep` at once
}

TEST(LaunchLocalTest, KilledWorkerIsNamedWithItsSignal) {
  auto start = Clock::now();
  LaunchResult r = RunShell(4, "if [ \"$RANK\" = 2 ]; then sleep 0.2; kill -9 $$; fi; sleep 60");
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.failed_rank, 2);
  EXPECT_EQ(r.exit_code, 128 + 9);
  EXPECT_NE(r.status.message().find("worker rank 2"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("signal 9"), std::string::npos) << r.status.message();
  EXPECT_LT(SecondsSince(start), 30.0);
}

TEST(LaunchLocalTest, WorkersIgnoringSigtermAreKilledAfterTheGrace) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  LaunchOptions o;
  o.kill_grace = std::chrono::milliseconds(1000);
  o.extra_env = {{"LA_TEST_DIR", dir}};
  // Rank 1 ignores SIGTERM; rank 0 fails once rank 1 is known to ignore it.
  LaunchResult r = RunShell(2,
                            "if [ \"$RANK\" = 0 ]; then"
                            "  while [ ! -e \"$LA_TEST_DIR/trapped\" ]; do sleep 0.05; done; exit 5; "
                            "fi; trap '' TERM; touch \"$LA_TEST_DIR/trapped\"; sleep 60",
                            o);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.failed_rank, 0);
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.status.message().find("were killed"), std::string::npos) << r.status.message();
  std::remove((dir + "/trapped").c_str());
  rmdir(dir.c_str());
}

TEST(LaunchLocalTest, SigintIsForwardedToEveryWorker) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  LaunchOptions o;
  o.extra_env = {{"LA_TEST_DIR", dir}};
  auto future = std::async(std::launch::async, [&] {
    return RunShell(2, "touch \"$LA_TEST_DIR/started.$RANK\"; sleep 60", o);
  });
  // Wait until both workers run (so the launcher's handler is installed), then interrupt the launcher.
  auto start = Clock::now();
  struct stat st;
  while ((stat((dir + "/started.0").c_str(), &st) != 0 || stat((dir + "/started.1").c_str(), &st) != 0) &&
         SecondsSince(start) < 10.0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_LT(SecondsSince(start), 10.0) << "workers did not start";
  kill(getpid(), SIGINT);
  ASSERT_EQ(future.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  LaunchResult r = future.get();
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.exit_code, 128 + SIGINT);
  EXPECT_NE(r.status.message().find("interrupted"), std::string::npos) << r.status.message();
  std::remove((dir + "/started.0").c_str());
  std::remove((dir + "/started.1").c_str());
  rmdir(dir.c_str());
}

TEST(LaunchLocalTest, BadArguments) {
  EXPECT_EQ(LaunchLocal(0, {"/bin/true"}).status.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(LaunchLocal(2, {}).status.code(), Status::Code::kInvalidArgument);
  LaunchResult r = LaunchLocal(2, {"/nonexistent/liveavatar-worker"});
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.status.message().find("exec failed"), std::string::npos) << r.status.message();
}

TEST(LaunchLocalTest, WorkerCommandLineStripsTheLauncherFlag) {
  const char* argv[] = {"liveavatar", "generate", "--nproc_per_node", "4", "--size", "704*384",
                        "--nproc_per_node=2", "--prompt", "a dwarf"};
  std::vector<std::string> cmd = WorkerCommandLine(9, argv);
  ASSERT_EQ(cmd.size(), 6u);
  EXPECT_EQ(cmd[0].front(), '/');  // the running executable, absolute
  EXPECT_EQ(cmd[1], "generate");
  EXPECT_EQ(cmd[2], "--size");
  EXPECT_EQ(cmd[3], "704*384");
  EXPECT_EQ(cmd[4], "--prompt");
  EXPECT_EQ(cmd[5], "a dwarf");
}

TEST(LaunchLocalTest, PickFreePortGivesAUsablePort) {
  auto port = PickFreePort("127.0.0.1");
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace liveavatar::dist
