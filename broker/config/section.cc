// Section: strict, line-aware reading of one YAML mapping (config.h).
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <yaml-cpp/yaml.h>

#include "broker/config/config.h"

namespace jitbroker::config {

Result<std::string> ReadFileBounded(const std::filesystem::path& path, size_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    return std::unexpected(
        InvalidArgument("unreadable", path.string() + ": " + std::strerror(errno)));
  }
  std::string out;
  char buf[16384];
  Status status;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      status = std::unexpected(
          InvalidArgument("unreadable", path.string() + ": " + std::strerror(errno)));
      break;
    }
    if (n == 0) {
      break;
    }
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      status = std::unexpected(InvalidArgument(
          "too_large", path.string() + ": larger than " + std::to_string(max_bytes) + " bytes"));
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  SecureWipe(buf, sizeof buf);
  if (!status) {
    SecureWipe(out.data(), out.size());
    return std::unexpected(status.error());
  }
  return out;
}

namespace {

std::string JoinPath(std::string_view path, std::string_view key) {
  if (path.empty()) {
    return std::string(key);
  }
  if (key.empty()) {
    return std::string(path);
  }
  return std::string(path) + "." + std::string(key);
}

int MarkLine(const YAML::Node& node) {
  try {
    int line = node.Mark().line;
    return line >= 0 ? line + 1 : 0;
  } catch (...) {
    return 0;
  }
}

Error ConfigError(const std::string& file, int line, std::string_view path, std::string_view what) {
  std::string msg = file + ":" + std::to_string(line > 0 ? line : 1) + ": ";
  if (!path.empty()) {
    msg += std::string(path) + ": ";
  }
  msg += std::string(what);
  return InvalidArgument("invalid_config", std::move(msg));
}

// The scalar text of a key node, or nullopt for a non-scalar key.
std::optional<std::string> KeyText(const YAML::Node& key) {
  try {
    if (!key.IsScalar()) {
      return std::nullopt;
    }
    return key.Scalar();
  } catch (...) {
    return std::nullopt;
  }
}

bool IsNullNode(const YAML::Node& n) { return !n.IsDefined() || n.IsNull(); }

}  // namespace

Section::Section(YAML::Node node, std::shared_ptr<const std::string> file, std::string path)
    : node_(node),  // a YAML::Node is a shared handle; it has no move constructor
      file_(std::move(file)),
      path_(std::move(path)),
      known_(std::make_shared<std::vector<std::string>>()) {
  if (file_ == nullptr) {
    file_ = std::make_shared<const std::string>("<config>");
  }
}

int Section::line() const { return MarkLine(node_); }

bool Section::Has(std::string_view key) const {
  try {
    if (!node_.IsMap()) {
      return false;
    }
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::optional<std::string> k = KeyText(it->first);
      if (k && *k == key) {
        return true;
      }
    }
  } catch (...) {
  }
  return false;
}

// Finds the (first) key and value nodes for `key` without the inserting
// operator[] of a non-const YAML::Node.
namespace {
struct Entry {
  YAML::Node key;
  YAML::Node value;
};
std::optional<Entry> Find(const YAML::Node& map, std::string_view key) {
  try {
    if (!map.IsMap()) {
      return std::nullopt;
    }
    for (auto it = map.begin(); it != map.end(); ++it) {
      std::optional<std::string> k = KeyText(it->first);
      if (k && *k == key) {
        return Entry{it->first, it->second};
      }
    }
  } catch (...) {
  }
  return std::nullopt;
}
}  // namespace

Error Section::Err(std::string_view key, std::string_view what) const {
  int line = this->line();
  if (!key.empty()) {
    if (std::optional<Entry> e = Find(node_, key)) {
      line = MarkLine(e->key);
    }
  }
  return ConfigError(*file_, line, JoinPath(path_, key), what);
}

void Section::MarkKnown(std::string_view key) {
  if (std::find(known_->begin(), known_->end(), key) == known_->end()) {
    known_->emplace_back(key);
  }
}

Status Section::CheckNoUnknownKeys() const {
  if (IsNullNode(node_)) {
    return OkStatus();
  }
  if (!node_.IsMap()) {
    return std::unexpected(ConfigError(*file_, line(), path_, "must be a mapping"));
  }
  std::set<std::string> seen;
  try {
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::optional<std::string> k = KeyText(it->first);
      if (!k) {
        return std::unexpected(
            ConfigError(*file_, MarkLine(it->first), path_, "keys must be plain strings"));
      }
      if (!seen.insert(*k).second) {
        return std::unexpected(
            ConfigError(*file_, MarkLine(it->first), JoinPath(path_, *k), "duplicate key"));
      }
      if (std::find(known_->begin(), known_->end(), *k) == known_->end()) {
        return std::unexpected(
            ConfigError(*file_, MarkLine(it->first), JoinPath(path_, *k), "unknown key"));
      }
    }
  } catch (...) {
    return std::unexpected(ConfigError(*file_, line(), path_, "malformed mapping"));
  }
  return OkStatus();
}

Result<std::optional<std::string>> Section::OptString(std::string_view key) {
  MarkKnown(key);
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return std::optional<std::string>();
  }
  if (!e->value.IsScalar()) {
    return std::unexpected(Err(key, "must be a string"));
  }
  return std::optional<std::string>(e->value.Scalar());
}

Result<std::string> Section::String(std::string_view key) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<std::string> v, OptString(key));
  if (!v) {
    return std::unexpected(Err(key, "is required"));
  }
  if (v->empty()) {
    return std::unexpected(Err(key, "must not be empty"));
  }
  return std::move(*v);
}

Result<std::optional<int64_t>> Section::OptInt(std::string_view key, int64_t min, int64_t max) {
  MarkKnown(key);
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return std::optional<int64_t>();
  }
  std::string range =
      "must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  if (!e->value.IsScalar()) {
    return std::unexpected(Err(key, range));
  }
  const std::string& s = e->value.Scalar();
  int64_t v = 0;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(first, last, v);
  if (s.empty() || ec != std::errc() || ptr != last || v < min || v > max) {
    return std::unexpected(Err(key, range));
  }
  return std::optional<int64_t>(v);
}

Result<std::optional<double>> Section::OptNumber(std::string_view key, double min, double max,
                                                 std::string_view range) {
  MarkKnown(key);
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return std::optional<double>();
  }
  const std::string what = "must be a number in " + std::string(range);
  if (!e->value.IsScalar()) {
    return std::unexpected(Err(key, what));
  }
  const std::string& s = e->value.Scalar();
  double v = 0;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  // Decimal text only (no YAML ".inf"/".nan", no hex); the range check
  // refuses the infinities and NaN that from_chars itself would accept.
  auto [ptr, ec] = std::from_chars(first, last, v, std::chars_format::general);
  if (s.empty() || ec != std::errc() || ptr != last || !(v >= min && v <= max)) {
    return std::unexpected(Err(key, what));
  }
  return std::optional<double>(v);
}

Result<std::optional<bool>> Section::OptBool(std::string_view key) {
  MarkKnown(key);
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return std::optional<bool>();
  }
  if (e->value.IsScalar()) {
    const std::string& s = e->value.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") {
      return std::optional<bool>(true);
    }
    if (s == "false" || s == "False" || s == "FALSE") {
      return std::optional<bool>(false);
    }
  }
  return std::unexpected(Err(key, "must be true or false"));
}

Result<std::vector<std::string>> Section::StringList(std::string_view key) {
  MarkKnown(key);
  std::vector<std::string> out;
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return out;
  }
  if (!e->value.IsSequence()) {
    return std::unexpected(Err(key, "must be a list of strings"));
  }
  size_t i = 0;
  for (auto it = e->value.begin(); it != e->value.end(); ++it, ++i) {
    const YAML::Node& item = *it;
    if (!item.IsScalar()) {
      return std::unexpected(ConfigError(*file_, MarkLine(item),
                                         JoinPath(path_, key) + "[" + std::to_string(i) + "]",
                                         "must be a string"));
    }
    out.push_back(item.Scalar());
  }
  return out;
}

Result<std::optional<Section>> Section::OptSection(std::string_view key) {
  MarkKnown(key);
  std::optional<Entry> e = Find(node_, key);
  if (!e) {
    return std::optional<Section>();
  }
  if (!IsNullNode(e->value) && !e->value.IsMap()) {
    return std::unexpected(Err(key, "must be a mapping"));
  }
  return std::optional<Section>(Section(e->value, file_, JoinPath(path_, key)));
}

Result<std::vector<Section>> Section::SectionList(std::string_view key) {
  MarkKnown(key);
  std::vector<Section> out;
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return out;
  }
  if (!e->value.IsSequence()) {
    return std::unexpected(Err(key, "must be a list of mappings"));
  }
  size_t i = 0;
  for (auto it = e->value.begin(); it != e->value.end(); ++it, ++i) {
    const YAML::Node& item = *it;
    std::string item_path = JoinPath(path_, key) + "[" + std::to_string(i) + "]";
    if (!item.IsMap()) {
      return std::unexpected(ConfigError(*file_, MarkLine(item), item_path, "must be a mapping"));
    }
    out.emplace_back(item, file_, std::move(item_path));
  }
  return out;
}

ConfigValueKind Section::KindOf(std::string_view key) const {
  std::optional<Entry> e = Find(node_, key);
  if (!e) {
    return ConfigValueKind::kAbsent;
  }
  try {
    if (IsNullNode(e->value)) {
      return ConfigValueKind::kNull;
    }
    if (e->value.IsMap()) {
      return ConfigValueKind::kMapping;
    }
    if (e->value.IsSequence()) {
      return ConfigValueKind::kList;
    }
  } catch (...) {
    return ConfigValueKind::kNull;
  }
  return ConfigValueKind::kScalar;
}

Result<std::vector<std::string>> Section::Keys() const {
  std::vector<std::string> out;
  if (IsNullNode(node_) || !node_.IsMap()) {
    return out;
  }
  try {
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::optional<std::string> k = KeyText(it->first);
      if (!k) {
        return std::unexpected(
            ConfigError(*file_, MarkLine(it->first), path_, "keys must be plain strings"));
      }
      out.push_back(std::move(*k));
    }
  } catch (...) {
    return std::unexpected(ConfigError(*file_, line(), path_, "malformed mapping"));
  }
  return out;
}

Result<std::unique_ptr<ConfigView>> Section::OptView(std::string_view key) {
  JITBROKER_ASSIGN_OR_RETURN(std::optional<Section> sub, OptSection(key));
  if (!sub || IsNullNode(sub->node_)) {
    return std::unique_ptr<ConfigView>();
  }
  return std::unique_ptr<ConfigView>(std::make_unique<Section>(std::move(*sub)));
}

Result<std::vector<std::unique_ptr<ConfigView>>> Section::ViewList(std::string_view key) {
  JITBROKER_ASSIGN_OR_RETURN(std::vector<Section> list, SectionList(key));
  std::vector<std::unique_ptr<ConfigView>> out;
  out.reserve(list.size());
  for (Section& s : list) {
    out.push_back(std::make_unique<Section>(std::move(s)));
  }
  return out;
}

Result<std::optional<SecretValue>> Section::OptSecretRef(std::string_view key) {
  MarkKnown(key);
  std::optional<Entry> e = Find(node_, key);
  if (!e || IsNullNode(e->value)) {
    return std::optional<SecretValue>();
  }
  constexpr std::string_view kRefOnly = "secrets must be given as file:PATH or env:NAME references";
  if (!e->value.IsScalar()) {
    return std::unexpected(Err(key, kRefOnly));
  }
  // The scalar may itself be a secret pasted inline: it never appears in a
  // message, and the copy is wiped when this function returns.
  SecretValue ref(e->value.Scalar());
  std::string_view text = ref.Reveal();
  if (text.starts_with("file:")) {
    std::string path_text(text.substr(5));
    if (path_text.empty()) {
      return std::unexpected(Err(key, "file: reference names no path"));
    }
    std::filesystem::path p(path_text);
    if (p.is_relative()) {
      std::error_code ec;
      std::filesystem::path base = std::filesystem::absolute(*file_, ec).parent_path();
      p = base / p;
    }
    p = p.lexically_normal();
    auto read = ReadFileBounded(p, kMaxSecretFileBytes);
    if (!read) {
      return std::unexpected(Err(key, "cannot read secret file " + read.error().message));
    }
    std::string content = std::move(*read);
    if (!content.empty() && content.back() == '\n') {
      content.pop_back();
      if (!content.empty() && content.back() == '\r') {
        content.pop_back();
      }
    }
    SecretValue value(std::move(content));
    if (value.empty()) {
      return std::unexpected(Err(key, "secret file " + p.string() + " is empty"));
    }
    return std::optional<SecretValue>(std::move(value));
  }
  if (text.starts_with("env:")) {
    std::string name(text.substr(4));
    bool valid_name = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
    if (!valid_name) {
      return std::unexpected(Err(key, "env: reference must name an environment variable"));
    }
    const char* v = std::getenv(name.c_str());
    if (v == nullptr || *v == '\0') {
      return std::unexpected(Err(key, "environment variable " + name + " is not set or is empty"));
    }
    return std::optional<SecretValue>(SecretValue(std::string(v)));
  }
  return std::unexpected(Err(key, kRefOnly));
}

}  // namespace jitbroker::config
