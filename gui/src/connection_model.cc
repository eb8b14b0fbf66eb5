// vpf-console: see connection_model.h.
#include "connection_model.h"

#include <QLocale>
#include <map>

namespace vpf::console {

namespace {
qint64 id_of(const QJsonObject& c) { return c["id"].toInteger(); }
QString endpoint(const QJsonObject& c, const QString& side) {
  const QString addr = c[side + "_address"].toString(), port = QString::number(c[side + "_port"].toInt());
  return c["ip_version"].toInt() == 6 ? "[" + addr + "]:" + port : addr + ":" + port;
}
}  // namespace

QVariant ConnectionModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"Id",    "Adapter",    "VM id",    "Protocol",   "Local (VM)", "Remote",  "Opened by",
                                "State", "Tx packets", "Tx bytes", "Rx packets", "Rx bytes",   "Idle (s)"};
  return tr(names[section]);
}

QVariant ConnectionModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || size_t(index.row()) >= rows_.size()) return {};
  const QJsonObject& c = rows_[size_t(index.row())];
  if (role == Qt::TextAlignmentRole && index.column() >= TxPackets) return int(Qt::AlignRight | Qt::AlignVCenter);
  if (role != Qt::DisplayRole) return {};
  const QLocale l;
  switch (index.column()) {
    case Id: return id_of(c);
    case Adapter: return c["adapter_id"].toInt();
    case Vm: return c["vm"].toInt();
    case Protocol: return c["protocol"].toString();
    case Local: return endpoint(c, "local");
    case Remote: return endpoint(c, "remote");
    case Opened: return c["direction"].toString() == "outgoing" ? tr("the VM") : tr("the peer");
    case State:
      return c["state"].toString() + (c["pending"].toBool() ? tr(" (request pending)") : QString()) +
             (c["suspended"].toBool() ? tr(" (suspended)") : QString());
    case TxPackets: return l.toString(c["packets_sent"].toInteger());
    case TxBytes: return l.toString(c["bytes_sent"].toInteger());
    case RxPackets: return l.toString(c["packets_received"].toInteger());
    case RxBytes: return l.toString(c["bytes_received"].toInteger());
    case Idle: return l.toString(c["idle_ms"].toDouble() / 1000.0, 'f', 1);
  }
  return {};
}

void ConnectionModel::set_connections(const QJsonArray& conns) {
  std::map<qint64, QJsonObject> next;
  for (const auto& v : conns) next[id_of(v.toObject())] = v.toObject();
  for (int i = int(rows_.size()) - 1; i >= 0; --i) {
    if (next.count(id_of(rows_[size_t(i)]))) continue;
    beginRemoveRows({}, i, i);
    rows_.erase(rows_.begin() + i);
    endRemoveRows();
  }
  size_t i = 0;
  for (const auto& [id, c] : next) {
    while (i < rows_.size() && id_of(rows_[i]) < id) ++i;
    if (i < rows_.size() && id_of(rows_[i]) == id) {
      rows_[i] = c;
      emit dataChanged(index(int(i), 0), index(int(i), Columns - 1));
    } else {
      beginInsertRows({}, int(i), int(i));
      rows_.insert(rows_.begin() + long(i), c);
      endInsertRows();
    }
    ++i;
  }
}

}  // namespace vpf::console
