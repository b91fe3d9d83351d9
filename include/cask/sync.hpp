// cask/sync.hpp - durability policies.
//
// A sync policy says when written records become durable (survive a power
// loss). Whatever the policy, log_store::sync() makes everything written so
// far durable, and a sealed segment is made durable when it is sealed.
//
//   sync_none     - the OS writes back when it likes. A process crash loses
//                   nothing (records are in the page cache at once); a machine
//                   crash may lose the writes since the last sync().
//   sync_always   - put and erase return only once their record is durable.
//                   Concurrent writers share one flush (group commit).
//   sync_interval - a background thread makes everything durable every
//                   options::sync_interval.
//
// The interface (concept cask::sync_policy): two constexpr bools.
#pragma once

namespace cask {

/// The OS writes back when it likes; log_store::sync() makes writes durable (the default).
struct sync_none {
  static constexpr bool every_write = false;  ///< whether put and erase wait until their record is durable
  static constexpr bool background = false;   ///< whether a thread flushes every options::sync_interval
};
/// put and erase return once their record is durable (group commit).
struct sync_always {
  static constexpr bool every_write = true;  ///< as sync_none::every_write
  static constexpr bool background = false;  ///< as sync_none::background
};
/// A background thread makes everything durable every options::sync_interval.
struct sync_interval {
  static constexpr bool every_write = false;  ///< as sync_none::every_write
  static constexpr bool background = true;    ///< as sync_none::background
};

}  // namespace cask
