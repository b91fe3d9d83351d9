// tests/no_threads.hpp - runs a check in a child process in which the system
// refuses to start threads, as it does when a process or user limit is reached.
#pragma once

#include <chrono>
#include <functional>
#include <system_error>
#include <thread>

#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cask_test {

/// How a check run by run_where_threads_are_refused() ended.
enum class refused_threads_result {
  passed,               ///< the check returned true
  failed,               ///< the check returned false
  threw,                ///< the check threw
  threads_not_refused,  ///< a thread could still be started: nothing was checked
  no_child,             ///< fork failed, or the child could not lower its limits
  crashed,              ///< the child died of a signal
};

/// Runs check() in a forked child in which only `allowed` more threads can
/// be started: the child's RLIMIT_NPROC (soft) is set to the processes and
/// threads its user has plus `allowed`, so that every std::thread past them
/// throws std::system_error (EAGAIN). The kernel does not enforce the limit
/// on root, so a child of root first becomes nobody (65534); check() may
/// then read, but not write, what the parent made (unless the parent opened
/// it to others). check() must not use Boost.Test's assertions (they would
/// be the child's); it returns whether everything it checked held.
inline refused_threads_result run_where_threads_are_refused(const std::function<bool()>& check,
                                                            unsigned allowed = 0) {
  const pid_t pid = ::fork();
  if (pid < 0) return refused_threads_result::no_child;
  if (pid == 0) {
    // The test framework's handlers are the parent's: a crash here ends the child.
    for (const int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
    if (::geteuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0))
      ::_exit(10);
    rlimit was{};
    if (::getrlimit(RLIMIT_NPROC, &was) != 0) ::_exit(10);
    const auto can_start = [] {
      try {
        std::thread t([] {});
        t.join();
        return true;
      } catch (const std::system_error&) {
        return false;
      }
    };
    // The user's count of processes and threads: the lowest limit under
    // which a thread starts, less one. (Only failed starts come before it,
    // so the count does not move while it is found.)
    rlim_t limit = 0;
    for (;; ++limit) {
      const rlimit r{limit, was.rlim_max};
      if (limit > 100000 || ::setrlimit(RLIMIT_NPROC, &r) != 0) ::_exit(10);
      if (can_start()) break;
    }
    // The probe thread, joined, may be counted until the kernel reaps it.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const rlimit r{limit - 1 + allowed, was.rlim_max};
    if (::setrlimit(RLIMIT_NPROC, &r) != 0) ::_exit(10);
    if (allowed == 0 && can_start()) ::_exit(11);
    int code = 2;
    try {
      code = check() ? 0 : 1;
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  if (!WIFEXITED(status)) return refused_threads_result::crashed;
  switch (WEXITSTATUS(status)) {
    case 0: return refused_threads_result::passed;
    case 1: return refused_threads_result::failed;
    case 2: return refused_threads_result::threw;
    case 11: return refused_threads_result::threads_not_refused;
    default: return refused_threads_result::no_child;
  }
}

}  // namespace cask_test
