// cask/detail/task.hpp - a function run on a thread of its own, or later in
// the thread that waits for it: std::async with launch::async or
// launch::deferred, for recovery's few parallel steps.
//
// Why not std::async: its machinery (the shared state, the future, the
// invoker and their shared_ptr) is instantiated for every callable, and the
// engine's callables are lambdas of member functions of log_store, so every
// store type instantiated it again: in a test of six store types, a fifth of
// the compile time. Here the thread and the exception handling live in job,
// which is not a template; task<T> adds only a std::function and the result.
//
// Thread safety: a job or task is used by the thread that created it; its
// function runs on the job's own thread (or, not given one or refused one by
// the system, in wait() or get()), and wait() or get() (or the destructor)
// joins that thread before anything the function wrote is read.
#pragma once

#include <exception>
#include <functional>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

namespace cask::detail {

/// Runs fn(arg) on a new thread (start(true, ...)) or, not given one, in the
/// thread that calls wait(). Not copyable or movable: the thread holds its address.
class job {
 public:
  job() = default;
  job(const job&) = delete;
  job& operator=(const job&) = delete;
  /// Joins the thread; a function that was never given one is not run.
  ~job() {
    if (thread_.joinable()) thread_.join();
  }

  /// fn(arg) runs on a new thread when `on_thread` and one can be started,
  /// else in wait(); `arg` must stay valid until then. A thread the system
  /// refuses (std::thread throws std::system_error: EAGAIN, a process or
  /// thread limit reached) costs only the parallelism, so a caller must
  /// never wait for fn other than through wait() (recovery's callers only
  /// start a job, do their own part, then wait()).
  void start(bool on_thread, void (*fn)(void*), void* arg) {
    fn_ = fn, arg_ = arg;
    if (!on_thread) return;
    try {
      thread_ = std::thread([this] { run(); });
    } catch (const std::system_error&) {
      // No thread to be had: wait() runs it.
    }
  }
  /// Waits for the function (running it here if it had no thread), then
  /// rethrows what it threw. Once per start().
  void wait() {
    if (thread_.joinable())
      thread_.join();
    else if (!ran_)
      run();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void run() noexcept {
    ran_ = true;
    try {
      fn_(arg_);
    } catch (...) {
      error_ = std::current_exception();
    }
  }

  void (*fn_)(void*) = nullptr;
  void* arg_ = nullptr;
  bool ran_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

/// A job with a result: f() on a thread of its own (on_thread) or in get().
template <class T>
class task {
 public:
  template <class F>
  task(bool on_thread, F&& f) : call_(std::forward<F>(f)) {
    job_.start(on_thread, &invoke, this);
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;

  /// The result, once f() has returned; rethrows what f() threw. Once.
  T get() {
    job_.wait();
    if constexpr (!std::is_void_v<T>) return std::move(*result_);
  }

 private:
  static void invoke(void* self) {
    auto& t = *static_cast<task*>(self);
    if constexpr (std::is_void_v<T>)
      t.call_();
    else
      t.result_.emplace(t.call_());
  }

  struct no_result {};
  std::function<T()> call_;
  [[no_unique_address]] std::conditional_t<std::is_void_v<T>, no_result, std::optional<T>> result_;
  job job_;  // last, so destroyed (its thread joined) before what the thread uses
};

}  // namespace cask::detail
