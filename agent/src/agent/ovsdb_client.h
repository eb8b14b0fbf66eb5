// An RFC 7047 (OVSDB management protocol) client over a unix socket, on Boost.Asio.
//
// The protocol is JSON-RPC 1.0 over a stream of JSON texts with no delimiter between
// them; JsonSplitter finds where each text ends.  The client sends requests
// (transact, monitor, monitor_cancel, list_dbs, get_schema, echo), matches replies by id,
// answers the server's "echo" requests, and hands "update" notifications to the monitor's
// callback.
//
// Threads: every callback runs on the io_context's thread(s); the client is not
// thread-safe and is used from one strand (the agent runs one io_context thread).
// Lifecycle: (1) connect(), (2) requests and monitors, (3) on_close fires once when the
// connection ends (server gone, protocol error); pending replies get an error.
#pragma once

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <array>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace vpf::agent {

// Splits a byte stream into complete JSON texts (objects or arrays at the top level).
class JsonSplitter {
 public:
  explicit JsonSplitter(size_t max_text = size_t(64) << 20) : max_(max_text) {}
  // Appends bytes; calls fn(text) for every text completed.  Throws std::runtime_error on
  // bytes that cannot start a text or on a text longer than max_text.
  void feed(const char* data, size_t n, const std::function<void(std::string&&)>& fn);

 private:
  std::string buf_;
  size_t max_;
  int depth_ = 0;
  bool in_string_ = false, escape_ = false;
};

class OvsdbClient : public std::enable_shared_from_this<OvsdbClient> {
 public:
  // A reply: `error` is null on success (then `result` is set), else the server's error
  // or a local one ({"error": "connection closed"}).
  using Reply = std::function<void(const nlohmann::json& result, const nlohmann::json& error)>;
  using UpdateFn = std::function<void(const nlohmann::json& updates)>;

  explicit OvsdbClient(boost::asio::io_context& io) : io_(io), sock_(io) {}

  // Connects to "unix:PATH" (or a bare path).  Throws std::runtime_error naming the
  // target and the reason.
  void connect(const std::string& target);
  void close();
  bool connected() const { return sock_.is_open(); }
  void on_close(std::function<void(const std::string& why)> fn) { on_close_ = std::move(fn); }

  void request(const std::string& method, nlohmann::json params, Reply cb);
  void transact(const std::string& db, nlohmann::json ops, Reply cb);
  // Monitors `requests` ({table: {columns: [...]}} per RFC 7047 4.1.5) of `db`; the
  // initial contents come in the reply (handed to `updates` too), later changes as
  // "update" notifications.
  void monitor(const std::string& db, const std::string& id, nlohmann::json requests, UpdateFn updates,
               Reply done = nullptr);

  // Blocking helper for start-up and tests: runs the io_context until the reply comes.
  nlohmann::json call_sync(const std::string& method, nlohmann::json params);

 private:
  void read_more();
  void handle(std::string&& text);
  void send(const nlohmann::json& msg);
  void fail(const std::string& why);

  boost::asio::io_context& io_;
  boost::asio::local::stream_protocol::socket sock_;
  JsonSplitter splitter_;
  std::array<char, 65536> rbuf_{};
  uint64_t next_id_ = 1;
  std::map<uint64_t, Reply> pending_;
  std::map<std::string, UpdateFn> monitors_;
  std::function<void(const std::string&)> on_close_;
  std::deque<std::string> wqueue_;
  bool writing_ = false;
};

// RFC 7047 <atom>/<set>/<map> helpers.
std::vector<nlohmann::json> ovsdb_set(const nlohmann::json& v);            // ["set",[..]] or one atom
std::map<std::string, std::string> ovsdb_map(const nlohmann::json& v);     // ["map",[[k,v]..]]
nlohmann::json ovsdb_make_map(const std::map<std::string, std::string>& m);
nlohmann::json ovsdb_make_set(const std::vector<nlohmann::json>& v);

// Applies one table's part of a monitor update ({uuid: {"old":..., "new":...}}) to `rows`
// (uuid -> row): "new" merges the changed columns, no "new" deletes; malformed entries are
// ignored.
void ovsdb_apply_rows(std::map<std::string, nlohmann::json>& rows, const nlohmann::json& changes);

}  // namespace vpf::agent
