// SPDX-License-Identifier: Apache-2.0
#include "agent/sim_workload_service.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_util.h"

namespace blkfleet::agent {
namespace {

constexpr uint64_t kMaxIoBytes = 64ull << 20;
constexpr uint32_t kMaxRandomWrites = 100'000;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

grpc::Status SimWorkloadService::Write(grpc::ServerContext*, const simtest::v1::WriteRequest* req,
                                       simtest::v1::WriteResponse*) {
  if (req->data().empty() || req->data().size() > kMaxIoBytes) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("data: ", req->data().size(), " bytes; give 1 .. ", kMaxIoBytes)));
  }
  return ToGrpcStatus(sim_->Write(req->device(), req->offset_bytes(), Bytes(req->data())));
}

grpc::Status SimWorkloadService::RandomWrites(grpc::ServerContext*,
                                              const simtest::v1::RandomWritesRequest* req,
                                              simtest::v1::RandomWritesResponse* resp) {
  if (req->count() == 0 || req->count() > kMaxRandomWrites) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("count: ", req->count(), " is outside 1 .. ", kMaxRandomWrites)));
  }
  absl::StatusOr<uint64_t> device_size = sim_->DeviceSize(req->device());
  if (!device_size.ok()) return ToGrpcStatus(device_size.status());
  const uint64_t size = *device_size;
  if (req->size_bytes() == 0 || req->size_bytes() > kMaxIoBytes || req->size_bytes() > size) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("size_bytes: ", req->size_bytes(), " is outside 1 .. min(64 MiB, device size ",
                     size, ")")));
  }
  std::mt19937_64 rng(req->seed());
  std::string data(req->size_bytes(), '\0');
  const uint64_t slots = (size - req->size_bytes()) / 512 + 1;
  for (uint32_t i = 0; i < req->count(); ++i) {
    const uint64_t offset = (rng() % slots) * 512;
    for (size_t j = 0; j < data.size(); j += 8) {
      const uint64_t v = rng();
      __builtin_memcpy(data.data() + j, &v, std::min<size_t>(8, data.size() - j));
    }
    if (absl::Status st = sim_->Write(req->device(), offset, Bytes(data)); !st.ok()) {
      return ToGrpcStatus(st);
    }
    auto* r = resp->add_ranges();
    r->set_offset_bytes(offset);
    r->set_length_bytes(data.size());
  }
  return grpc::Status::OK;
}

grpc::Status SimWorkloadService::ReadDevice(grpc::ServerContext*,
                                            const simtest::v1::ReadDeviceRequest* req,
                                            simtest::v1::ReadDeviceResponse* resp) {
  if (req->length_bytes() > kMaxIoBytes) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("length_bytes: ", req->length_bytes(), " is above ", kMaxIoBytes)));
  }
  std::string* data = resp->mutable_data();
  data->resize(req->length_bytes());
  return ToGrpcStatus(
      sim_->Read(req->device(), req->offset_bytes(),
                 std::span<uint8_t>(reinterpret_cast<uint8_t*>(data->data()), data->size())));
}

grpc::Status SimWorkloadService::DeviceDigest(grpc::ServerContext*,
                                              const simtest::v1::DeviceDigestRequest* req,
                                              simtest::v1::DeviceDigestResponse* resp) {
  absl::StatusOr<Sha256Digest> d = sim_->DeviceDigest(req->device());
  if (!d.ok()) return ToGrpcStatus(d.status());
  resp->set_sha256(DigestToBytes(*d));
  return grpc::Status::OK;
}

}  // namespace blkfleet::agent
