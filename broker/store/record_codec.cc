// The stores' shared row encoding (broker/store/record_codec.h).
#include "broker/store/record_codec.h"

#include <random>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "jitbroker/error.h"
#include "jitbroker/store.h"

namespace jitbroker::store {

using Json = nlohmann::json;

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Error CorruptRow(std::string_view table, std::string_view what) {
  return Internal("a stored record could not be read",
                  std::string(table) + " row: " + std::string(what));
}

std::string SessionDataText(const SessionRecord& s) {
  // DumpJson({"extra":…,"scope":…}) without copying the members.
  std::string text = "{\"extra\":";
  text += DumpJson(SessionExtraForStore(s));
  text += ",\"scope\":";
  text += DumpJson(s.scope);
  text += '}';
  return text;
}

std::string GrantDataText(const GrantRecord& g) {
  // Keys in dump()'s (sorted) order, without copying the members.
  std::string text = "{\"decision\":";
  text += DumpJson(g.decision);
  text += ",\"extra\":";
  text += DumpJson(GrantExtraForStore(g));
  text += ",\"parameters\":";
  text += DumpJson(g.parameters);
  text += ",\"scope\":";
  text += DumpJson(g.scope);
  if (!g.sealed_request.empty()) {
    text += ",\"sealed_request\":";
    text += DumpJson(g.sealed_request);
  }
  text += '}';
  return text;
}

Status SessionDataFromText(std::string_view text, SessionRecord& s) {
  Json data = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!data.is_object()) {
    return std::unexpected(CorruptRow("sessions", "data is not a JSON object"));
  }
  s.scope = data.contains("scope") ? data["scope"] : Json::object();
  return SessionExtraFromStore(data.contains("extra") ? std::move(data["extra"]) : Json::object(),
                               s);
}

Status GrantDataFromText(std::string_view text, GrantRecord& g) {
  Json data = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!data.is_object()) {
    return std::unexpected(CorruptRow("grants", "data is not a JSON object"));
  }
  g.parameters = data.contains("parameters") ? data["parameters"] : Json::object();
  g.scope = data.contains("scope") ? data["scope"] : Json::object();
  g.decision = data.contains("decision") ? data["decision"] : Json::object();
  JITBROKER_RETURN_IF_ERROR(
      GrantExtraFromStore(data.contains("extra") ? std::move(data["extra"]) : Json::object(), g));
  if (auto it = data.find("sealed_request"); it != data.end()) {
    if (!it->is_string()) {
      return std::unexpected(CorruptRow("grants", "sealed_request is not a string"));
    }
    g.sealed_request = it->get<std::string>();
  }
  return OkStatus();
}

std::string NewHandleId() {
  std::random_device rd;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    out += kHex[rd() % 16];
  }
  return out;
}

}  // namespace jitbroker::store
