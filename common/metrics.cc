// SPDX-License-Identifier: Apache-2.0
#include "common/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace blkfleet::metrics {
namespace {

// The registry plus the refreshers, collected as one: the endpoint asks this
// object, which brings the computed gauges up to date first.
class Store final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<std::function<void()>> refreshers;
    {
      absl::MutexLock l(&mu_);
      refreshers = refreshers_;
    }
    {
      // One scrape at a time runs the refreshers (they set shared gauges).
      absl::MutexLock l(&scrape_mu_);
      for (const auto& r : refreshers) r();
    }
    return registry_->Collect();
  }

  prometheus::Registry& registry() { return *registry_; }

  void AddRefresher(std::function<void()> f) {
    absl::MutexLock l(&mu_);
    refreshers_.push_back(std::move(f));
  }

  // Kinds of the families made so far, to catch a name used with two types.
  void CheckKind(const std::string& name, char kind) {
    absl::MutexLock l(&mu_);
    auto [it, inserted] = kinds_.emplace(name, kind);
    if (!inserted && it->second != kind) {
      std::cerr << "metric " << name << " registered with two types\n";
      std::abort();
    }
  }

  absl::Mutex serve_mu;
  std::unique_ptr<prometheus::Exposer> exposer ABSL_GUARDED_BY(serve_mu);

 private:
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  mutable absl::Mutex mu_;
  mutable absl::Mutex scrape_mu_;
  std::vector<std::function<void()>> refreshers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, char> kinds_ ABSL_GUARDED_BY(mu_);
};

// Shared so that the exposer's weak reference stays valid; never destroyed
// (recording from threads still running at exit must not touch freed memory).
const std::shared_ptr<Store>& TheStore() {
  static auto* store = new std::shared_ptr<Store>(std::make_shared<Store>());
  return *store;
}

}  // namespace

void Counter::Increment(double by) const { c_->Increment(by); }
void Gauge::Set(double value) const { g_->Set(value); }
void Gauge::Increment(double by) const { g_->Increment(by); }
void Gauge::Decrement(double by) const { g_->Decrement(by); }
void Histogram::Observe(double value) const { h_->Observe(value); }

Counter GetCounter(const std::string& name, const std::string& help, const Labels& labels) {
  Store& s = *TheStore();
  s.CheckKind(name, 'c');
  auto& family = prometheus::BuildCounter().Name(name).Help(help).Register(s.registry());
  return Counter(&family.Add(labels));
}

Gauge GetGauge(const std::string& name, const std::string& help, const Labels& labels) {
  Store& s = *TheStore();
  s.CheckKind(name, 'g');
  auto& family = prometheus::BuildGauge().Name(name).Help(help).Register(s.registry());
  return Gauge(&family.Add(labels));
}

void RemoveGauge(const std::string& name, const std::string& help, const Labels& labels) {
  Store& s = *TheStore();
  s.CheckKind(name, 'g');
  auto& family = prometheus::BuildGauge().Name(name).Help(help).Register(s.registry());
  if (family.Has(labels)) family.Remove(&family.Add(labels));
}

Histogram GetHistogram(const std::string& name, const std::string& help,
                       const std::vector<double>& buckets, const Labels& labels) {
  Store& s = *TheStore();
  s.CheckKind(name, 'h');
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(s.registry());
  return Histogram(&family.Add(labels, buckets));
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i, start *= factor) b.push_back(start);
  return b;
}

void OnScrape(std::function<void()> refresh) { TheStore()->AddRefresher(std::move(refresh)); }

absl::StatusOr<int> StartServing(const std::string& address, const std::string& flag) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " '", address, "': give host:port, e.g. 127.0.0.1:9401 (port 0: any free port)"));
  }
  Store& s = *TheStore();
  absl::MutexLock l(&s.serve_mu);
  if (s.exposer) return absl::FailedPreconditionError("the metrics endpoint is already serving");
  try {
    // One thread: scrapes are rare, and refreshers then never run twice at once.
    auto exposer = std::make_unique<prometheus::Exposer>(address, 1);
    exposer->RegisterCollectable(TheStore(), "/metrics");
    const std::vector<int> ports = exposer->GetListeningPorts();
    if (ports.empty()) return absl::UnavailableError(absl::StrCat(flag, " ", address, ": not listening"));
    s.exposer = std::move(exposer);
    return ports.front();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(flag, " ", address, ": cannot listen: ", e.what()));
  }
}

void StopServing() {
  Store& s = *TheStore();
  absl::MutexLock l(&s.serve_mu);
  s.exposer.reset();
}

std::string TextExposition() {
  return prometheus::TextSerializer().Serialize(TheStore()->Collect());
}

}  // namespace blkfleet::metrics
