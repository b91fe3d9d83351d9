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

struct sync_none {
  static constexpr bool every_write = false;
  static constexpr bool background = false;
};
struct sync_always {
  static constexpr bool every_write = true;
  static constexpr bool background = false;
};
struct sync_interval {
  static constexpr bool every_write = false;
  static constexpr bool background = true;
};

}  // namespace cask
