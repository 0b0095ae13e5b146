// audit_chain_bench: what one global audit chain costs several replicas,
// against one chain per replica (issue #13; bench/README.md, "Several
// replicas"). Run by bench/replicas.sh against the PostgreSQL it starts.
//
// W writer threads, each on its own connection as a replica's journal
// would be, commit transactions of K hash-chained records for D seconds:
//
//   global     every transaction locks the one head row (SELECT … FOR
//              UPDATE), chains its records after it, inserts them and moves
//              the head: one total order, and transactions of different
//              writers run one after the other, commit (fsync) included;
//   per-chain  each writer has its own head row and chain: no lock is shared,
//              so the server's commits overlap.
//
//   audit_chain_bench --dsn DSN [--writers 1,2,4] [--records 8] [--duration-s 5]
//
// Prints one RESULT line per (mode, writers): transactions/s and records/s.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "broker/crypto/crypto.h"
#include "broker/store/pg.h"
#include "jitbroker/secret.h"

namespace {

using jitbroker::SecretValue;
namespace pg = jitbroker::store::pg;

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "audit_chain_bench: " << what << "\n";
  std::exit(1);
}

std::unique_ptr<pg::Connection> Connect(const std::string& dsn) {
  auto c = pg::Connection::Open(SecretValue(dsn));
  if (!c) {
    Die("connect: " + c.error().message);
  }
  return std::move(*c);
}

void Exec(pg::Connection& c, const std::string& sql) {
  if (auto r = c.Exec(sql); !r) {
    Die(sql + ": " + r.error().message);
  }
}

struct Run {
  double tx_per_s = 0;
  double records_per_s = 0;
};

// One writer: transactions of `records` records on chain `chain` until `stop`.
void Writer(const std::string& dsn, const std::string& chain, int records,
            const std::atomic<bool>& stop, std::atomic<uint64_t>& done) {
  auto c = Connect(dsn);
  const std::string body(400, 'x');  // about an audit record's size
  while (!stop.load()) {
    Exec(*c, "BEGIN");
    pg::Params key;
    key.Text(chain);
    auto head = c->Query("SELECT seq, hash FROM bench_heads WHERE chain_id = $1 FOR UPDATE", key);
    if (!head || head->rows() != 1) {
      Die("head: " + (head ? std::string("no row") : head.error().message));
    }
    int64_t seq = head->Int(0, 0).value_or(0);
    std::string prev(head->Text(0, 1));
    for (int i = 0; i < records; ++i) {
      ++seq;
      const std::string hash = jitbroker::crypto::Sha256Hex(prev + body + std::to_string(seq));
      pg::Params p;
      p.Text(chain).Int(seq).Text(hash).Text(prev).Text(body);
      if (auto r = c->Query("INSERT INTO bench_audit (chain_id, seq, hash, prev_hash, body) VALUES "
                            "($1, $2, $3, $4, $5)",
                            p);
          !r) {
        Die("insert: " + r.error().message);
      }
      prev = hash;
    }
    pg::Params move;
    move.Text(chain).Int(seq).Text(prev);
    if (auto r = c->Query("UPDATE bench_heads SET seq = $2, hash = $3 WHERE chain_id = $1", move);
        !r) {
      Die("head update: " + r.error().message);
    }
    Exec(*c, "COMMIT");
    done.fetch_add(1);
  }
}

Run Measure(const std::string& dsn, bool global, int writers, int records, double seconds) {
  {
    auto c = Connect(dsn);
    Exec(*c,
         "DROP TABLE IF EXISTS bench_audit, bench_heads;"
         "CREATE TABLE bench_audit (chain_id text, seq bigint, hash text, prev_hash text, "
         "body text, PRIMARY KEY (chain_id, seq));"
         "CREATE TABLE bench_heads (chain_id text PRIMARY KEY, seq bigint, hash text)");
    for (int w = 0; w < (global ? 1 : writers); ++w) {
      Exec(*c, "INSERT INTO bench_heads VALUES ('chain-" + std::to_string(w) + "', 0, '')");
    }
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0};
  std::vector<std::jthread> threads;
  for (int w = 0; w < writers; ++w) {
    const std::string chain = "chain-" + std::to_string(global ? 0 : w);
    threads.emplace_back([&, chain] { Writer(dsn, chain, records, stop, done); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm-up
  const uint64_t before = done.load();
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const uint64_t after = done.load();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop = true;
  threads.clear();
  Run r;
  r.tx_per_s = static_cast<double>(after - before) / elapsed;
  r.records_per_s = r.tx_per_s * records;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dsn;
  std::string writers_list = "1,2,4";
  int records = 8;
  double seconds = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        Die("missing value for " + a);
      }
      return argv[++i];
    };
    if (a == "--dsn") {
      dsn = next();
    } else if (a == "--writers") {
      writers_list = next();
    } else if (a == "--records") {
      records = std::atoi(next().c_str());
    } else if (a == "--duration-s") {
      seconds = std::atof(next().c_str());
    } else {
      Die("usage: audit_chain_bench --dsn DSN [--writers 1,2,4] [--records K] [--duration-s D]");
    }
  }
  if (dsn.empty() || records < 1 || seconds <= 0) {
    Die("usage: audit_chain_bench --dsn DSN [--writers 1,2,4] [--records K] [--duration-s D]");
  }
  std::stringstream list(writers_list);
  std::string item;
  while (std::getline(list, item, ',')) {
    const int writers = std::atoi(item.c_str());
    for (const bool global : {true, false}) {
      const Run r = Measure(dsn, global, writers, records, seconds);
      std::printf("RESULT mode=%s writers=%d records_per_tx=%d tx_per_s=%.0f records_per_s=%.0f\n",
                  global ? "global" : "per-chain", writers, records, r.tx_per_s, r.records_per_s);
      std::fflush(stdout);
    }
  }
  return 0;
}
