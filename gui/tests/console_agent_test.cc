// QtTest cases for the console's widgets against a running vpf-agent ($VPF_AGENT_SOCKET);
// run by console_e2e_test.sh, which starts the switch and the agent.
#include <QDialogButtonBox>
#include <QJsonArray>
#include <QLineEdit>
#include <QProcess>
#include <QPushButton>
#include <QTableWidget>
#include <QSpinBox>
#include <QtTest>

#include "agent_client.h"
#include "main_window.h"
#include "rule_editor.h"

using namespace vpf::console;

class ConsoleAgentTest : public QObject {
  Q_OBJECT
 private slots:
  void initTestCase() {
    QVERIFY2(qEnvironmentVariableIsSet("VPF_AGENT_SOCKET"), "run by console_e2e_test.sh");
    agent_ = new AgentClient(qEnvironmentVariable("VPF_AGENT_SOCKET"), this);
    agent_->start();
    QTRY_COMPARE(agent_->state(), AgentClient::State::Connected);
  }

  void bpf_is_checked_by_the_agent_as_you_type() {
    RuleDialog d(agent_, "filter", {}, {});
    auto* ok = d.findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Ok);
    d.id_edit()->setValue(900);
    d.bpf_edit()->setText("tcp port");
    QVERIFY(!d.valid());  // pending
    QTRY_VERIFY(d.problem().contains("syntax error"));  // libpcap's own message
    QVERIFY(!ok->isEnabled());
    d.bpf_edit()->setText("tcp port 22 and net 10.1.0.0/16");
    QTRY_VERIFY(d.valid());
    QVERIFY(ok->isEnabled());
    d.bpf_edit()->setText("udp port eighty");
    QTRY_VERIFY(d.problem().contains("eighty"));
  }

  void the_agent_refuses_what_the_dialog_cannot_know() {
    // A rule whose id exists already: the agent's error reaches the caller.
    QJsonObject err1, err2;
    bool done1 = false, done2 = false;
    const QJsonObject rule{{"kind", "filter"}, {"id", 901}, {"action", "drop"}, {"bpf", "udp port 9"}};
    agent_->call("add_rule", {{"rule", rule}}, [&](const QJsonValue&, const QJsonObject& e) { err1 = e, done1 = true; });
    QTRY_VERIFY(done1);
    QVERIFY(err1.isEmpty());
    agent_->call("add_rule", {{"rule", rule}}, [&](const QJsonValue&, const QJsonObject& e) { err2 = e, done2 = true; });
    QTRY_VERIFY(done2);
    QVERIFY(err2["message"].toString().contains("exists already"));
    bool deleted = false;
    agent_->call("delete_rule", {{"kind", "filter"}, {"id", 901}}, [&](const QJsonValue&, const QJsonObject& e) { deleted = e.isEmpty(); });
    QTRY_VERIFY(deleted);
  }

  void the_chart_gets_a_series_per_adapter_and_direction() {
    MainWindow w(agent_);
    w.show();
    // The window asks for the adapters when it sees the connection; this one is connected
    // already, so give it the signal again.
    emit agent_->connected();
    QTRY_VERIFY_WITH_TIMEOUT(w.state()["adapters"].toInt() == 2, 5000);
    // Rates need two statistics samples (one a second), the chart a point per sample.
    QTRY_VERIFY_WITH_TIMEOUT(w.state()["series_points"].toObject().size() == 4, 8000);
    QTRY_VERIFY_WITH_TIMEOUT([&] {
      const QJsonObject s = w.state()["series_points"].toObject();
      for (const auto& v : s)
        if (v.toInt() < 2) return false;
      return true;
    }(), 8000);
  }

  // A connection rule pending VM1's TCP connections to port 5001: the console holding the
  // default instance's events lists the request among the held packets; Pass completes it
  // by hand, the SYN goes on (VM2 has nothing on the port: refused at once, where a
  // blocked or still pending SYN would have timed out).
  void a_pended_connect_request_is_completed_by_hand() {
    QVERIFY2(qEnvironmentVariableIsSet("VPF_VM1") && qEnvironmentVariableIsSet("VPF_VM2_IP"), "run by console_e2e_test.sh");
    MainWindow w(agent_);
    w.show();
    emit agent_->connected();
    w.start_holding("default", 30000);
    QTRY_VERIFY_WITH_TIMEOUT(w.state()["holding"].toBool(), 5000);
    bool added = false;
    const QJsonObject rule{{"kind", "connection"}, {"id", 950}, {"protocol", "tcp"}, {"remote_port", 5001},
                           {"direction", "outgoing"}, {"flags", QJsonArray{"allow", "pend_connect_request"}}};
    agent_->call("add_rule", {{"rule", rule}}, [&](const QJsonValue&, const QJsonObject& e) {
      QVERIFY2(e.isEmpty(), qPrintable(e["message"].toString()));
      added = true;
    });
    QTRY_VERIFY(added);
    QProcess vm;
    vm.start("ip", {"netns", "exec", qEnvironmentVariable("VPF_VM1"), "python3", "-c",
                    "import socket, sys\n"
                    "try:\n    socket.create_connection(('" + qEnvironmentVariable("VPF_VM2_IP") + "', 5001), timeout=8)\n"
                    "except ConnectionRefusedError:\n    print('refused')\n"
                    "except OSError as e:\n    print('failed', e)\n"});
    QTRY_VERIFY_WITH_TIMEOUT(w.state()["held_requests"].toInt() == 1, 5000);
    auto* held = w.findChild<QTableWidget*>("held");
    QVERIFY(held->item(0, 4)->text().contains("connect request"));
    held->selectRow(0);
    w.findChild<QPushButton*>(QString("decide-%1").arg(vpf::protocol::kSend))->click();
    QCOMPARE(w.state()["held_requests"].toInt(), 0);
    // The event loop runs meanwhile: the verdict leaves through the agent's socket.
    QTRY_VERIFY_WITH_TIMEOUT(vm.state() == QProcess::NotRunning, 10000);
    QCOMPARE(QString(vm.readAllStandardOutput()).trimmed(), QString("refused"));
    bool deleted = false;
    agent_->call("delete_rule", {{"kind", "connection"}, {"id", 950}}, [&](const QJsonValue&, const QJsonObject&) { deleted = true; });
    QTRY_VERIFY(deleted);
  }

 private:
  AgentClient* agent_ = nullptr;
};

QTEST_MAIN(ConsoleAgentTest)
#include "console_agent_test.moc"
