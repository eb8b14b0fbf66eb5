// vpf-console: the Qt 6 desktop console of vportfilter (a client of vpf-agent).
#include <QApplication>
#include <QCommandLineParser>
#include <QFile>
#include <QJsonDocument>
#include <QScreen>
#include <QTabWidget>
#include <QTimer>

#include "agent_client.h"
#include "main_window.h"
#include "vpf/agent_connection.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setOrganizationName("vportfilter");
  QApplication::setApplicationName("vpf-console");
  QApplication::setApplicationVersion("0.1.0");
  qRegisterMetaType<vpf::console::PacketEvent>();
  QCommandLineParser p;
  p.setApplicationDescription("The vportfilter console: adapters, rules, statistics and live packets.");
  p.addHelpOption();
  p.addVersionOption();
  QCommandLineOption socket("socket", "vpf-agent's socket (default: $VPF_AGENT_SOCKET, $OVS_RUNDIR/vpf-agent.sock, "
                                      "/var/run/openvswitch/vpf-agent.sock)", "path");
  QCommandLineOption shot("screenshot", "after --after seconds, save the window as a PNG and quit", "file.png");
  QCommandLineOption state("state", "with --screenshot: also write what the window shows as JSON", "file.json");
  QCommandLineOption after("after", "seconds before --screenshot (default 8)", "seconds", "8");
  QCommandLineOption tab("tab", "start on this tab (0 adapters, 1 rules, 2 statistics, 3 packets)", "n");
  QCommandLineOption hold("hold", "start in capture mode: hold the captured packets of this instance", "instance");
  QCommandLineOption hold_timeout("hold-timeout", "with --hold: the timeout in ms (0, or at least 3000; default 30000)",
                                  "ms", "30000");
  p.addOptions({socket, shot, state, after, tab, hold, hold_timeout});
  p.process(app);
  const QString path = p.isSet(socket) ? p.value(socket) : QString::fromStdString(vpf::AgentConnection::default_socket());
  vpf::console::AgentClient agent(path);
  vpf::console::MainWindow w(&agent);
  w.show();
  if (p.isSet(hold)) {
    QObject::connect(&agent, &vpf::console::AgentClient::connected, &w, [&] {
      static bool once = false;
      if (!once) w.start_holding(p.value(hold), p.value(hold_timeout).toInt());
      once = true;
    });
  }
  agent.start();
  if (p.isSet(tab)) static_cast<QTabWidget*>(w.centralWidget())->setCurrentIndex(p.value(tab).toInt());
  if (p.isSet(shot)) {
    QTimer::singleShot(int(p.value(after).toDouble() * 1000), &w, [&] {
      const bool saved = w.grab().save(p.value(shot));
      if (p.isSet(state)) {
        QFile f(p.value(state));
        if (f.open(QIODevice::WriteOnly)) f.write(QJsonDocument(w.state()).toJson());
      }
      QApplication::exit(saved ? 0 : 1);
    });
  }
  return app.exec();
}
