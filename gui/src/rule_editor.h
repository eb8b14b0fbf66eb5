// vpf-console: the rule editor — a table per rule kind (filter, passthrough, NF_RULE-style
// connection rules) and a dialog with a widget per field.  The BPF field is checked as
// you type by the agent's compiler (libpcap's message shown inline); the dialog's OK
// stays disabled while anything is invalid.
#pragma once

#include <QAbstractTableModel>
#include <QDialog>
#include <QJsonArray>
#include <QJsonObject>
#include <QTimer>

class QCheckBox;
class QComboBox;
class QDialogButtonBox;
class QLabel;
class QLineEdit;
class QSpinBox;

namespace vpf::console {

class AgentClient;

class RuleModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { Id, Adapter, Direction, Sizes, Match, Action, Priority, Enabled, Columns };
  RuleModel(QString kind, QObject* parent = nullptr) : QAbstractTableModel(parent), kind_(std::move(kind)) {}
  int rowCount(const QModelIndex& = {}) const override { return int(rules_.size()); }
  int columnCount(const QModelIndex& = {}) const override { return Columns; }
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;
  // list_rules' result (every kind): keeps this kind's, in order.
  void set_rules(const QJsonArray& all);
  QJsonObject rule(int row) const { return row >= 0 && row < rules_.size() ? rules_[row].toObject() : QJsonObject(); }
  const QString& kind() const { return kind_; }

 private:
  QString kind_;
  QJsonArray rules_;
};

// The match part of a rule in one line ("bpf: tcp port 22, remote 10.0.0.0/8:22").
QString match_text(const QJsonObject& rule);

class RuleDialog : public QDialog {
  Q_OBJECT
 public:
  // `rule` empty: a new rule of `kind`.  `adapters`: list_adapters' result for the picker.
  RuleDialog(AgentClient* agent, const QString& kind, const QJsonObject& rule, const QJsonArray& adapters,
             QWidget* parent = nullptr);
  QJsonObject rule() const;  // what the widgets say, as a docs/rules.md object
  bool valid() const { return problem_.isEmpty(); }
  QString problem() const { return problem_; }
  // For the tests: the dialog's editors.
  QLineEdit* bpf_edit() const { return bpf_; }
  QSpinBox* id_edit() const { return id_; }
  QSpinBox* min_edit() const { return min_; }
  QSpinBox* max_edit() const { return max_; }

 private:
  void revalidate();
  void check_bpf();

  AgentClient* agent_;
  QString kind_;
  QSpinBox *id_, *min_, *max_, *priority_;
  QComboBox *adapter_, *direction_, *action_, *protocol_;
  QLineEdit *bpf_, *local_, *remote_, *local_port_, *remote_port_, *flags_;
  QSpinBox* vm_;
  QCheckBox* enabled_;
  QLabel* status_;
  QDialogButtonBox* buttons_;
  QTimer bpf_timer_;
  enum class BpfState { Ok, Bad, Pending } bpf_state_ = BpfState::Ok;
  QString bpf_error_, problem_;
  int bpf_seq_ = 0;
};

}  // namespace vpf::console
