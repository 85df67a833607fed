// Hashing within a budget: a ReadEngine wrapper that sleeps in Wait() so
// that the thread driving it (a FileHasher reads and hashes on one thread)
// uses at most cpu_percent of one CPU, and reads at most io_mbps megabytes
// (10^6 bytes) a second.  It reports nothing as cached, so every byte goes
// through its reads and is counted (mapped hashing would bypass the budget).
#ifndef CID_THROTTLE_H_
#define CID_THROTTLE_H_

#include <atomic>
#include <cstdint>

#include "cid/io.h"

namespace cid {

struct HashBudget {
  double cpu_percent = 0;  // of one CPU per hashing thread; 0: unlimited
  double io_mbps = 0;      // 0: unlimited
  bool limited() const { return cpu_percent > 0 || io_mbps > 0; }
};

// Totals over every engine the factory made (for metrics).
struct ThrottleCounters {
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> sleep_us{0};
};

// Engines from `base`, throttled to `budget`.  `counters` (may be null)
// must outlive the engines.
EngineFactory ThrottledEngineFactory(EngineFactory base, HashBudget budget, ThrottleCounters* counters);

}  // namespace cid

#endif  // CID_THROTTLE_H_
