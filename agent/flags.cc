// SPDX-License-Identifier: Apache-2.0
#include "agent/flags.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace blkfleet::agent {

absl::StatusOr<uint64_t> ParseByteSize(const std::string& text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a size (examples: 4096, 64KiB, 64MiB, 2GiB)"));
  };
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (UINT64_MAX - digit) / 10) return bad();
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return bad();
  const std::string unit = absl::AsciiStrToLower(text.substr(i));
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    shift = 30;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    shift = 40;
  } else {
    return bad();
  }
  if (shift > 0 && value > (UINT64_MAX >> shift)) return bad();
  return value << shift;
}

absl::StatusOr<SimDeviceSpec> ParseSimDevice(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sim-device \"", text, "\": expected NAME=SIZE, e.g. vda=64MiB"));
  }
  absl::StatusOr<uint64_t> size = ParseByteSize(text.substr(eq + 1));
  if (!size.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sim-device \"", text, "\": ", size.status().message()));
  }
  return SimDeviceSpec{text.substr(0, eq), *size};
}

}  // namespace blkfleet::agent
