// vpf-agent: see session.h.
#include "session.h"

#include <unistd.h>

#include <cstring>

#include "vpf/channel.h"

#include "agent.h"
#include "vpf/protocol.h"

namespace vpf::agent {

using nlohmann::json;
namespace asio = boost::asio;
namespace proto = vpf::protocol;

Session::Session(asio::local::stream_protocol::socket s, Agent& agent, Peer peer, size_t max_queued_event_bytes)
    : expiry_timer(s.get_executor()),
      sock_(std::move(s)),
      agent_(agent),
      peer_(std::move(peer)),
      max_queued_event_bytes_(max_queued_event_bytes) {}

void Session::start() { read(); }

void Session::refuse(const json& error) {
  send_json({{"jsonrpc", "2.0"}, {"id", nullptr}, {"error", error}});
  close_after_write_ = true;
}

void Session::send_json(const json& msg, std::vector<int> fds) {
  if (closed_) {
    for (int fd : fds) ::close(fd);
    return;
  }
  out_.push_back({msg.dump() + "\n", false, std::move(fds)});
  if (!writing_) flush();
}

bool Session::send_event(std::string frame) {
  if (closed_ || queued_event_bytes_ + frame.size() > max_queued_event_bytes_) {
    ++events_dropped;
    return false;
  }
  queued_event_bytes_ += frame.size();
  out_.push_back({std::move(frame), true, {}});
  ++events_sent;
  if (!writing_) flush();
  return true;
}

void Session::flush() {
  if (out_.empty() || closed_) {
    writing_ = false;
    if (close_after_write_) close();
    return;
  }
  writing_ = true;
  // A message with descriptors goes alone, in one sendmsg (they travel with its first
  // byte); nothing is being written meanwhile, so it keeps its place in the stream.
  if (!out_.front().fds.empty()) {
    Out m = std::move(out_.front());
    out_.pop_front();
    const bool sent = channel::send_with_fds(sock_.native_handle(), m.data.data(), m.data.size(), m.fds.data(),
                                             int(m.fds.size()));
    for (int fd : m.fds) ::close(fd);
    if (!sent) return close();  // a client whose socket is full this long is gone
    return flush();
  }
  // Gather what is queued into one write (fewer system calls for bursts of events).
  auto data = std::make_shared<std::string>();
  while (!out_.empty() && out_.front().fds.empty() && data->size() < 256 * 1024) {
    if (out_.front().event) queued_event_bytes_ -= out_.front().data.size();
    data->append(out_.front().data);
    out_.pop_front();
  }
  auto self = shared_from_this();
  asio::async_write(sock_, asio::buffer(*data), [self, data](const boost::system::error_code& ec, size_t) {
    if (ec) return self->close();
    self->flush();
  });
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  sock_.shutdown(asio::socket_base::shutdown_both, ec);
  sock_.close(ec);
  expiry_timer.cancel();
  for (const auto& m : out_)
    for (int fd : m.fds) ::close(fd);
  out_.clear();
  agent_.on_session_closed(*this);
}

void Session::protocol_error(const std::string& why) {
  send_json({{"jsonrpc", "2.0"}, {"id", nullptr},
             {"error", {{"code", rpc::kInvalidRequest}, {"message", why}, {"data", {{"seed_error", kErrorInvalidParameter}}}}}});
  close_after_write_ = true;
  in_.clear();
}

void Session::read() {
  auto self = shared_from_this();
  sock_.async_read_some(asio::buffer(rbuf_), [self](const boost::system::error_code& ec, size_t n) {
    if (ec) return self->close();  // EOF or error: the client is gone
    self->in_.append(self->rbuf_, n);
    self->parse();
    if (!self->closed_ && !self->close_after_write_) self->read();
  });
}

void Session::parse() {
  size_t pos = 0;
  while (!closed_ && !close_after_write_) {
    const auto item = proto::next_item<proto::VerdictFrame>(in_.data(), in_.size(), pos);
    if (item.kind == item.kNeedMore) break;
    if (item.kind == item.kBad) return protocol_error(item.problem);
    if (item.kind == item.kFrame) {
      agent_.on_verdict(*this, item.body, std::span(item.data, item.body.data_size));
      continue;
    }
    const json req = json::parse(item.line, nullptr, false);
    auto error = [&](const json& id, int code, const std::string& msg) {
      send_json({{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", msg}, {"data", {{"seed_error", kErrorInvalidParameter}}}}}});
    };
    if (req.is_discarded()) {
      error(nullptr, rpc::kParseError, "malformed JSON");
      continue;
    }
    if (!req.is_object() || !req.contains("method") || !req["method"].is_string()) {
      error(req.is_object() ? req.value("id", json(nullptr)) : json(nullptr), rpc::kInvalidRequest,
            "not a JSON-RPC request (an object with a string 'method')");
      continue;
    }
    if (req.contains("params") && !req["params"].is_object()) {
      error(req.value("id", json(nullptr)), rpc::kInvalidParams, "'params' must be an object");
      continue;
    }
    const json id = req.value("id", json(nullptr));
    auto self = shared_from_this();
    agent_.handle(*this, req["method"].get<std::string>(), req.value("params", json::object()),
                  [self, id](const json& result, const ApiError* e) {
                    if (e)
                      self->send_json({{"jsonrpc", "2.0"}, {"id", id},
                                       {"error", {{"code", e->code}, {"message", e->what()}, {"data", {{"seed_error", e->seed}}}}}});
                    else
                      self->send_json({{"jsonrpc", "2.0"}, {"id", id}, {"result", result}}, std::exchange(self->reply_fds, {}));
                  });
  }
  in_.erase(0, pos);
}

}  // namespace vpf::agent
