// RFC 7047 client: see ovsdb_client.h.
#include "ovsdb_client.h"

#include <stdexcept>

namespace vpf::agent {

using nlohmann::json;
namespace asio = boost::asio;

void JsonSplitter::feed(const char* data, size_t n, const std::function<void(std::string&&)>& fn) {
  for (size_t i = 0; i < n; ++i) {
    const char c = data[i];
    if (depth_ == 0 && !in_string_) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
      if (c != '{' && c != '[')
        throw std::runtime_error(std::string("OVSDB stream: unexpected byte '") + c + "' between JSON texts");
    }
    buf_.push_back(c);
    if (buf_.size() > max_) throw std::runtime_error("OVSDB stream: JSON text longer than " + std::to_string(max_));
    if (in_string_) {
      if (escape_) escape_ = false;
      else if (c == '\\') escape_ = true;
      else if (c == '"') in_string_ = false;
      continue;
    }
    if (c == '"') in_string_ = true;
    else if (c == '{' || c == '[') ++depth_;
    else if (c == '}' || c == ']') {
      if (--depth_ == 0) {
        std::string text;
        text.swap(buf_);
        fn(std::move(text));
      }
    }
  }
}

void OvsdbClient::connect(const std::string& target) {
  std::string path = target;
  if (path.rfind("unix:", 0) == 0) path = path.substr(5);
  else if (path.find(':') != std::string::npos && path.rfind('/', 0) != 0)
    throw std::runtime_error("OVSDB target '" + target + "': only unix:PATH is supported");
  boost::system::error_code ec;
  sock_.connect(asio::local::stream_protocol::endpoint(path), ec);
  if (ec) throw std::runtime_error("cannot connect to ovsdb-server at " + path + ": " + ec.message());
  read_more();
}

void OvsdbClient::close() {
  boost::system::error_code ec;
  sock_.close(ec);
}

void OvsdbClient::fail(const std::string& why) {
  if (!sock_.is_open()) return;
  close();
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, cb] : pending)
    if (cb) cb(nullptr, json{{"error", "connection closed"}, {"details", why}});
  if (on_close_) on_close_(why);
}

void OvsdbClient::read_more() {
  auto self = shared_from_this();
  sock_.async_read_some(asio::buffer(rbuf_), [this, self](const boost::system::error_code& ec, size_t n) {
    if (ec) {
      fail(ec == asio::error::eof ? "ovsdb-server closed the connection" : ec.message());
      return;
    }
    try {
      splitter_.feed(rbuf_.data(), n, [&](std::string&& text) { handle(std::move(text)); });
    } catch (const std::exception& e) {
      fail(e.what());
      return;
    }
    if (sock_.is_open()) read_more();
  });
}

void OvsdbClient::handle(std::string&& text) {
  json msg = json::parse(text, nullptr, false);
  if (msg.is_discarded() || !msg.is_object()) throw std::runtime_error("OVSDB stream: malformed JSON-RPC message");
  if (msg.contains("method")) {  // a request or notification from the server
    const std::string m = msg["method"].is_string() ? msg["method"].get<std::string>() : "";
    if (m == "echo") {
      send({{"id", msg.value("id", json(nullptr))}, {"result", msg.value("params", json::array())}, {"error", nullptr}});
    } else if (m == "update" && msg.contains("params") && msg["params"].is_array() && msg["params"].size() == 2) {
      const json& p = msg["params"];
      const std::string key = p[0].is_string() ? p[0].get<std::string>() : p[0].dump();
      const auto it = monitors_.find(key);
      if (it != monitors_.end()) it->second(p[1]);
    }
    return;
  }
  if (!msg.contains("id") || !msg["id"].is_number_unsigned()) return;  // not ours
  const auto it = pending_.find(msg["id"].get<uint64_t>());
  if (it == pending_.end()) return;
  Reply cb = std::move(it->second);
  pending_.erase(it);
  const json err = msg.value("error", json(nullptr));
  if (cb) cb(msg.value("result", json(nullptr)), err);
}

void OvsdbClient::send(const json& msg) {
  wqueue_.push_back(msg.dump());
  if (writing_) return;
  writing_ = true;
  auto self = shared_from_this();
  // Writes the queue's texts one after another (one async_write in flight).
  struct Writer {
    std::shared_ptr<OvsdbClient> c;
    void operator()() const {
      auto* cl = c.get();
      if (cl->wqueue_.empty() || !cl->sock_.is_open()) {
        cl->writing_ = false;
        return;
      }
      auto data = std::make_shared<std::string>(std::move(cl->wqueue_.front()));
      cl->wqueue_.pop_front();
      Writer again{c};
      asio::async_write(cl->sock_, asio::buffer(*data),
                        [data, again](const boost::system::error_code& ec, size_t) {
                          if (ec) {
                            again.c->writing_ = false;
                            again.c->fail(ec.message());
                            return;
                          }
                          again();
                        });
    }
  };
  Writer{self}();
}

void OvsdbClient::request(const std::string& method, json params, Reply cb) {
  if (!sock_.is_open()) {
    if (cb) cb(nullptr, json{{"error", "not connected"}});
    return;
  }
  const uint64_t id = next_id_++;
  pending_[id] = std::move(cb);
  send({{"method", method}, {"params", std::move(params)}, {"id", id}});
}

void OvsdbClient::transact(const std::string& db, json ops, Reply cb) {
  json params = json::array({db});
  for (auto& op : ops) params.push_back(std::move(op));
  // A transaction's result array holds one entry per operation, an error object in place
  // of the first failing one (RFC 7047 4.1.3): turn that into an error.
  request("transact", std::move(params), [cb = std::move(cb)](const json& result, const json& error) {
    if (!cb) return;
    if (!error.is_null()) return cb(result, error);
    if (!result.is_array()) return cb(result, json{{"error", "malformed transact reply"}});
    for (const auto& r : result)
      if (r.is_object() && r.contains("error")) return cb(result, r);
    cb(result, nullptr);
  });
}

void OvsdbClient::monitor(const std::string& db, const std::string& id, json requests, UpdateFn updates, Reply done) {
  monitors_[json(id).dump()] = updates;
  monitors_[id] = updates;
  request("monitor", json::array({db, id, std::move(requests)}),
          [updates, done = std::move(done)](const json& result, const json& error) {
            if (error.is_null() && updates) updates(result);
            if (done) done(result, error);
          });
}

json OvsdbClient::call_sync(const std::string& method, json params) {
  bool got = false;
  json res, err;
  request(method, std::move(params), [&](const json& r, const json& e) {
    got = true;
    res = r;
    err = e;
  });
  while (!got && !io_.stopped()) io_.run_one();
  if (!got) throw std::runtime_error("OVSDB: no reply to " + method);
  if (!err.is_null()) throw std::runtime_error("OVSDB " + method + ": " + err.dump());
  return res;
}

std::vector<json> ovsdb_set(const json& v) {
  if (v.is_array() && v.size() == 2 && v[0] == "set" && v[1].is_array()) return v[1].get<std::vector<json>>();
  return {v};
}

std::map<std::string, std::string> ovsdb_map(const json& v) {
  std::map<std::string, std::string> out;
  if (!(v.is_array() && v.size() == 2 && v[0] == "map" && v[1].is_array())) return out;
  for (const auto& kv : v[1])
    if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string())
      out[kv[0].get<std::string>()] = kv[1].get<std::string>();
  return out;
}

json ovsdb_make_map(const std::map<std::string, std::string>& m) {
  json pairs = json::array();
  for (const auto& [k, v] : m) pairs.push_back({k, v});
  return {"map", pairs};
}

json ovsdb_make_set(const std::vector<json>& v) { return {"set", v}; }

void ovsdb_apply_rows(std::map<std::string, json>& rows, const json& changes) {
  if (!changes.is_object()) return;
  for (const auto& [uuid, change] : changes.items()) {
    if (!change.is_object()) continue;
    if (change.contains("new") && change["new"].is_object()) {
      json& row = rows[uuid];
      if (!row.is_object()) row = json::object();
      for (const auto& [col, val] : change["new"].items()) row[col] = val;  // only changed columns come
    } else {
      rows.erase(uuid);
    }
  }
}

}  // namespace vpf::agent
