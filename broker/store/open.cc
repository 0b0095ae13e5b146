// store::Open (broker/store/open.h).
#include "broker/store/open.h"

#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "broker/config/config.h"
#include "broker/store/postgres_store.h"
#include "broker/store/sqlite_store.h"
#include "jitbroker/error.h"

namespace jitbroker::store {

namespace {

Result<std::unique_ptr<Store>> OpenSqlite(const config::SqliteStoreConfig& config) {
  if (config.path.empty()) {
    return std::unexpected(InvalidArgument("invalid_config", "store.sqlite.path is empty"));
  }
  const std::filesystem::path parent = std::filesystem::path(config.path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (std::filesystem::create_directories(parent, ec)) {
      // Only a directory made here is narrowed; an existing one is the
      // operator's (it may be the data directory, already 0700).
      ::chmod(parent.c_str(), 0700);
    }
    if (ec) {
      return std::unexpected(Unavailable("store_unavailable", "the store is unavailable",
                                         "create " + parent.string() + ": " + ec.message()));
    }
  }
  SqliteOptions options;
  options.path = config.path;
  return OpenSqliteStore(options);
}

}  // namespace

Result<std::unique_ptr<Store>> Open(const config::StoreConfig& config) {
  if (const config::SqliteStoreConfig* sqlite = config.sqlite()) {
    return OpenSqlite(*sqlite);
  }
  const config::PostgresStoreConfig* pg = config.postgres();
  if (pg == nullptr || !pg->dsn || pg->dsn->empty()) {
    return std::unexpected(InvalidArgument("invalid_config", "store.postgres.dsn is required"));
  }
  PostgresOptions options;
  options.dsn = pg->dsn->Clone();
  options.pool_size = pg->pool_size;
  return OpenPostgresStore(std::move(options));
}

}  // namespace jitbroker::store
