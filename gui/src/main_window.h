// vpf-console: the main window — adapters with live counters, the rule editor, statistics
// plots and the live packet list, all through one AgentClient.
#pragma once

#include <QElapsedTimer>
#include <QJsonArray>
#include <QJsonObject>
#include <QMainWindow>
#include <QTimer>
#include <map>

#include "agent_client.h"

class QCheckBox;
class QChart;
class QSpinBox;
class QChartView;
class QComboBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QPlainTextEdit;
class QPushButton;
class QTableView;
class QTableWidget;
class QTabWidget;
class QValueAxis;

namespace vpf::console {

class AdapterModel;
class ConnectionModel;
class AgentClient;
class PacketFilter;
class PacketModel;
class RuleModel;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(AgentClient* agent, QWidget* parent = nullptr);
  ~MainWindow() override;

  // What the window shows, for the end-to-end test: adapters, chart points per series,
  // packets, rules, the connection state.
  QJsonObject state() const;
  AdapterModel* adapters() const { return adapters_; }
  PacketModel* packets() const { return packets_; }

 protected:
  void closeEvent(QCloseEvent* e) override;

 private:
  QWidget* build_adapters_tab();
  QWidget* build_rules_tab();
  QWidget* build_stats_tab();
  QWidget* build_packets_tab();
  QWidget* build_connections_tab();
  void refresh_connections();
  void on_connected();
  void poll();
  void refresh_adapters();
  void refresh_rules();
  void refresh_instances();
  void update_chart();
  void edit_rule(bool create);
  void delete_rule();
  void move_rule(const char* to);
  void show_packet();
  void export_packets(bool selection);
  // Capture mode: this console starts the instance's filter and decides its captured
  // packets by hand.
  void set_holding(bool on);
  void hold(const PacketEvent& ev);
  void decide(uint8_t action);
  void refresh_held();
  void report(const QString& what, const QJsonObject& error);
  RuleModel* current_rules() const;
  QTableView* current_rule_view() const;
  QString instance() const;

  AgentClient* agent_;
  QElapsedTimer clock_;
  QTimer poll_;
  QLabel* conn_label_;
  QTabWidget* tabs_;
  AdapterModel* adapters_;
  QJsonArray adapter_list_;
  // rules
  QComboBox* instance_;
  QTabWidget* rule_tabs_;
  RuleModel* rule_models_[3];
  QTableView* rule_views_[3];
  // statistics
  QChart* chart_;
  QChartView* chart_view_;
  QValueAxis *axis_x_, *axis_y_;
  QListWidget* chart_adapters_;
  QComboBox* metric_;
  QPushButton* pause_chart_;
  QTableWidget* hits_;
  // packets
  PacketModel* packets_;
  PacketFilter* packet_filter_;
  QTableView* packet_view_;
  QLineEdit* packet_search_;
  QPlainTextEdit *decode_, *hex_;
  QPushButton* pause_packets_;
  QLabel* packet_count_;
  // connections
  ConnectionModel* connections_;
  QLabel* conn_count_;
  bool tracking_ = false;
  // capture mode
  QCheckBox* hold_;
  QComboBox* hold_instance_;
  QSpinBox* hold_timeout_;
  QLabel* hold_info_;
  QTableWidget* held_;
  struct Held {
    PacketEvent ev;
    qint64 deadline_ms;  // clock_ time; 0 = no timeout
  };
  std::map<uint64_t, Held> held_events_;
  static QString request_summary(const PacketEvent& ev);  // a held connect request's row
  bool deny_expired_ = false;

 public:
  void start_holding(const QString& instance, int timeout_ms);  // --hold
};

}  // namespace vpf::console
