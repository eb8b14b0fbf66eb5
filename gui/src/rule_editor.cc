// vpf-console: see rule_editor.h.
#include "rule_editor.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFormLayout>
#include <QHostAddress>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QSpinBox>

#include "agent_client.h"
#include "vpf/limits.h"

namespace vpf::console {

QString match_text(const QJsonObject& r) {
  QStringList parts;
  if (r.contains("bpf")) parts << "bpf: " + r["bpf"].toString();
  for (const char* k : {"protocol", "local", "local_ip", "local_port", "remote", "remote_ip", "remote_port", "vm"}) {
    if (!r.contains(k)) continue;
    const QJsonValue v = r[k];
    parts << QString("%1 %2").arg(k, v.isString() ? v.toString() : QString::number(v.toDouble()));
  }
  if (r.contains("flags")) parts << QString("flags %1").arg(r["flags"].toInt());
  return parts.join(", ");
}

QVariant RuleModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"Id", "Adapter", "Direction", "Size", "Match", "Action", "Priority", "Enabled"};
  return tr(names[section]);
}

QVariant RuleModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= rules_.size()) return {};
  const QJsonObject r = rules_[index.row()].toObject();
  if (role == Qt::ToolTipRole) return match_text(r);
  if (role != Qt::DisplayRole) return {};
  switch (index.column()) {
    case Id: return r["id"].toInteger();
    case Adapter: return r.value("adapter").toInt(-1) < 0 ? tr("all") : QString::number(r["adapter"].toInt());
    case Direction: return r.value("direction").toString("any");
    case Sizes: {
      const int lo = r.value("min_size").toInt(-1), hi = r.value("max_size").toInt(-1);
      return lo < 0 && hi < 0 ? tr("any") : QString("%1..%2").arg(lo < 0 ? "" : QString::number(lo), hi < 0 ? "" : QString::number(hi));
    }
    case Match: return match_text(r);
    case Action:
      return kind_ == "passthrough" ? tr("pass") : kind_ == "connection" ? QString("flags %1").arg(r["flags"].toInt())
                                                                        : r.value("action").toString("drop");
    case Priority: return r.value("priority").toInt(0);
    case Enabled: return r.value("enabled").toBool(true) ? tr("yes") : tr("no");
  }
  return {};
}

void RuleModel::set_rules(const QJsonArray& all) {
  beginResetModel();
  rules_ = QJsonArray();
  for (const auto& v : all)
    if (v.toObject()["kind"].toString() == kind_) rules_.append(v);
  endResetModel();
}

RuleDialog::RuleDialog(AgentClient* agent, const QString& kind, const QJsonObject& r, const QJsonArray& adapters,
                       QWidget* parent)
    : QDialog(parent), agent_(agent), kind_(kind) {
  setWindowTitle(r.isEmpty() ? tr("New %1 rule").arg(kind) : tr("Edit %1 rule %2").arg(kind).arg(r["id"].toInteger()));
  auto* form = new QFormLayout(this);
  id_ = new QSpinBox;
  id_->setRange(0, 2147483647);
  id_->setValue(int(r["id"].toInteger()));
  form->addRow(tr("&Id"), id_);
  adapter_ = new QComboBox;
  adapter_->addItem(tr("every adapter"), -1);
  for (const auto& a : adapters) {
    const QJsonObject o = a.toObject();
    adapter_->addItem(QString("%1: %2 (%3)").arg(o["id"].toInt()).arg(o["name"].toString(), o["friendly_name"].toString()),
                      o["id"].toInt());
  }
  adapter_->setCurrentIndex(std::max(0, adapter_->findData(r.value("adapter").toInt(-1))));
  form->addRow(tr("&Adapter"), adapter_);
  direction_ = new QComboBox;
  direction_->addItem(tr("any"), "any");
  direction_->addItem(tr("outgoing (from the VM)"), "outgoing");
  direction_->addItem(tr("incoming (to the VM)"), "incoming");
  direction_->setCurrentIndex(std::max(0, direction_->findData(r.value("direction").toString("any"))));
  form->addRow(tr("&Direction"), direction_);
  min_ = new QSpinBox;
  min_->setRange(-1, int(vpf::kMaxSnaplen));
  min_->setSpecialValueText(tr("no minimum"));
  min_->setValue(r.value("min_size").toInt(-1));
  max_ = new QSpinBox;
  max_->setRange(-1, int(vpf::kMaxSnaplen));
  max_->setSpecialValueText(tr("no maximum"));
  max_->setValue(r.value("max_size").toInt(-1));
  form->addRow(tr("Mi&n size"), min_);
  form->addRow(tr("Ma&x size"), max_);
  bpf_ = new QLineEdit(r["bpf"].toString());
  bpf_->setPlaceholderText(tr("libpcap filter, e.g. tcp port 22 and net 10.1.0.0/16"));
  form->addRow(tr("&BPF"), bpf_);
  action_ = new QComboBox;
  for (const char* a : {"drop", "capture", "notify", "count"}) action_->addItem(a, a);
  action_->setCurrentIndex(std::max(0, action_->findData(r.value("action").toString("drop"))));
  if (kind_ == "filter") form->addRow(tr("A&ction"), action_);
  priority_ = new QSpinBox;
  priority_->setRange(0, 65535);
  priority_->setValue(r.value("priority").toInt(0));
  form->addRow(tr("&Priority"), priority_);
  protocol_ = new QComboBox;
  protocol_->setEditable(true);
  for (const char* p : {"any", "tcp", "udp", "icmp", "icmp6", "sctp"}) protocol_->addItem(p);
  protocol_->setCurrentText(r.contains("protocol") ? (r["protocol"].isString() ? r["protocol"].toString()
                                                                                : QString::number(r["protocol"].toInt()))
                                                   : "any");
  form->addRow(tr("P&rotocol"), protocol_);
  local_ = new QLineEdit(r.value("local").toString(r.value("local_ip").toString()));
  local_->setPlaceholderText(tr("the VM's address[/prefix]"));
  remote_ = new QLineEdit(r.value("remote").toString(r.value("remote_ip").toString()));
  remote_->setPlaceholderText(tr("the peer's address[/prefix]"));
  auto port_text = [](const QJsonValue& v) {
    return v.isArray() ? QString("%1-%2").arg(v[0].toInt()).arg(v[1].toInt()) : v.isDouble() ? QString::number(v.toInt()) : v.toString();
  };
  local_port_ = new QLineEdit(port_text(r["local_port"]));
  remote_port_ = new QLineEdit(port_text(r["remote_port"]));
  local_port_->setPlaceholderText(tr("port or lo-hi"));
  remote_port_->setPlaceholderText(tr("port or lo-hi"));
  form->addRow(tr("&Local address"), local_);
  form->addRow(tr("Local p&ort"), local_port_);
  form->addRow(tr("R&emote address"), remote_);
  form->addRow(tr("Remote por&t"), remote_port_);
  vm_ = new QSpinBox;
  vm_->setRange(0, 2147483647);
  vm_->setSpecialValueText(tr("any VM"));
  vm_->setValue(r.value("vm").toInt(0));
  form->addRow(tr("&VM id"), vm_);
  flags_ = new QLineEdit(r.contains("flags") ? QString::number(r["flags"].toInt()) : QString("1"));
  flags_->setPlaceholderText(tr("NF_RULE flags: a number, or names (block, filter, ...)"));
  if (kind_ == "connection") form->addRow(tr("&Flags"), flags_);
  enabled_ = new QCheckBox(tr("rule in force"));
  enabled_->setChecked(r.value("enabled").toBool(true));
  form->addRow(tr("Ena&bled"), enabled_);
  status_ = new QLabel;
  status_->setObjectName("status");
  status_->setWordWrap(true);
  form->addRow(status_);
  buttons_ = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
  form->addRow(buttons_);
  connect(buttons_, &QDialogButtonBox::accepted, this, &QDialog::accept);
  connect(buttons_, &QDialogButtonBox::rejected, this, &QDialog::reject);

  bpf_timer_.setSingleShot(true);
  bpf_timer_.setInterval(250);  // checked when typing pauses
  connect(&bpf_timer_, &QTimer::timeout, this, &RuleDialog::check_bpf);
  connect(bpf_, &QLineEdit::textChanged, this, [this] {
    bpf_state_ = bpf_->text().trimmed().isEmpty() ? BpfState::Ok : BpfState::Pending;
    bpf_timer_.start();
    revalidate();
  });
  for (QSpinBox* s : {id_, min_, max_, priority_, vm_}) connect(s, &QSpinBox::valueChanged, this, &RuleDialog::revalidate);
  for (QLineEdit* e : {local_, remote_, local_port_, remote_port_, flags_})
    connect(e, &QLineEdit::textChanged, this, &RuleDialog::revalidate);
  connect(protocol_, &QComboBox::currentTextChanged, this, &RuleDialog::revalidate);
  if (!bpf_->text().isEmpty()) {
    bpf_state_ = BpfState::Pending;
    check_bpf();
  }
  revalidate();
}

void RuleDialog::check_bpf() {
  const QString expr = bpf_->text().trimmed();
  if (expr.isEmpty()) return;
  const int seq = ++bpf_seq_;
  agent_->call("check_bpf", {{"expression", expr}}, [this, seq](const QJsonValue& res, const QJsonObject& err) {
    if (seq != bpf_seq_) return;  // an older check: the text changed since
    if (!err.isEmpty()) {
      bpf_state_ = BpfState::Bad;
      bpf_error_ = tr("cannot check the expression: %1").arg(err["message"].toString());
    } else {
      const QJsonObject o = res.toObject();
      bpf_state_ = o["ok"].toBool() ? BpfState::Ok : BpfState::Bad;
      bpf_error_ = o["error"].toString();
    }
    revalidate();
  });
}

namespace {
bool valid_address(const QString& t) {
  if (t.isEmpty()) return true;
  const auto parts = t.split('/');
  if (parts.size() > 2) return false;
  QHostAddress a;
  if (!a.setAddress(parts[0])) return false;
  if (parts.size() == 1) return true;
  bool ok = false;
  const int len = parts[1].toInt(&ok);
  return ok && len >= 0 && len <= (a.protocol() == QAbstractSocket::IPv6Protocol ? 128 : 32);
}
bool valid_port(const QString& t) {
  static const QRegularExpression re("^(\\d{1,5})(?:-(\\d{1,5}))?$");
  if (t.isEmpty()) return true;
  const auto m = re.match(t);
  if (!m.hasMatch()) return false;
  const int lo = m.captured(1).toInt(), hi = m.captured(2).isEmpty() ? lo : m.captured(2).toInt();
  return lo <= hi && hi <= 65535;
}
}  // namespace

void RuleDialog::revalidate() {
  problem_.clear();
  if (min_->value() >= 0 && max_->value() >= 0 && min_->value() > max_->value()) problem_ = tr("the minimum size is above the maximum");
  else if (max_->value() == 0) problem_ = tr("a maximum size of 0 matches nothing");
  else if (!valid_address(local_->text().trimmed())) problem_ = tr("local address: not an address[/prefix]");
  else if (!valid_address(remote_->text().trimmed())) problem_ = tr("remote address: not an address[/prefix]");
  else if (!valid_port(local_port_->text().trimmed())) problem_ = tr("local port: not a port or lo-hi range");
  else if (!valid_port(remote_port_->text().trimmed())) problem_ = tr("remote port: not a port or lo-hi range");
  else if (bpf_state_ == BpfState::Bad) problem_ = tr("BPF: %1").arg(bpf_error_);
  else if (bpf_state_ == BpfState::Pending) problem_ = tr("checking the BPF expression…");
  status_->setText(problem_.isEmpty() ? tr("✓ valid") : problem_);
  status_->setStyleSheet(problem_.isEmpty() ? "color: palette(text)" : "color: #c62828");
  buttons_->button(QDialogButtonBox::Ok)->setEnabled(problem_.isEmpty());
}

QJsonObject RuleDialog::rule() const {
  QJsonObject r{{"kind", kind_}, {"id", id_->value()}, {"adapter", adapter_->currentData().toInt()},
                {"direction", direction_->currentData().toString()}, {"min_size", min_->value()},
                {"max_size", max_->value()}, {"priority", priority_->value()}, {"enabled", enabled_->isChecked()}};
  if (!bpf_->text().trimmed().isEmpty()) r["bpf"] = bpf_->text().trimmed();
  if (kind_ == "filter") r["action"] = action_->currentData().toString();
  const QString proto = protocol_->currentText().trimmed();
  if (!proto.isEmpty() && proto != "any") {
    bool num = false;
    const int n = proto.toInt(&num);
    r["protocol"] = num ? QJsonValue(n) : QJsonValue(proto);
  }
  auto port = [](const QString& t) -> QJsonValue {
    bool num = false;
    const int n = t.toInt(&num);
    return num ? QJsonValue(n) : QJsonValue(t);
  };
  if (!local_->text().trimmed().isEmpty()) r["local"] = local_->text().trimmed();
  if (!remote_->text().trimmed().isEmpty()) r["remote"] = remote_->text().trimmed();
  if (!local_port_->text().trimmed().isEmpty()) r["local_port"] = port(local_port_->text().trimmed());
  if (!remote_port_->text().trimmed().isEmpty()) r["remote_port"] = port(remote_port_->text().trimmed());
  if (vm_->value() > 0) r["vm"] = vm_->value();
  if (kind_ == "connection") {
    bool num = false;
    const int n = flags_->text().toInt(&num);
    if (num) {
      r["flags"] = n;
    } else {
      QJsonArray names;
      for (const auto& s : flags_->text().split(',', Qt::SkipEmptyParts)) names.append(s.trimmed());
      r["flags"] = names;
    }
  }
  return r;
}

}  // namespace vpf::console
