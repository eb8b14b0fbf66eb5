// vpf-console: see agent_client.h.
#include "agent_client.h"

#include <QJsonDocument>
#include <cstring>

namespace vpf::console {

namespace proto = vpf::protocol;

AgentClient::AgentClient(QString socket_path, QObject* parent) : QObject(parent), path_(std::move(socket_path)) {
  retry_.setInterval(1000);
  connect(&retry_, &QTimer::timeout, this, [this] {
    if (sock_.state() == QLocalSocket::UnconnectedState) sock_.connectToServer(path_);
  });
  connect(&sock_, &QLocalSocket::connected, this, [this] {
    in_.clear();
    // After a refusal, the agent answers a new connection with the refusal again before
    // anything else: until it answers otherwise, keep showing its reason.
    unconfirmed_ = state_ == State::Refused;
    set_state(State::Connected);
    emit connected();
  });
  connect(&sock_, &QLocalSocket::disconnected, this, [this] {
    // Answer what was pending, so that no caller waits forever.
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [id, cb] : pending)
      if (cb) cb(QJsonValue(), QJsonObject{{"message", "the connection to vpf-agent was lost"}});
    if (state_ != State::Refused) set_state(State::Disconnected, "vpf-agent closed the connection");
  });
  connect(&sock_, &QLocalSocket::errorOccurred, this, [this](QLocalSocket::LocalSocketError) {
    if (state_ != State::Refused) set_state(State::Disconnected, sock_.errorString());
  });
  connect(&sock_, &QLocalSocket::readyRead, this, &AgentClient::on_ready_read);
}

AgentClient::~AgentClient() {
  sock_.disconnect(this);
  pending_.clear();
}

void AgentClient::start() {
  set_state(State::Connecting);
  sock_.connectToServer(path_);
  retry_.start();
}

QString AgentClient::state_text() const {
  switch (state_) {
    case State::Connected:
      if (unconfirmed_) return tr("refused by vpf-agent: %1; trying again").arg(why_);
      return tr("connected to %1").arg(path_);
    case State::Connecting: return tr("connecting to %1").arg(path_);
    case State::Refused: return tr("refused by vpf-agent: %1").arg(why_);
    case State::Disconnected: break;
  }
  return tr("not connected (%1); retrying").arg(why_.isEmpty() ? path_ : why_);
}

void AgentClient::set_state(State s, const QString& why) {
  if (!why.isEmpty()) why_ = why;
  if (s == state_) return;
  state_ = s;
  emit state_changed(s);
}

void AgentClient::call(const QString& method, const QJsonObject& params, Callback cb) {
  if (state_ != State::Connected) {
    if (cb) cb(QJsonValue(), QJsonObject{{"message", "not connected to vpf-agent"}});
    return;
  }
  const qint64 id = next_id_++;
  if (cb) pending_[id] = std::move(cb);
  const QJsonObject req{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
  sock_.write(QJsonDocument(req).toJson(QJsonDocument::Compact) + "\n");
}

bool AgentClient::verdict(uint64_t event_id, uint8_t action, const QByteArray& data) {
  if (state_ != State::Connected) return false;
  const std::string f = proto::verdict_frame(event_id, action, data.constData(), uint32_t(data.size()));
  return sock_.write(f.data(), qint64(f.size())) == qint64(f.size());
}

void AgentClient::on_ready_read() { feed(sock_.readAll()); }

void AgentClient::feed(const QByteArray& bytes) {
  in_.append(bytes);
  size_t pos = 0;
  for (;;) {
    const auto item = proto::next_item<proto::EventFrame>(in_.constData(), size_t(in_.size()), pos);
    if (item.kind == item.kNeedMore) break;
    if (item.kind == item.kBad) {
      set_state(State::Disconnected, tr("vpf-agent sent a malformed message (%1)").arg(QString::fromStdString(item.problem)));
      in_.clear();
      sock_.abort();
      return;
    }
    if (item.kind == item.kFrame) {
      PacketEvent ev;
      ev.frame = item.body;
      ev.data = QByteArray(reinterpret_cast<const char*>(item.data), qsizetype(item.body.data_size));
      emit packet_event(ev);
      continue;
    }
    const QJsonDocument doc =
        QJsonDocument::fromJson(QByteArray::fromRawData(item.line.data(), qsizetype(item.line.size())));
    const QJsonObject m = doc.object();
    // An error for no request: we are refused.  Anything else: this connection is accepted.
    const bool refusal = !m.contains("method") && !m["id"].isDouble() && m.contains("error");
    if (unconfirmed_ && !refusal) {
      unconfirmed_ = false;
      emit state_changed(state_);
    }
    if (refusal) {
      set_state(State::Refused, m["error"].toObject()["message"].toString());
    } else if (m.contains("method")) {
      emit notification(m["method"].toString(), m["params"].toObject());
    } else if (m["id"].isDouble()) {
      const auto it = pending_.find(qint64(m["id"].toDouble()));
      if (it != pending_.end()) {
        auto cb = std::move(it->second);
        pending_.erase(it);
        cb(m["result"], m["error"].toObject());
      }
    }
  }
  in_.remove(0, qsizetype(pos));
}

}  // namespace vpf::console
