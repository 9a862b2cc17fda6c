// LaunchLocal: fork/exec N workers with a torchrun-style environment, relay their stderr with a rank prefix,
// forward SIGINT/SIGTERM, and tear the group down when one worker fails (see dist/launcher.h).
#include "liveavatar/dist/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace liveavatar::dist {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kTailLines = 8;

// Signal forwarding state (read by the handler; written only while SIGINT/SIGTERM are blocked).
pid_t* volatile g_pids = nullptr;
volatile int g_num_pids = 0;
volatile sig_atomic_t g_received_signal = 0;

void ForwardSignal(int sig) {
  g_received_signal = sig;
  pid_t* pids = g_pids;
  for (int i = 0; i < g_num_pids; ++i) {
    if (pids[i] > 0 && kill(-pids[i], sig) != 0) kill(pids[i], sig);
  }
}

struct Worker {
  pid_t pid = -1;
  int err_fd = -1;  // read end of the stderr pipe, -1 when closed or not piped
  bool exited = false;
  int wait_status = 0;
  std::string partial;            // incomplete stderr line
  std::deque<std::string> tail;   // last stderr lines
};

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = strsignal(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "ended with wait status " + std::to_string(status);
}

bool Failed(int status) { return !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }

int ExitCodeFor(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

void WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

void EmitLine(Worker& w, int rank, const std::string& line, bool prefix) {
  WriteAll(STDERR_FILENO, (prefix ? "[rank " + std::to_string(rank) + "] " : std::string()) + line + "\n");
  w.tail.push_back(line);
  if (w.tail.size() > kTailLines) w.tail.pop_front();
}

// Reads what is available on w.err_fd; closes it at EOF.
void Drain(Worker& w, int rank, bool prefix) {
  char buf[4096];
  while (w.err_fd >= 0) {
    ssize_t n = ::read(w.err_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      if (!w.partial.empty()) EmitLine(w, rank, w.partial, prefix);
      w.partial.clear();
      ::close(w.err_fd);
      w.err_fd = -1;
      return;
    }
    w.partial.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = w.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      EmitLine(w, rank, w.partial.substr(start, nl - start), prefix);
    }
    w.partial.erase(0, start);
  }
}

void SignalAll(std::vector<Worker>& workers, int sig) {
  for (Worker& w : workers) {
    if (!w.exited && w.pid > 0 && kill(-w.pid, sig) != 0) kill(w.pid, sig);
  }
}

}  // namespace

StatusOr<int> PickFreePort(const std::string& addr) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(std::string("PickFreePort: socket: ") + std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = 0;
  if (inet_pton(AF_INET, addr.c_str(), &sa.sin_addr) != 1) sa.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(sa);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    int err = errno;
    ::close(fd);
    return Status::IOError("PickFreePort: cannot bind a port on " + addr + ": " + std::strerror(err));
  }
  ::close(fd);
  return static_cast<int>(ntohs(sa.sin_port));
}

std::vector<std::string> WorkerCommandLine(int argc, const char* const* argv,
                                           const std::vector<std::string>& strip_flags) {
  std::vector<std::string> out;
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    out.emplace_back(self, static_cast<size_t>(n));
  } else if (argc > 0) {
    out.emplace_back(argv[0]);
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    bool stripped = false;
    for (const std::string& flag : strip_flags) {
      if (arg == flag) {
        ++i;  // skip the value too
        stripped = true;
      } else if (arg.rfind(flag + "=", 0) == 0) {
        stripped = true;
      }
      if (stripped) break;
    }
    if (!stripped) out.push_back(arg);
  }
  return out;
}

LaunchResult LaunchLocal(int nproc, const std::vector<std::string>& argv, const LaunchOptions& options) {
  LaunchResult result;
  if (nproc < 1) {
    result.status = Status::InvalidArgument("--nproc_per_node must be >= 1, got " + std::to_string(nproc));
    result.exit_code = 2;
    return result;
  }
  if (argv.empty() || argv[0].empty()) {
    result.status = Status::InvalidArgument("LaunchLocal: empty worker command line");
    result.exit_code = 2;
    return result;
  }
  int port = options.master_port;
  if (port == 0) {
    auto picked = PickFreePort(options.master_addr);
    if (!picked.ok()) {
      result.status = picked.status();
      result.exit_code = 1;
      return result;
    }
    port = *picked;
  }

  // Everything the children need is built before fork: only async-signal-safe calls happen in between.
  std::vector<std::pair<std::string, std::string>> common = {
      {"WORLD_SIZE", std::to_string(nproc)},
      {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", options.master_addr},
      {"MASTER_PORT", std::to_string(port)},
      {"LIVEAVATAR_LOCAL_LAUNCHER", "1"},
  };
  for (const auto& kv : options.extra_env) common.push_back(kv);
  std::vector<std::vector<std::string>> env_strings(nproc);
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::pair<std::string, std::string>> ours = common;
    ours.insert(ours.begin(), {{"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)}});
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string entry(*e);
      std::string name = entry.substr(0, entry.find('='));
      bool overridden = false;
      for (const auto& kv : ours) overridden |= kv.first == name;
      if (!overridden) env_strings[r].push_back(entry);
    }
    // Later duplicates (extra_env) override earlier ones: keep the last of each name.
    for (size_t i = 0; i < ours.size(); ++i) {
      bool later = false;
      for (size_t j = i + 1; j < ours.size(); ++j) later |= ours[j].first == ours[i].first;
      if (!later) env_strings[r].push_back(ours[i].first + "=" + ours[i].second);
    }
  }
  std::vector<std::vector<char*>> envps(nproc);
  for (int r = 0; r < nproc; ++r) {
    for (auto& s : env_strings[r]) envps[r].push_back(s.data());
    envps[r].push_back(nullptr);
  }
  const std::string exec_failed = "LaunchLocal: exec failed for " + argv[0] + " (not found or not executable)\n";
  std::vector<std::string> argv_copy = argv;
  std::vector<char*> args;
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);

  std::vector<Worker> workers(nproc);
  std::vector<pid_t> pids(nproc, -1);

  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  g_received_signal = 0;
  g_pids = pids.data();
  g_num_pids = nproc;
  struct sigaction sa {};
  sa.sa_handler = ForwardSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  Status start_error;
  const pid_t launcher_pid = ::getpid();
  for (int r = 0; r < nproc; ++r) {
    int fds[2] = {-1, -1};
    if (options.prefix_stderr && ::pipe2(fds, O_CLOEXEC) != 0) {
      start_error = Status::IOError(std::string("LaunchLocal: pipe: ") + std::strerror(errno));
      break;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      start_error = Status::IOError("LaunchLocal: fork for rank " + std::to_string(r) + ": " + std::strerror(errno));
      if (fds[0] >= 0) {
        ::close(fds[0]);
        ::close(fds[1]);
      }
      break;
    }
    if (pid == 0) {
      // Child: own process group, default signal dispositions, stderr into the pipe, then exec. If the launcher
      // dies (even by SIGKILL) the kernel sends SIGTERM, whose handler in the worker removes partial outputs.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher_pid) _exit(1);  // the launcher died before prctl took effect
      setpgid(0, 0);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      sigprocmask(SIG_SETMASK, &old_mask, nullptr);
      if (fds[1] >= 0) dup2(fds[1], STDERR_FILENO);
      environ = envps[r].data();
      execvp(args[0], args.data());
      ssize_t ignored = ::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
      (void)ignored;
      _exit(127);
    }
    setpgid(pid, pid);  // also done by the child; whichever runs first wins
    pids[r] = pid;
    workers[r].pid = pid;
    if (fds[0] >= 0) {
      ::close(fds[1]);
      ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
      workers[r].err_fd = fds[0];
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  int first_failed = -1;
  bool tearing_down = !start_error.ok();
  if (tearing_down) SignalAll(workers, SIGTERM);
  Clock::time_point kill_deadline = Clock::now() + options.kill_grace;
  Clock::time_point all_exited_at{};
  bool killed = false;
  int handled_signal = 0;

  for (;;) {
    // Relay stderr.
    std::vector<pollfd> pfds;
    std::vector<int> owners;
    for (int r = 0; r < nproc; ++r) {
      if (workers[r].err_fd >= 0) {
        pfds.push_back({workers[r].err_fd, POLLIN, 0});
        owners.push_back(r);
      }
    }
    if (!pfds.empty()) {
      int n = ::poll(pfds.data(), pfds.size(), 50);
      if (n > 0) {
        for (size_t i = 0; i < pfds.size(); ++i) {
          if (pfds[i].revents != 0) Drain(workers[owners[i]], owners[i], options.prefix_stderr);
        }
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }

    // A forwarded SIGINT/SIGTERM: the workers already got it; escalate after the grace period.
    if (g_received_signal != 0 && handled_signal == 0) {
      handled_signal = g_received_signal;
      if (!tearing_down) {
        tearing_down = true;
        kill_deadline = Clock::now() + options.kill_grace;
      }
    }

    // Reap.
    bool all_exited = true;
    for (int r = 0; r < nproc; ++r) {
      Worker& w = workers[r];
      if (w.pid <= 0 || w.exited) continue;
      int status = 0;
      pid_t got = ::waitpid(w.pid, &status, WNOHANG);
      if (got == w.pid || (got < 0 && errno == ECHILD)) {
        w.exited = true;
        w.wait_status = got == w.pid ? status : 0;
        if (Failed(w.wait_status) && first_failed < 0 && !tearing_down) {
          first_failed = r;
          tearing_down = true;
          kill_deadline = Clock::now() + options.kill_grace;
          SignalAll(workers, SIGTERM);
        }
      } else {
        all_exited = false;
      }
    }

    if (tearing_down && !killed && !all_exited && Clock::now() >= kill_deadline) {
      SignalAll(workers, SIGKILL);
      killed = true;
    }

    if (all_exited) {
      if (all_exited_at == Clock::time_point{}) all_exited_at = Clock::now();
      bool pipes_open = false;
      for (const Worker& w : workers) pipes_open |= w.err_fd >= 0;
      // Grandchildren may keep a pipe open; give them a short while, then stop relaying.
      if (!pipes_open || Clock::now() - all_exited_at > std::chrono::milliseconds(500)) break;
    }
  }
  for (int r = 0; r < nproc; ++r) {
    if (workers[r].err_fd >= 0) {
      Drain(workers[r], r, options.prefix_stderr);
      if (workers[r].err_fd >= 0) ::close(workers[r].err_fd);
    }
  }

  // Restore signal handling.
  pthread_sigmask(SIG_BLOCK, &block, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  g_pids = nullptr;
  g_num_pids = 0;
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  if (!start_error.ok()) {
    result.status = start_error;
    result.exit_code = 1;
    return result;
  }
  if (first_failed >= 0) {
    const Worker& w = workers[first_failed];
    std::string msg = "worker rank " + std::to_string(first_failed) + " of " + std::to_string(nproc) + " (pid " +
                      std::to_string(w.pid) + ") " + DescribeExit(w.wait_status) + "; the other workers were " +
                      (killed ? "killed" : "stopped");
    if (!w.tail.empty()) {
      msg += "; last stderr lines of rank " + std::to_string(first_failed) + ":";
      for (const auto& line : w.tail) msg += "\n  " + line;
    }
    result.status = Status::Internal(msg);
    result.exit_code = ExitCodeFor(w.wait_status);
    if (result.exit_code == 0) result.exit_code = 1;
    result.failed_rank = first_failed;
    return result;
  }
  if (handled_signal != 0) {
    result.status = Status::Unavailable(std::string("launcher interrupted by signal ") +
                                        std::to_string(handled_signal) + " (" + strsignal(handled_signal) +
                                        "), forwarded to every worker");
    result.exit_code = 128 + handled_signal;
    return result;
  }
  return result;
}

}  // namespace liveavatar::dist
