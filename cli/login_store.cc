#include "cli/login_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "broker/common/json_util.h"
#include "broker/common/time_util.h"
#include "broker/config/config.h"
#include "broker/crypto/crypto.h"
#include "jitbroker/error.h"

namespace jitbroker::cli {

namespace {

constexpr size_t kMaxStoreBytes = 256 * 1024;
constexpr std::chrono::seconds kMargin{30};

Result<nlohmann::json> ReadStore(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return nlohmann::json::object();
  }
  Result<std::string> text = config::ReadFileBounded(path, kMaxStoreBytes);
  if (!text) {
    return std::unexpected(Internal("cannot read " + path + ": " + text.error().message));
  }
  jitbroker::json::ParseOptions po;
  po.what = path;
  po.max_bytes = kMaxStoreBytes;
  Result<nlohmann::json> doc = jitbroker::json::ParseStrict(*text, po);
  SecureWipe(text->data(), text->size());
  if (!doc || !doc->is_object()) {
    return std::unexpected(
        Internal(path + " is not a jitctl login file; remove it and run 'jitctl login' again"));
  }
  return std::move(*doc);
}

void WipeStore(nlohmann::json& doc) {
  for (auto& [url, entry] : doc.items()) {
    if (entry.is_object() && entry.contains("token") && entry["token"].is_string()) {
      auto& t = entry["token"].get_ref<std::string&>();
      SecureWipe(t.data(), t.size());
    }
  }
}

}  // namespace

Result<std::string> LoginStorePath(const GetEnv& getenv) {
  std::optional<std::string> xdg = getenv("XDG_CONFIG_HOME");
  if (xdg && !xdg->empty() && xdg->front() == '/') {
    return *xdg + "/jitbroker/logins.json";
  }
  std::optional<std::string> home = getenv("HOME");
  if (home && !home->empty() && home->front() == '/') {
    return *home + "/.config/jitbroker/logins.json";
  }
  return std::unexpected(InvalidArgument(
      "usage", "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep 'jitctl login'"));
}

Result<std::optional<StoredLogin>> ReadLogin(const GetEnv& getenv, const std::string& broker_url,
                                             TimePoint now) {
  JITBROKER_ASSIGN_OR_RETURN(std::string path, LoginStorePath(getenv));
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json doc, ReadStore(path));
  std::optional<StoredLogin> out;
  auto it = doc.find(broker_url);
  if (it != doc.end() && it->is_object() && (*it)["token"].is_string() &&
      (*it)["expires_at"].is_string()) {
    Result<TimePoint> expires = ParseRfc3339((*it)["expires_at"].get<std::string>());
    if (expires && *expires - kMargin > now) {
      out = StoredLogin{SecretValue((*it)["token"].get<std::string>()),
                        it->value("principal", std::string()), *expires};
    }
  }
  WipeStore(doc);
  return out;
}

Status WriteLogin(const GetEnv& getenv, const std::string& broker_url, const StoredLogin* login,
                  TimePoint now) {
  JITBROKER_ASSIGN_OR_RETURN(std::string path, LoginStorePath(getenv));
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return std::unexpected(Internal("cannot create " + dir.string() + ": " + ec.message()));
  }
  ::chmod(dir.c_str(), 0700);
  JITBROKER_ASSIGN_OR_RETURN(nlohmann::json doc, ReadStore(path));
  nlohmann::json kept = nlohmann::json::object();
  for (auto& [url, entry] : doc.items()) {
    if (url == broker_url || !entry.is_object() || !entry["expires_at"].is_string()) {
      continue;
    }
    Result<TimePoint> expires = ParseRfc3339(entry["expires_at"].get<std::string>());
    if (expires && *expires > now) {
      kept[url] = entry;
    }
  }
  WipeStore(doc);
  if (login != nullptr) {
    kept[broker_url] = {{"token", std::string(login->token.Reveal())},
                        {"principal", login->principal},
                        {"expires_at", FormatRfc3339(login->expires_at)}};
  }
  std::string text = kept.dump(2) + "\n";
  WipeStore(kept);
  const std::string tmp = path + ".tmp-" + crypto::HexEncode(crypto::RandomBytes(6));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    SecureWipe(text.data(), text.size());
    return std::unexpected(Internal("cannot write " + tmp + ": " + std::strerror(errno)));
  }
  size_t done = 0;
  bool ok = true;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      ok = false;
      break;
    }
    done += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  SecureWipe(text.data(), text.size());
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return std::unexpected(Internal("cannot write " + path + ": " + why));
  }
  return OkStatus();
}

}  // namespace jitbroker::cli
