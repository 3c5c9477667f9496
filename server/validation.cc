// SPDX-License-Identifier: Apache-2.0
#include "server/validation.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace blkfleet::server {
namespace {

bool NameChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_'; }

std::optional<int64_t> ParseDecimal(const std::string& s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// Values are echoed into errors so the caller sees what was refused, but
// only a bounded prefix: a megabyte id must not become a megabyte status
// (which gRPC then refuses to send, hiding the real error).
std::string Echo(const std::string& value) {
  constexpr size_t kMaxEcho = 64;
  if (value.size() <= kMaxEcho) return absl::StrCat("'", value, "'");
  return absl::StrCat("'", absl::string_view(value).substr(0, kMaxEcho), "...' (", value.size(),
                      " bytes)");
}

}  // namespace

absl::Status ValidateHostName(const std::string& name, const std::string& field) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  if (name.size() > 253) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is longer than 253 characters"));
  }
  for (char c : name) {
    if (!NameChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " ", Echo(name), " may hold only letters, digits, '.', '-' and '_'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAgentAddress(const std::string& address, const std::string& field) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", Echo(address), " ", why));
  };
  if (address.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  // 253 for the name, brackets, ':' and 5 digits.
  if (address.size() > 261) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is longer than 261 characters (", address.size(), ")"));
  }
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) return bad("must be host:port");
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  auto p = ParseDecimal(port);
  if (!p || *p < 1 || *p > 65535) return bad("has no valid port (1..65535)");
  if (host.empty()) return bad("has no host");
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) return bad("has a malformed IPv6 address");
    for (char c : host.substr(1, host.size() - 2)) {
      if (!absl::ascii_isxdigit(c) && c != ':' && c != '.') return bad("has a malformed IPv6 address");
    }
    return absl::OkStatus();
  }
  for (char c : host) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-' && c != '_') {
      return bad("has a malformed host name");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateId(const std::string& id, const std::string& field) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  auto v = ParseDecimal(id);
  if (!v || *v == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", Echo(id), " is not a valid id"));
  }
  return absl::OkStatus();
}

absl::StatusOr<catalog::PageRequest> ParsePage(int32_t page_size, const std::string& page_token) {
  if (page_size < 0 || page_size > 1000) {
    return absl::InvalidArgumentError("page_size must be 0..1000");
  }
  catalog::PageRequest page;
  page.limit = page_size == 0 ? 100 : page_size;
  if (!page_token.empty()) {
    auto v = ParseDecimal(page_token);
    if (!v) return absl::InvalidArgumentError(absl::StrCat("page_token ", Echo(page_token), " is invalid"));
    page.offset = *v;
  }
  return page;
}

std::string NextPageToken(const catalog::PageRequest& page, size_t returned) {
  if (returned < static_cast<size_t>(page.limit)) return "";
  return std::to_string(page.offset + static_cast<int64_t>(returned));
}

}  // namespace blkfleet::server
