// tests/no_threads.hpp - runs a check in a child process in which the system
// refuses to start threads, as it does when a process or user limit is reached.
#pragma once

#include <cerrno>
#include <chrono>
#include <filesystem>
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
  no_child,             ///< fork failed, or the child could not take its user or limit
  crashed,              ///< the child died of a signal (or hung: it has 60 s)
};

/// Lets others read (and, with `writable`, write in) `dir` and everything
/// in it, for a check that run_where_threads_are_refused() runs as another
/// user.
inline void open_to_others(const std::filesystem::path& dir, bool writable = false) {
  namespace fs = std::filesystem;
  const auto dir_perms = fs::perms::others_read | fs::perms::others_exec | (writable ? fs::perms::others_write : fs::perms::none);
  fs::permissions(dir, dir_perms, fs::perm_options::add);
  for (const auto& e : fs::recursive_directory_iterator(dir))
    fs::permissions(e.path(), e.is_directory() ? dir_perms : fs::perms::others_read, fs::perm_options::add);
}

/// Runs check() in a forked child in which only `allowed` more threads can
/// be started: every std::thread past them throws std::system_error
/// (EAGAIN), by RLIMIT_NPROC, which counts a user's processes and threads.
/// The kernel does not apply it to root, so a child of root becomes a user
/// of its own (uid and gid 1000000 + its pid, which no other process has):
/// its count is then exactly 1, and the limit 1 + allowed. Not root, the
/// child finds its user's count by raising the limit until a thread starts
/// (exact only while no other process of the user starts or ends). check()
/// may read, but not write, what the parent made unless the parent opened
/// it to others (open_to_others()). check() must not use Boost.Test's
/// assertions (they would be the child's); it returns whether everything it
/// checked held. The parent must have no thread of its own running but the
/// one that calls (a thread started after fork() in a child of a process
/// with threads is unsafe, and ends the child under TSan: no_child).
inline refused_threads_result run_where_threads_are_refused(const std::function<bool()>& check,
                                                            unsigned allowed = 0) {
  const pid_t pid = ::fork();
  if (pid < 0) return refused_threads_result::no_child;
  if (pid == 0) {
    // The test framework's handlers are the parent's: a crash here ends the child.
    for (const int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGALRM}) ::signal(sig, SIG_DFL);
    ::alarm(60);
    const auto can_start = [] {
      try {
        std::thread t([] {});
        t.join();
        return true;
      } catch (const std::system_error&) {
        return false;
      }
    };
    rlimit was{};
    if (::getrlimit(RLIMIT_NPROC, &was) != 0) ::_exit(10);
    rlim_t count = 1;
    if (::geteuid() == 0) {
      const auto id = static_cast<uid_t>(1000000 + ::getpid());
      if (::setgroups(0, nullptr) != 0 || ::setgid(id) != 0 || ::setuid(id) != 0) ::_exit(10);
    } else {
      // The lowest limit under which a thread starts, less one (only failed
      // starts come before it, so the count does not move meanwhile).
      for (count = 0;; ++count) {
        const rlimit r{count, was.rlim_max};
        if (count > 100000 || ::setrlimit(RLIMIT_NPROC, &r) != 0) ::_exit(10);
        if (can_start()) break;
      }
      if (count == 0) ::_exit(11);  // threads are not limited for this user
      // The probe thread, joined, may be counted until the kernel reaps it.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      --count;
    }
    const rlimit r{count + allowed, was.rlim_max};
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
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return refused_threads_result::no_child;
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
