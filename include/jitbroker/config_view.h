// ConfigView: strict, line-aware reading of one configuration mapping, for
// code that must not depend on the config file's format (an issuer's factory
// reads its `issuers.<name>` section through it; docs/architecture.md
// "Adding an issuer"). The broker's YAML loader implements it
// (config::Section in broker/config/config.h).
//
// Every accessor marks its key as known; CheckNoUnknownKeys() then reports
// the first key of the mapping that nobody asked for (unknown and duplicate
// keys are configuration errors). Errors are kInvalidArgument with reason
// "invalid_config" and a message "FILE:LINE: PATH.KEY: what is wrong" that
// never contains a secret's value.
//
// Reading is side-effect free except for OptSecretRef, which reads the
// referenced file or environment variable (and nothing else).
//
// Thread-safety: none; a view is read by one thread (start-up, reload or
// `jitctl config check`). Views of one mapping share their "known keys", so
// a key marked through one copy counts for all.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jitbroker/result.h"
#include "jitbroker/secret.h"

namespace jitbroker {

// What a key of a mapping holds.
enum class ConfigValueKind { kAbsent, kNull, kScalar, kList, kMapping };

class ConfigView {
 public:
  virtual ~ConfigView() = default;

  // The mapping's key path, e.g. "issuers.github" (for messages).
  virtual const std::string& path() const = 0;
  virtual bool Has(std::string_view key) const = 0;
  virtual ConfigValueKind KindOf(std::string_view key) const = 0;
  // The mapping's keys in file order (an absent or null mapping has none).
  // Does not mark them known. Errors: a key that is not a plain string.
  [[nodiscard]] virtual Result<std::vector<std::string>> Keys() const = 0;

  // A non-empty string (required).
  [[nodiscard]] virtual Result<std::string> String(std::string_view key) = 0;
  [[nodiscard]] virtual Result<std::optional<std::string>> OptString(std::string_view key) = 0;
  // An integer in [min, max].
  [[nodiscard]] virtual Result<std::optional<int64_t>> OptInt(std::string_view key, int64_t min,
                                                              int64_t max) = 0;
  // A decimal number in [min, max]; `range` is how errors show the bounds.
  [[nodiscard]] virtual Result<std::optional<double>> OptNumber(std::string_view key, double min,
                                                                double max,
                                                                std::string_view range) = 0;
  [[nodiscard]] virtual Result<std::optional<bool>> OptBool(std::string_view key) = 0;
  // A list of strings (absent = empty).
  [[nodiscard]] virtual Result<std::vector<std::string>> StringList(std::string_view key) = 0;
  // The mapping at `key`; nullptr when absent or null. Errors: not a mapping.
  [[nodiscard]] virtual Result<std::unique_ptr<ConfigView>> OptView(std::string_view key) = 0;
  // Each element of a list of mappings (absent = empty).
  [[nodiscard]] virtual Result<std::vector<std::unique_ptr<ConfigView>>> ViewList(
      std::string_view key) = 0;
  // A "file:PATH" or "env:NAME" reference, resolved; an inline value is an
  // error (and never echoed). Relative paths resolve against the config
  // file's directory.
  [[nodiscard]] virtual Result<std::optional<SecretValue>> OptSecretRef(std::string_view key) = 0;
  // Marks `key` as known without reading it.
  virtual void MarkKnown(std::string_view key) = 0;

  [[nodiscard]] virtual Status CheckNoUnknownKeys() const = 0;
  // An "invalid_config" error located at `key` (or at the mapping when empty).
  virtual Error Err(std::string_view key, std::string_view what) const = 0;
};

}  // namespace jitbroker
