// vpf-console: an asynchronous client of vpf-agent on the Qt event loop
// (docs/protocol.md): JSON-RPC requests with callbacks, notifications and event frames as
// signals, and reconnection every second while the agent is away.
#pragma once

#include <QByteArray>
#include <QJsonObject>
#include <QJsonValue>
#include <QLocalSocket>
#include <QObject>
#include <QTimer>
#include <functional>
#include <map>

#include "vpf/protocol.h"

namespace vpf::console {

struct PacketEvent {
  protocol::EventFrame frame;
  QByteArray data;
};

class AgentClient : public QObject {
  Q_OBJECT
 public:
  enum class State { Disconnected, Connecting, Connected, Refused };
  // result is the "result" member; error the "error" object (empty when none).
  using Callback = std::function<void(const QJsonValue& result, const QJsonObject& error)>;

  explicit AgentClient(QString socket_path, QObject* parent = nullptr);
  // Pending callbacks are dropped, not called: their owners may be gone already.
  ~AgentClient() override;
  void start();  // connects now and keeps reconnecting
  void call(const QString& method, const QJsonObject& params = {}, Callback cb = {});
  // A verdict for a captured packet this client holds (protocol::VerdictAction);
  // `data` is the replacement frame for kSendModified.  False when not connected.
  bool verdict(uint64_t event_id, uint8_t action, const QByteArray& data = {});
  State state() const { return state_; }
  QString state_text() const;
  QString socket_path() const { return path_; }
  // Parses what arrived; public for the tests, which feed bytes without a socket.
  void feed(const QByteArray& bytes);

 signals:
  void state_changed(State s);
  void connected();
  void notification(const QString& method, const QJsonObject& params);
  void packet_event(const vpf::console::PacketEvent& ev);

 private:
  void on_ready_read();
  void set_state(State s, const QString& why = {});

  QString path_;
  QLocalSocket sock_;
  QTimer retry_;
  QByteArray in_;
  std::map<qint64, Callback> pending_;
  qint64 next_id_ = 1;
  State state_ = State::Disconnected;
  QString why_;
  bool unconfirmed_ = false;  // connected again after a refusal; the agent has not answered yet
};

}  // namespace vpf::console
