// SecretValue: a move-only holder for credentials, private keys, tokens and
// Authorization headers. It wipes its buffer on destruction and move, formats
// as "[redacted]", and yields its bytes only through Reveal() at the point of
// use.
//
// Thread-safety: like std::string (const access from many threads is fine).
#pragma once

#include <ostream>
#include <string>
#include <string_view>

namespace jitbroker {

void SecureWipe(void* data, size_t size);

class SecretValue {
 public:
  SecretValue() = default;
  explicit SecretValue(std::string value) : value_(std::move(value)) {}
  SecretValue(const SecretValue&) = delete;
  SecretValue& operator=(const SecretValue&) = delete;
  SecretValue(SecretValue&& other) noexcept : value_(std::move(other.value_)) { other.Wipe(); }
  SecretValue& operator=(SecretValue&& other) noexcept {
    if (this != &other) {
      Wipe();
      value_ = std::move(other.value_);
      other.Wipe();
    }
    return *this;
  }
  ~SecretValue() { Wipe(); }

  std::string_view Reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  size_t size() const { return value_.size(); }
  SecretValue Clone() const { return SecretValue(value_); }

 private:
  void Wipe() {
    if (!value_.empty()) {
      SecureWipe(value_.data(), value_.size());
    }
    value_.clear();
  }
  std::string value_;
};

inline std::ostream& operator<<(std::ostream& os, const SecretValue&) { return os << "[redacted]"; }

}  // namespace jitbroker
