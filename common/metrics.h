// SPDX-License-Identifier: Apache-2.0
#ifndef BLKFLEET_COMMON_METRICS_H_
#define BLKFLEET_COMMON_METRICS_H_

// The one process-wide metrics registry and its /metrics endpoint
// (docs/operations.md, "Monitoring"). Code records through the small handles
// below, so that only common/metrics.cc includes prometheus-cpp.
//
// Handles are cheap to copy and valid for the life of the process; getting
// one with the same name and labels twice gives the same series. Recording
// is lock-free (prometheus-cpp atomics) and works whether or not an endpoint
// is serving: without --metrics-listen the values are simply never read.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace blkfleet::metrics {

using Labels = std::map<std::string, std::string>;

class Counter {
 public:
  void Increment(double by = 1) const;

 private:
  friend Counter GetCounter(const std::string&, const std::string&, const Labels&);
  explicit Counter(prometheus::Counter* c) : c_(c) {}
  prometheus::Counter* c_;
};

class Gauge {
 public:
  void Set(double value) const;
  void Increment(double by = 1) const;
  void Decrement(double by = 1) const;

 private:
  friend Gauge GetGauge(const std::string&, const std::string&, const Labels&);
  explicit Gauge(prometheus::Gauge* g) : g_(g) {}
  prometheus::Gauge* g_;
};

class Histogram {
 public:
  void Observe(double value) const;

 private:
  friend Histogram GetHistogram(const std::string&, const std::string&,
                                const std::vector<double>&, const Labels&);
  explicit Histogram(prometheus::Histogram* h) : h_(h) {}
  prometheus::Histogram* h_;
};

// `name` must follow Prometheus' naming rules (units and _total suffixes are
// the caller's job); a family's help text and type are fixed by its first
// use. A name reused with another type aborts: that is a programming error.
Counter GetCounter(const std::string& name, const std::string& help, const Labels& labels = {});
Gauge GetGauge(const std::string& name, const std::string& help, const Labels& labels = {});
Histogram GetHistogram(const std::string& name, const std::string& help,
                       const std::vector<double>& buckets, const Labels& labels = {});
// Drops one series of a gauge family (no-op when it does not exist), for
// series whose subject is gone (a host no policy covers any more). Handles
// to it must not be used afterwards: get it again with GetGauge instead.
void RemoveGauge(const std::string& name, const std::string& help, const Labels& labels);

// Bucket bounds: `count` values from `start`, each `factor` times the last.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// Runs `refresh` before every scrape (for gauges that are read from the
// system, e.g. free disk space). Refreshers run on the endpoint's thread,
// one scrape at a time; they must be thread-safe against the rest of the
// program and outlive the endpoint (StopServing first).
void OnScrape(std::function<void()> refresh);

// Serves the registry as Prometheus text at http://ADDRESS/metrics, ADDRESS
// "host:port" (port 0: any free port). Returns the bound port.
// INVALID_ARGUMENT names `flag` when the address is malformed,
// UNAVAILABLE when it cannot be bound. One endpoint per process.
absl::StatusOr<int> StartServing(const std::string& address, const std::string& flag);
// Stops the endpoint (no-op when none); refreshers do not run afterwards.
void StopServing();

// The registry in the text exposition format, refreshers run first (tests).
std::string TextExposition();

}  // namespace blkfleet::metrics

#endif  // BLKFLEET_COMMON_METRICS_H_
