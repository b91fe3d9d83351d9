// cask/detail/epoch.hpp - read-side critical sections and grace periods.
//
// Readers never lock. They enter a read section (one uncontended atomic
// increment on a per-thread-slot cache line, one decrement to leave) while
// they follow pointers to shared structures: keydir tables and segment
// tables. A writer that replaces such a structure publishes the new one,
// calls synchronize(), and only then frees the old one: synchronize() returns
// once every read section that could have seen the old one has ended. This is
// sleepable RCU with per-slot counters for two phases, as in Linux's SRCU.
//
// Memory-order contract (DESIGN.md "Reclamation"): readers load protected
// pointers with seq_cst loads (plain loads on x86) after entering; writers
// publish with release (or stronger) stores sequenced before synchronize(),
// which begins with a seq_cst fence. Then a reader that synchronize() does not
// wait for is ordered after the fence and sees the new pointer.
//
// Thread safety: guard and synchronize() may be used from any thread.
// synchronize() must not be called inside a read section of the same thread
// (it would wait for itself).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

namespace cask::detail {

class epoch_domain {
  struct alignas(64) slot {
    std::atomic<std::uint64_t> count[2] = {0, 0};
  };

 public:
  static constexpr std::size_t slot_count = 64;

  /// An active read section; leaves it on destruction.
  class guard {
   public:
    explicit guard(const epoch_domain& d) noexcept : slot_(&d.slots_[this_thread_slot()]) {
      phase_ = d.phase_.load(std::memory_order_relaxed) & 1u;
      slot_->count[phase_].fetch_add(1, std::memory_order_seq_cst);
    }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
    ~guard() { slot_->count[phase_].fetch_sub(1, std::memory_order_release); }

   private:
    slot* slot_;
    unsigned phase_;
  };

  guard enter() const noexcept { return guard(*this); }

  /// Waits until every read section that began before this call has ended.
  void synchronize() {
    std::lock_guard lock(sync_mutex_);
    full_fence();
    // Two flips: a reader that read the old phase just before a flip but
    // incremented after the wait saw the new state; the second flip makes sure
    // it is waited for before the next grace period relies on that phase.
    for (int round = 0; round < 2; ++round) {
      const unsigned old = phase_.fetch_xor(1u, std::memory_order_seq_cst) & 1u;
      wait_for_zero(old);
    }
  }

 private:
  void wait_for_zero(unsigned phase) const {
    for (std::uint32_t spins = 0;; ++spins) {
      std::uint64_t sum = 0;
      for (const slot& s : slots_) sum += s.count[phase].load(std::memory_order_seq_cst);
      if (sum == 0) return;
      if (spins < 64)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void full_fence() noexcept {
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer does not model fences (GCC refuses them under -Werror).
    // It checks the non-atomic data these sections protect, whose frees are
    // ordered by the acquire loads of the counters in wait_for_zero(), so a
    // seq_cst read-modify-write (a full barrier on x86 and ARM) stands in.
    fence_stand_in_.fetch_add(1, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }

  static std::size_t this_thread_slot() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed) % slot_count;
    return mine;
  }

  mutable slot slots_[slot_count];
  std::atomic<unsigned> phase_{0};
  std::mutex sync_mutex_;
  std::atomic<unsigned> fence_stand_in_{0};
};

}  // namespace cask::detail
