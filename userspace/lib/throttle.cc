#include "cid/throttle.h"

#include <time.h>

#include <algorithm>
#include <utility>

namespace cid {

namespace {

int64_t ClockNs(clockid_t c) {
  timespec ts;
  clock_gettime(c, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

class ThrottledEngine : public ReadEngine {
 public:
  ThrottledEngine(std::unique_ptr<ReadEngine> base, HashBudget budget, ThrottleCounters* counters)
      : base_(std::move(base)), budget_(budget), counters_(counters) {}

  Status Submit(int fd, void* buf, uint32_t len, uint64_t off, uint64_t tag) override {
    if (start_wall_ == 0) {
      start_wall_ = ClockNs(CLOCK_MONOTONIC);
      start_cpu_ = ClockNs(CLOCK_THREAD_CPUTIME_ID);
    }
    return base_->Submit(fd, buf, len, off, tag);
  }

  Status Wait(std::vector<ReadCompletion>* out) override {
    size_t before = out->size();
    Status s = base_->Wait(out);
    for (size_t i = before; i < out->size(); i++) {
      if ((*out)[i].res > 0) bytes_ += static_cast<uint64_t>((*out)[i].res);
    }
    if (counters_) counters_->bytes_read += bytes_ - counted_;
    counted_ = bytes_;
    Pace();
    return s;
  }

  unsigned depth() const override { return base_->depth(); }
  const char* name() const override { return base_->name(); }
  bool Cached(int, uint64_t, uint64_t) override { return false; }

 private:
  // Sleeps until the time spent so far is long enough for the CPU used and
  // the bytes read to fit the budget.
  void Pace() {
    int64_t need_ns = 0;
    if (budget_.cpu_percent > 0) {
      double cpu = static_cast<double>(ClockNs(CLOCK_THREAD_CPUTIME_ID) - start_cpu_);
      need_ns = std::max(need_ns, static_cast<int64_t>(cpu * 100.0 / budget_.cpu_percent));
    }
    if (budget_.io_mbps > 0) {
      need_ns = std::max(need_ns, static_cast<int64_t>(static_cast<double>(bytes_) * 1e3 / budget_.io_mbps));
    }
    int64_t ahead = start_wall_ + need_ns - ClockNs(CLOCK_MONOTONIC);
    if (ahead <= 0) return;
    timespec ts{static_cast<time_t>(ahead / 1000000000), static_cast<long>(ahead % 1000000000)};
    while (nanosleep(&ts, &ts) != 0) {
    }
    if (counters_) counters_->sleep_us += static_cast<uint64_t>(ahead / 1000);
  }

  std::unique_ptr<ReadEngine> base_;
  const HashBudget budget_;
  ThrottleCounters* const counters_;
  int64_t start_wall_ = 0;
  int64_t start_cpu_ = 0;
  uint64_t bytes_ = 0;
  uint64_t counted_ = 0;
};

}  // namespace

EngineFactory ThrottledEngineFactory(EngineFactory base, HashBudget budget, ThrottleCounters* counters) {
  return [base = std::move(base), budget, counters]() -> std::unique_ptr<ReadEngine> {
    return std::make_unique<ThrottledEngine>(base(), budget, counters);
  };
}

}  // namespace cid
