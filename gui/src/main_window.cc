// vpf-console: see main_window.h.
#include "main_window.h"

#include <sys/socket.h>

#include <QAction>
#include <QApplication>
#include <QChart>
#include <QChartView>
#include <QCloseEvent>
#include <QCheckBox>
#include <QComboBox>
#include <QInputDialog>
#include <QSpinBox>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QJsonDocument>
#include <QLabel>
#include <QLineEdit>
#include <QLineSeries>
#include <QListWidget>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>
#include <QTableWidget>
#include <QToolBar>
#include <QValueAxis>
#include <QVBoxLayout>

#include "adapter_model.h"
#include "connection_model.h"
#include "agent_client.h"
#include "decode.h"
#include "packet_model.h"
#include "rule_editor.h"
#include "vpf/netfilter.h"

namespace vpf::console {

namespace {
const char* kKinds[] = {"filter", "passthrough", "connection"};

QTableView* table(QAbstractItemModel* m) {
  auto* v = new QTableView;
  v->setModel(m);
  v->setSelectionBehavior(QAbstractItemView::SelectRows);
  v->setAlternatingRowColors(true);
  v->verticalHeader()->hide();
  v->horizontalHeader()->setStretchLastSection(true);
  v->setEditTriggers(QAbstractItemView::NoEditTriggers);
  return v;
}
}  // namespace

MainWindow::MainWindow(AgentClient* agent, QWidget* parent) : QMainWindow(parent), agent_(agent) {
  setWindowTitle(tr("vportfilter console"));
  clock_.start();
  adapters_ = new AdapterModel(this);
  packets_ = new PacketModel(this);
  connections_ = new ConnectionModel(this);
  tabs_ = new QTabWidget;
  tabs_->addTab(build_adapters_tab(), tr("&Adapters"));
  tabs_->addTab(build_rules_tab(), tr("&Rules"));
  tabs_->addTab(build_stats_tab(), tr("&Statistics"));
  tabs_->addTab(build_packets_tab(), tr("&Packets"));
  tabs_->addTab(build_connections_tab(), tr("Co&nnections"));
  setCentralWidget(tabs_);
  conn_label_ = new QLabel;
  statusBar()->addWidget(conn_label_, 1);
  auto show_state = [this] {
    conn_label_->setText(agent_->state_text());
    conn_label_->setStyleSheet(agent_->state() == AgentClient::State::Connected ? "" : "color: #c62828");
  };
  connect(agent_, &AgentClient::state_changed, this, show_state);
  show_state();
  connect(agent_, &AgentClient::connected, this, &MainWindow::on_connected);
  connect(agent_, &AgentClient::notification, this, [this](const QString& m, const QJsonObject&) {
    if (m == "adapter_added" || m == "adapter_removed") refresh_adapters();
  });
  connect(agent_, &AgentClient::packet_event, this, [this](const PacketEvent& ev) {
    // As the instance's client (capture mode) the console gets its events directly, and as
    // a monitor of every instance a copy of each: the list shows the copies, the held
    // list the captured packets to decide.  Connection events carry no frame: not packets;
    // a pended connect request waits for a verdict as a captured packet does (send allows
    // the connection, drop blocks it), so it is held too.
    if (ev.frame.type == protocol::kConnection) {
      if (!(ev.frame.flags & protocol::kMonitorCopy) && protocol::awaits_verdict(ev.frame.type, ev.frame.event_id)) hold(ev);
      return;
    }
    if (!(ev.frame.flags & protocol::kMonitorCopy)) {
      if (ev.frame.type == protocol::kCapture) hold(ev);
      return;
    }
    if (pause_packets_->isChecked()) return;
    packets_->add(ev);
    packet_count_->setText(tr("%1 packets").arg(packets_->total()));
    // The first packet is shown in the decode and hex panes until the user picks another.
    if (!packet_view_->currentIndex().isValid() && packet_filter_->rowCount() > 0) packet_view_->selectRow(0);
  });
  auto* quit = new QAction(tr("&Quit"), this);
  quit->setShortcut(QKeySequence::Quit);
  connect(quit, &QAction::triggered, this, &QWidget::close);
  addAction(quit);
  auto* refresh = new QAction(tr("Refresh"), this);
  refresh->setShortcut(QKeySequence::Refresh);
  connect(refresh, &QAction::triggered, this, [this] {
    refresh_adapters();
    refresh_rules();
    refresh_instances();
  });
  addAction(refresh);
  for (int i = 0; i < tabs_->count(); ++i) {
    auto* tab = new QAction(this);
    tab->setShortcut(QKeySequence(Qt::ALT | Qt::Key(Qt::Key_1 + i)));
    connect(tab, &QAction::triggered, this, [this, i] { tabs_->setCurrentIndex(i); });
    addAction(tab);
  }
  poll_.setInterval(1000);
  connect(&poll_, &QTimer::timeout, this, &MainWindow::poll);
  connect(&poll_, &QTimer::timeout, this, &MainWindow::refresh_held);
  poll_.start();
  QSettings s;
  if (!restoreGeometry(s.value("window/geometry").toByteArray())) resize(1280, 800);
  restoreState(s.value("window/state").toByteArray());
  tabs_->setCurrentIndex(s.value("window/tab", 0).toInt());
}

MainWindow::~MainWindow() = default;

void MainWindow::closeEvent(QCloseEvent* e) {
  QSettings s;
  s.setValue("window/geometry", saveGeometry());
  s.setValue("window/state", saveState());
  s.setValue("window/tab", tabs_->currentIndex());
  e->accept();
}

QWidget* MainWindow::build_adapters_tab() {
  auto* v = table(adapters_);
  v->setObjectName("adapters");
  v->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  v->horizontalHeader()->setStretchLastSection(false);
  return v;
}

// The connections the plugin follows on the adapters connection rules are in force on
// (docs/connections.md), refreshed with the statistics.
QWidget* MainWindow::build_connections_tab() {
  auto* w = new QWidget;
  auto* lay = new QVBoxLayout(w);
  conn_count_ = new QLabel;
  lay->addWidget(conn_count_);
  auto* v = table(connections_);
  v->setObjectName("connections");
  v->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  v->horizontalHeader()->setStretchLastSection(false);
  lay->addWidget(v, 1);
  return w;
}

void MainWindow::refresh_connections() {
  agent_->call("list_connections", {}, [this](const QJsonValue& res, const QJsonObject& err) {
    if (!err.isEmpty()) {
      conn_count_->setText(tr("Connections: %1").arg(err["message"].toString()));
      return;
    }
    const QJsonObject r = res.toObject();
    tracking_ = r["tracking"].toBool();
    connections_->set_connections(r["connections"].toArray());
    conn_count_->setText(tracking_ ? tr("%n connection(s) followed on the adapters that connection rules are in force on",
                                        nullptr, connections_->rowCount())
                                   : tr("The plugin tracks no connections (it runs with conns=0)."));
  });
}

QWidget* MainWindow::build_rules_tab() {
  auto* w = new QWidget;
  auto* lay = new QVBoxLayout(w);
  auto* bar = new QHBoxLayout;
  instance_ = new QComboBox;
  instance_->addItem("default");
  connect(instance_, &QComboBox::currentTextChanged, this, &MainWindow::refresh_rules);
  bar->addWidget(new QLabel(tr("Instance:")));
  bar->addWidget(instance_, 1);
  auto button = [&](const QString& text, QKeySequence key, auto fn) {
    auto* b = new QPushButton(text);
    b->setShortcut(key);
    b->setToolTip(key.toString(QKeySequence::NativeText));
    connect(b, &QPushButton::clicked, this, fn);
    bar->addWidget(b);
  };
  button(tr("&New…"), QKeySequence::New, [this] { edit_rule(true); });
  button(tr("&Edit…"), QKeySequence(Qt::CTRL | Qt::Key_E), [this] { edit_rule(false); });
  button(tr("&Delete"), QKeySequence::Delete, [this] { delete_rule(); });
  button(tr("Move &up"), QKeySequence(Qt::CTRL | Qt::Key_Up), [this] { move_rule("up"); });
  button(tr("Move do&wn"), QKeySequence(Qt::CTRL | Qt::Key_Down), [this] { move_rule("down"); });
  lay->addLayout(bar);
  rule_tabs_ = new QTabWidget;
  for (int i = 0; i < 3; ++i) {
    rule_models_[i] = new RuleModel(kKinds[i], this);
    rule_views_[i] = table(rule_models_[i]);
    rule_views_[i]->setObjectName(QString("rules-%1").arg(kKinds[i]));
    rule_views_[i]->horizontalHeader()->setStretchLastSection(false);
    rule_views_[i]->horizontalHeader()->setSectionResizeMode(RuleModel::Match, QHeaderView::Stretch);
    connect(rule_views_[i], &QTableView::doubleClicked, this, [this] { edit_rule(false); });
    rule_tabs_->addTab(rule_views_[i], i == 0 ? tr("Filter") : i == 1 ? tr("Passthrough") : tr("Connection (NF_RULE)"));
  }
  lay->addWidget(rule_tabs_);
  return w;
}

QWidget* MainWindow::build_stats_tab() {
  auto* split = new QSplitter;
  auto* side = new QWidget;
  auto* sl = new QVBoxLayout(side);
  metric_ = new QComboBox;
  metric_->addItems({tr("packets/s"), tr("bytes/s"), tr("drops/s")});
  connect(metric_, &QComboBox::currentIndexChanged, this, &MainWindow::update_chart);
  sl->addWidget(metric_);
  chart_adapters_ = new QListWidget;
  chart_adapters_->setObjectName("chart-adapters");
  connect(chart_adapters_, &QListWidget::itemChanged, this, &MainWindow::update_chart);
  sl->addWidget(chart_adapters_, 1);
  pause_chart_ = new QPushButton(tr("&Pause"));
  pause_chart_->setCheckable(true);
  pause_chart_->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_P));
  connect(pause_chart_, &QPushButton::toggled, this, [this](bool on) {
    pause_chart_->setText(on ? tr("&Resume") : tr("&Pause"));
    if (!on) update_chart();
  });
  sl->addWidget(pause_chart_);
  hits_ = new QTableWidget(0, 4);
  hits_->setObjectName("rule-hits");
  hits_->setHorizontalHeaderLabels({tr("Instance"), tr("Kind"), tr("Rule"), tr("Hits")});
  hits_->verticalHeader()->hide();
  hits_->horizontalHeader()->setStretchLastSection(true);
  sl->addWidget(new QLabel(tr("Rule hits")));
  sl->addWidget(hits_, 1);
  split->addWidget(side);
  hits_->setColumnWidth(0, 90);
  hits_->setColumnWidth(1, 70);
  hits_->setColumnWidth(2, 50);
  chart_ = new QChart;
  chart_->setTitle(tr("Per adapter, last %1 minutes").arg(AdapterModel::kHistory / 60));
  axis_x_ = new QValueAxis;
  axis_x_->setTitleText(tr("seconds ago"));
  axis_y_ = new QValueAxis;
  chart_->addAxis(axis_x_, Qt::AlignBottom);
  chart_->addAxis(axis_y_, Qt::AlignLeft);
  chart_view_ = new QChartView(chart_);
  chart_view_->setRenderHint(QPainter::Antialiasing);
  chart_view_->setObjectName("chart");
  split->addWidget(chart_view_);
  split->setStretchFactor(1, 4);
  split->setSizes({330, 950});
  return split;
}

QWidget* MainWindow::build_packets_tab() {
  auto* w = new QWidget;
  auto* lay = new QVBoxLayout(w);
  auto* bar = new QHBoxLayout;
  packet_search_ = new QLineEdit;
  packet_search_->setPlaceholderText(tr("filter the list (any column), Ctrl+L"));
  auto* focus = new QAction(this);
  focus->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_L));
  connect(focus, &QAction::triggered, packet_search_, qOverload<>(&QWidget::setFocus));
  addAction(focus);
  bar->addWidget(packet_search_, 1);
  pause_packets_ = new QPushButton(tr("Pa&use"));
  pause_packets_->setCheckable(true);
  bar->addWidget(pause_packets_);
  auto* clear = new QPushButton(tr("C&lear"));
  connect(clear, &QPushButton::clicked, this, [this] { packets_->clear(); });
  bar->addWidget(clear);
  auto* exp_sel = new QPushButton(tr("Export &selection…"));
  connect(exp_sel, &QPushButton::clicked, this, [this] { export_packets(true); });
  bar->addWidget(exp_sel);
  auto* exp_all = new QPushButton(tr("E&xport all…"));
  exp_all->setShortcut(QKeySequence::Save);
  connect(exp_all, &QPushButton::clicked, this, [this] { export_packets(false); });
  bar->addWidget(exp_all);
  packet_count_ = new QLabel(tr("0 packets"));
  bar->addWidget(packet_count_);
  lay->addLayout(bar);
  packet_filter_ = new PacketFilter(this);
  packet_filter_->setSourceModel(packets_);
  connect(packet_search_, &QLineEdit::textChanged, packet_filter_, &PacketFilter::set_text);
  auto* split = new QSplitter(Qt::Vertical);
  packet_view_ = table(packet_filter_);
  packet_view_->setObjectName("packets");
  packet_view_->setWordWrap(false);
  packet_view_->verticalHeader()->setDefaultSectionSize(fontMetrics().height() + 6);
  // Fixed widths from the font (resizing to contents would scan every row).
  const int ch = fontMetrics().horizontalAdvance('0');
  const int widths[] = {7, 20, 8, 5, 7, 16, 16, 10, 40, 14, 9};
  for (int c = 0; c < PacketModel::Columns; ++c) packet_view_->setColumnWidth(c, widths[c] * ch);
  packet_view_->horizontalHeader()->setSectionResizeMode(PacketModel::Info, QHeaderView::Stretch);
  packet_view_->horizontalHeader()->setStretchLastSection(false);
  connect(packet_view_->selectionModel(), &QItemSelectionModel::currentRowChanged, this, &MainWindow::show_packet);
  split->addWidget(packet_view_);
  auto* details = new QSplitter;
  decode_ = new QPlainTextEdit;
  decode_->setReadOnly(true);
  hex_ = new QPlainTextEdit;
  hex_->setReadOnly(true);
  hex_->setFont(QFont("monospace"));
  details->addWidget(decode_);
  details->addWidget(hex_);
  split->addWidget(details);
  // Capture mode: held packets, decided by hand.
  auto* holdbox = new QWidget;
  auto* hl = new QVBoxLayout(holdbox);
  hl->setContentsMargins(0, 0, 0, 0);
  auto* hbar = new QHBoxLayout;
  hold_ = new QCheckBox(tr("&Hold the captured packets of instance"));
  hold_instance_ = new QComboBox;
  hold_instance_->setEditable(true);
  hold_instance_->addItem("default");
  hold_timeout_ = new QSpinBox;
  hold_timeout_->setRange(0, 3600000);
  hold_timeout_->setSingleStep(1000);
  hold_timeout_->setValue(30000);
  hold_timeout_->setSuffix(" ms");
  hold_timeout_->setSpecialValueText(tr("no timeout"));
  hold_timeout_->setToolTip(tr("a held packet gets the instance's DenyExpiredRequests verdict after this (0, or at least 3000 ms)"));
  hbar->addWidget(hold_);
  hbar->addWidget(hold_instance_, 1);
  hbar->addWidget(new QLabel(tr("timeout")));
  hbar->addWidget(hold_timeout_);
  auto decide_button = [&](const QString& text, QKeySequence key, uint8_t action) {
    auto* b = new QPushButton(text);
    b->setShortcut(key);
    b->setToolTip(key.toString(QKeySequence::NativeText));
    b->setObjectName(QString("decide-%1").arg(action));
    connect(b, &QPushButton::clicked, this, [this, action] { decide(action); });
    hbar->addWidget(b);
  };
  decide_button(tr("Pa&ss"), QKeySequence(Qt::CTRL | Qt::Key_Return), protocol::kSend);
  decide_button(tr("Dro&p"), QKeySequence(Qt::CTRL | Qt::Key_Backspace), protocol::kDrop);
  decide_button(tr("Edi&t and send…"), QKeySequence(Qt::CTRL | Qt::Key_T), protocol::kSendModified);
  hl->addLayout(hbar);
  hold_info_ = new QLabel(tr("Not holding: captured packets go to the instance's own client, or get its expiry verdict."));
  hold_info_->setObjectName("hold-info");
  hl->addWidget(hold_info_);
  held_ = new QTableWidget(0, 6);
  held_->setObjectName("held");
  held_->setHorizontalHeaderLabels({tr("Event"), tr("Adapter"), tr("Dir"), tr("Size"), tr("Summary"), tr("Expires in")});
  held_->verticalHeader()->hide();
  held_->setSelectionBehavior(QAbstractItemView::SelectRows);
  held_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  held_->horizontalHeader()->setSectionResizeMode(4, QHeaderView::Stretch);
  hl->addWidget(held_);
  connect(hold_, &QCheckBox::toggled, this, &MainWindow::set_holding);
  split->addWidget(holdbox);
  split->setStretchFactor(0, 3);
  lay->addWidget(split);
  return w;
}

void MainWindow::start_holding(const QString& instance, int timeout_ms) {
  hold_instance_->setCurrentText(instance);
  hold_timeout_->setValue(timeout_ms);
  hold_->setChecked(true);
}

void MainWindow::set_holding(bool on) {
  if (on) {
    const QString inst = hold_instance_->currentText();
    const int timeout = hold_timeout_->value();
    if (timeout != 0 && timeout < 3000) {
      hold_info_->setText(tr("The timeout must be 0 or at least 3000 ms."));
      QSignalBlocker b(hold_);
      hold_->setChecked(false);
      return;
    }
    agent_->call("config", {{"instance", inst}, {"name", "DenyExpiredRequests"}},
                 [this](const QJsonValue& res, const QJsonObject&) { deny_expired_ = res.toObject()["value"] == "True"; });
    agent_->call("start_filter", {{"instance", inst}, {"timeout_ms", timeout}},
                 [this, inst, timeout](const QJsonValue&, const QJsonObject& err) {
                   if (!err.isEmpty()) {
                     hold_info_->setText(tr("Cannot hold: %1").arg(err["message"].toString()));
                     QSignalBlocker b(hold_);
                     hold_->setChecked(false);
                     return;
                   }
                   hold_info_->setText(timeout ? tr("Holding the captured packets of %1; undecided ones expire after %2 ms "
                                                    "(then: %3).")
                                                     .arg(inst).arg(timeout).arg(deny_expired_ ? tr("dropped") : tr("sent"))
                                               : tr("Holding the captured packets of %1; no timeout.").arg(inst));
                 });
  } else {
    // Whatever is still held gets the instance's expiry verdict from the agent.
    agent_->call("stop_filter", {}, [this](const QJsonValue&, const QJsonObject&) {
      hold_info_->setText(tr("Not holding."));
    });
    held_events_.clear();
    refresh_held();
  }
  hold_instance_->setEnabled(!on);
  hold_timeout_->setEnabled(!on);
}

void MainWindow::hold(const PacketEvent& ev) {
  const int timeout = hold_timeout_->value();
  held_events_[ev.frame.event_id] = Held{ev, timeout ? clock_.elapsed() + timeout : 0};
  refresh_held();
}

QString MainWindow::request_summary(const PacketEvent& ev) {
  vpf::ConnectionEventParams e;
  const auto* d = reinterpret_cast<const uint8_t*>(ev.data.constData());
  if (!vpf::connection_event_of(ev.frame, std::span<const uint8_t>(d, size_t(ev.data.size())), &e))
    return tr("a connect request that cannot be read");
  const auto& c = e.connection;
  const auto ep = [&](const std::string& a, unsigned p) {
    return c.ip_family == AF_INET6 ? QString("[%1]:%2").arg(QString::fromStdString(a)).arg(p)
                                   : QString("%1:%2").arg(QString::fromStdString(a)).arg(p);
  };
  return tr("connect request %1 → %2 (connection %3): Pass allows, Drop blocks")
      .arg(ep(c.local_address, c.local_port), ep(c.remote_address, c.remote_port))
      .arg(c.id);
}

void MainWindow::refresh_held() {
  // Packets whose deadline passed were decided by the agent (expiry): they leave the list.
  const qint64 now = clock_.elapsed();
  for (auto it = held_events_.begin(); it != held_events_.end();)
    it = it->second.deadline_ms && it->second.deadline_ms <= now ? held_events_.erase(it) : std::next(it);
  const QModelIndex cur = held_->currentIndex();
  const int row = cur.isValid() ? cur.row() : 0;
  held_->setRowCount(int(held_events_.size()));
  int i = 0;
  for (const auto& [id, h] : held_events_) {
    const auto& f = h.ev.frame;
    QString summary;
    if (f.type == protocol::kConnection) {
      summary = request_summary(h.ev);
    } else {
      const Summary s = summarize(h.ev.data);
      summary = QString("%1 → %2 %3 %4").arg(s.source, s.destination, s.protocol, s.info);
    }
    const QStringList cells{QString::number(id), QString::number(f.adapter), f.direction ? tr("in") : tr("out"),
                            QString::number(f.packet_size), summary,
                            h.deadline_ms ? tr("%1 s").arg((h.deadline_ms - now + 999) / 1000) : tr("never")};
    for (int c = 0; c < 6; ++c) held_->setItem(i, c, new QTableWidgetItem(cells[c]));
    ++i;
  }
  if (held_->rowCount()) held_->selectRow(std::min(row, held_->rowCount() - 1));
}

void MainWindow::decide(uint8_t action) {
  const QModelIndex cur = held_->currentIndex();
  if (!cur.isValid()) return;
  const uint64_t id = held_->item(cur.row(), 0)->text().toULongLong();
  const auto it = held_events_.find(id);
  if (it == held_events_.end()) return;
  QByteArray data;
  if (action == protocol::kSendModified && it->second.ev.frame.type == protocol::kConnection) {
    QMessageBox::warning(this, tr("Edit the packet"), tr("A connect request is allowed (Pass) or blocked (Drop), not edited."));
    return;
  }
  if (action == protocol::kSendModified) {
    bool ok = false;
    const QString text = QInputDialog::getMultiLineText(this, tr("Edit the packet"),
                                                        tr("The whole frame in hex (Ethernet header included):"),
                                                        QString(it->second.ev.data.toHex(' ')), &ok);
    if (!ok) return;
    QString digits = text;
    digits.remove(QRegularExpression("\\s"));
    data = QByteArray::fromHex(digits.toLatin1());
    if (digits.size() % 2 || data.size() * 2 != digits.size() || data.size() < 14 ||
        data.size() > int(protocol::kMaxPacket)) {
      QMessageBox::warning(this, tr("Edit the packet"),
                           tr("Not a frame: give 14..%1 bytes as hex digits.").arg(protocol::kMaxPacket));
      return;
    }
  }
  if (!agent_->verdict(id, action, data)) statusBar()->showMessage(tr("not connected: the agent decides this packet"), 5000);
  held_events_.erase(it);
  refresh_held();
}

void MainWindow::on_connected() {
  held_events_.clear();
  if (hold_->isChecked()) set_holding(true);  // a new connection: hold again
  agent_->call("subscribe", {{"instance", "*"}, {"packets", true}, {"adapters", true}});
  refresh_adapters();
  refresh_instances();
  refresh_rules();
  poll();
}

void MainWindow::report(const QString& what, const QJsonObject& error) {
  const QString msg = QString("%1: %2").arg(what, error["message"].toString());
  statusBar()->showMessage(msg, 10000);
  if (isVisible() && !error["message"].toString().contains("not connected")) QMessageBox::warning(this, what, msg);
}

void MainWindow::refresh_adapters() {
  agent_->call("list_adapters", {}, [this](const QJsonValue& res, const QJsonObject& err) {
    if (!err.isEmpty()) return;
    adapter_list_ = res.toArray();
    adapters_->set_adapters(adapter_list_);
    // The chart's adapter list: new adapters checked, gone ones removed.
    QSet<int> ids;
    for (int id : adapters_->adapter_ids()) ids.insert(id);
    for (int i = chart_adapters_->count() - 1; i >= 0; --i)
      if (!ids.contains(chart_adapters_->item(i)->data(Qt::UserRole).toInt())) delete chart_adapters_->takeItem(i);
    for (int id : adapters_->adapter_ids()) {
      bool have = false;
      for (int i = 0; i < chart_adapters_->count(); ++i) have |= chart_adapters_->item(i)->data(Qt::UserRole).toInt() == id;
      if (have) continue;
      auto* item = new QListWidgetItem(QString("%1: %2").arg(id).arg(adapters_->adapter_name(id)));
      item->setData(Qt::UserRole, id);
      item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
      item->setCheckState(Qt::Checked);
      chart_adapters_->addItem(item);
    }
  });
}

void MainWindow::refresh_instances() {
  agent_->call("status", {}, [this](const QJsonValue& res, const QJsonObject& err) {
    if (!err.isEmpty()) return;
    const QString cur = instance_->currentText();
    QStringList names;
    for (const auto& i : res.toObject()["instances"].toArray()) names << i.toObject()["guid"].toString();
    if (names == QStringList([&] {
          QStringList l;
          for (int i = 0; i < instance_->count(); ++i) l << instance_->itemText(i);
          return l;
        }()))
      return;
    QSignalBlocker block(instance_);
    instance_->clear();
    instance_->addItems(names);
    instance_->setCurrentText(names.contains(cur) ? cur : "default");
  });
}

QString MainWindow::instance() const { return instance_->currentText().isEmpty() ? "default" : instance_->currentText(); }

void MainWindow::refresh_rules() {
  agent_->call("list_rules", {{"instance", instance()}}, [this](const QJsonValue& res, const QJsonObject& err) {
    if (!err.isEmpty()) return;
    for (auto* m : rule_models_) m->set_rules(res.toArray());
  });
}

void MainWindow::poll() {
  if (agent_->state() != AgentClient::State::Connected) return;
  const double t = double(clock_.elapsed()) / 1000.0;
  agent_->call("get_statistics", {}, [this, t](const QJsonValue& res, const QJsonObject& err) {
    if (!err.isEmpty()) {
      statusBar()->showMessage(tr("statistics: %1").arg(err["message"].toString()), 3000);
      return;
    }
    const QJsonObject st = res.toObject();
    adapters_->add_statistics(st, t);
    const QJsonArray rules = st["rules"].toArray();
    hits_->setRowCount(int(rules.size()));
    for (int i = 0; i < rules.size(); ++i) {
      const QJsonObject r = rules[i].toObject();
      const QStringList cells{r["instance"].toString(), r["kind"].toString(), QString::number(r["id"].toInteger()),
                              QString::number(r["hits"].toInteger())};
      for (int c = 0; c < 4; ++c) hits_->setItem(i, c, new QTableWidgetItem(cells[c]));
    }
    if (!pause_chart_->isChecked()) update_chart();
  });
  // Rules may change from other clients: keep the editor current.
  refresh_rules();
  refresh_connections();
}

void MainWindow::update_chart() {
  chart_->removeAllSeries();
  const double now = double(clock_.elapsed()) / 1000.0;
  const int metric = metric_->currentIndex();
  double top = 1;
  for (int i = 0; i < chart_adapters_->count(); ++i) {
    const auto* item = chart_adapters_->item(i);
    if (item->checkState() != Qt::Checked) continue;
    const int id = item->data(Qt::UserRole).toInt();
    const auto* h = adapters_->history(id);
    if (!h) continue;
    for (int dir = 0; dir < 2; ++dir) {
      auto* s = new QLineSeries;
      const QString what = metric == 2 ? (dir ? tr("drops in") : tr("drops out")) : (dir ? tr("in") : tr("out"));
      s->setName(QString("%1 %2").arg(adapters_->adapter_name(id), what));
      for (const Rates& r : *h) {
        const double v = metric == 0 ? (dir ? r.rx_pps : r.tx_pps)
                         : metric == 1 ? (dir ? r.rx_bps : r.tx_bps)
                                       : (dir ? r.drop_in_ps : r.drop_out_ps);
        s->append(r.t - now, v);
        top = std::max(top, v);
      }
      chart_->addSeries(s);
      s->attachAxis(axis_x_);
      s->attachAxis(axis_y_);
    }
  }
  axis_x_->setRange(std::max(-now, -300.0), 0);
  axis_y_->setRange(0, top * 1.1);
  axis_y_->setTitleText(metric_->currentText());
}

RuleModel* MainWindow::current_rules() const { return rule_models_[rule_tabs_->currentIndex()]; }
QTableView* MainWindow::current_rule_view() const { return rule_views_[rule_tabs_->currentIndex()]; }

void MainWindow::edit_rule(bool create) {
  RuleModel* m = current_rules();
  const QModelIndex cur = current_rule_view()->currentIndex();
  if (!create && !cur.isValid()) return;
  const QJsonObject old = create ? QJsonObject() : m->rule(cur.row());
  RuleDialog dlg(agent_, m->kind(), old, adapter_list_, this);
  if (dlg.exec() != QDialog::Accepted) return;
  const QJsonObject r = dlg.rule();
  auto done = [this](const QString& what) {
    return [this, what](const QJsonValue&, const QJsonObject& err) {
      if (!err.isEmpty()) report(what, err);
      refresh_rules();
    };
  };
  if (create)
    agent_->call("add_rule", {{"instance", instance()}, {"rule", r}}, done(tr("Adding the rule")));
  else
    agent_->call("update_rule", {{"instance", instance()}, {"kind", m->kind()}, {"id", old["id"]}, {"rule", r}},
                 done(tr("Changing the rule")));
}

void MainWindow::delete_rule() {
  RuleModel* m = current_rules();
  const QModelIndex cur = current_rule_view()->currentIndex();
  if (!cur.isValid()) return;
  const QJsonObject r = m->rule(cur.row());
  agent_->call("delete_rule", {{"instance", instance()}, {"kind", m->kind()}, {"id", r["id"]}},
               [this](const QJsonValue&, const QJsonObject& err) {
                 if (!err.isEmpty()) report(tr("Deleting the rule"), err);
                 refresh_rules();
               });
}

void MainWindow::move_rule(const char* to) {
  RuleModel* m = current_rules();
  const QModelIndex cur = current_rule_view()->currentIndex();
  if (!cur.isValid()) return;
  const int row = cur.row() + (QString(to) == "up" ? -1 : 1);
  agent_->call("move_rule", {{"instance", instance()}, {"kind", m->kind()}, {"id", m->rule(cur.row())["id"]}, {"to", to}},
               [this, row](const QJsonValue&, const QJsonObject& err) {
                 if (!err.isEmpty()) report(tr("Moving the rule"), err);
                 agent_->call("list_rules", {{"instance", instance()}}, [this, row](const QJsonValue& res, const QJsonObject& e) {
                   if (!e.isEmpty()) return;
                   for (auto* rm : rule_models_) rm->set_rules(res.toArray());
                   current_rule_view()->selectRow(std::max(0, row));
                 });
               });
}

void MainWindow::show_packet() {
  const QModelIndex cur = packet_filter_->mapToSource(packet_view_->currentIndex());
  if (!cur.isValid()) return;
  const PacketEvent& ev = packets_->event(cur.row());
  decode_->setPlainText(QString("%1, adapter %2, %3, %4 bytes (%5 captured)\n")
                            .arg(format_time_ns(ev.frame.timestamp_ns))
                            .arg(ev.frame.adapter)
                            .arg(ev.frame.direction ? tr("incoming (to the VM)") : tr("outgoing (from the VM)"))
                            .arg(ev.frame.packet_size)
                            .arg(ev.frame.data_size) +
                        describe(ev.data));
  hex_->setPlainText(hex_dump(ev.data));
}

void MainWindow::export_packets(bool selection) {
  QList<int> rows;
  if (selection) {
    for (const auto& i : packet_view_->selectionModel()->selectedRows()) rows << packet_filter_->mapToSource(i).row();
    if (rows.isEmpty()) return;
  }
  QString filter;
  const QString path = QFileDialog::getSaveFileName(this, tr("Export packets"), "packets.pcapng",
                                                    tr("pcapng (*.pcapng);;pcap (*.pcap)"), &filter);
  if (path.isEmpty()) return;
  QString error;
  if (!packets_->export_file(path, !path.endsWith(".pcap"), rows, &error)) QMessageBox::warning(this, tr("Export"), error);
}

QJsonObject MainWindow::state() const {
  QJsonObject series;
  for (auto* s : chart_->series()) series[s->name()] = static_cast<QLineSeries*>(s)->count();
  QJsonObject rules;
  for (int i = 0; i < 3; ++i) rules[kKinds[i]] = rule_models_[i]->rowCount();
  return {{"connection", agent_->state_text()},
          {"connected", agent_->state() == AgentClient::State::Connected},
          {"adapters", adapters_->rowCount()},
          {"adapter_names", [this] {
             QJsonArray a;
             for (int id : adapters_->adapter_ids()) a.append(adapters_->adapter_name(id));
             return a;
           }()},
          {"series_points", series},
          {"packets", packets_->rowCount()},
          {"connections", connections_->rowCount()},
          {"tracking", tracking_},
          {"held", held_->rowCount()},
          {"held_requests", [this] {
             int n = 0;
             for (const auto& [id, h] : held_events_) n += h.ev.frame.type == protocol::kConnection;
             return n;
           }()},
          {"holding", hold_->isChecked()},
          {"rules", rules},
          {"rule_hit_rows", hits_->rowCount()}};
}

}  // namespace vpf::console
