// vpf-console: see adapter_model.h.
#include "adapter_model.h"

#include <QLocale>

namespace vpf::console {

namespace {
QString rate(double v) { return QLocale().toString(v, 'f', v < 10 ? 1 : 0); }
double counter(const QJsonObject& o, const char* k) { return o[k].toDouble(); }
}  // namespace

QVariant AdapterModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"Id", "Name", "VM name", "Type", "MAC", "VM id", "Rx pkt/s", "Tx pkt/s",
                                "Rx B/s", "Tx B/s", "Drops in", "Drops out", "Rx packets", "Tx packets"};
  return tr(names[section]);
}

QVariant AdapterModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || size_t(index.row()) >= rows_.size()) return {};
  const Row& r = rows_[size_t(index.row())];
  if (role == Qt::TextAlignmentRole && index.column() >= RxPps) return int(Qt::AlignRight | Qt::AlignVCenter);
  if (role == Qt::ToolTipRole) return r.info["description"].toString();
  if (role != Qt::DisplayRole) return {};
  switch (index.column()) {
    case Id: return r.info["id"].toInt();
    case Name: return r.info["name"].toString();
    case Friendly: return r.info["friendly_name"].toString();
    case Type: return r.info["type"].toString();
    case Mac: return r.info["mac"].toString();
    case Vm: return r.info["vm"].toInt();
    case RxPps: return rate(r.rates.rx_pps);
    case TxPps: return rate(r.rates.tx_pps);
    case RxBps: return rate(r.rates.rx_bps);
    case TxBps: return rate(r.rates.tx_bps);
    case DropIn: return QLocale().toString(qint64(counter(r.total, "packets_dropped_inbound")));
    case DropOut: return QLocale().toString(qint64(counter(r.total, "packets_dropped_outbound")));
    case RxTotal: return QLocale().toString(qint64(counter(r.total, "packets_received")));
    case TxTotal: return QLocale().toString(qint64(counter(r.total, "packets_sent")));
  }
  return {};
}

void AdapterModel::set_adapters(const QJsonArray& adapters) {
  std::map<int, QJsonObject> next;
  for (const auto& a : adapters) next[a.toObject()["id"].toInt()] = a.toObject();
  // Remove the rows that went, update the others, insert the new ones (in id order).
  for (int i = int(rows_.size()) - 1; i >= 0; --i) {
    const int id = rows_[size_t(i)].info["id"].toInt();
    if (!next.count(id)) {
      beginRemoveRows({}, i, i);
      rows_.erase(rows_.begin() + i);
      history_.erase(id);
      endRemoveRows();
    }
  }
  for (const auto& [id, info] : next) {
    size_t i = 0;
    while (i < rows_.size() && rows_[i].info["id"].toInt() < id) ++i;
    if (i < rows_.size() && rows_[i].info["id"].toInt() == id) {
      rows_[i].info = info;
      emit dataChanged(index(int(i), 0), index(int(i), Columns - 1));
    } else {
      beginInsertRows({}, int(i), int(i));
      rows_.insert(rows_.begin() + long(i), Row{info, {}, -1, {}});
      endInsertRows();
    }
  }
}

void AdapterModel::add_statistics(const QJsonObject& stats, double t) {
  for (const auto& v : stats["adapters"].toArray()) {
    const QJsonObject a = v.toObject();
    const int id = a["adapter_id"].toInt();
    for (size_t i = 0; i < rows_.size(); ++i) {
      Row& r = rows_[i];
      if (r.info["id"].toInt() != id) continue;
      const QJsonObject now = a["total"].toObject();
      if (r.last_t >= 0 && t > r.last_t) {
        const double dt = t - r.last_t;
        auto d = [&](const char* k) { return std::max(0.0, counter(now, k) - counter(r.total, k)) / dt; };
        r.rates = Rates{t, d("packets_received"), d("packets_sent"), d("bytes_received"), d("bytes_sent"),
                        d("packets_dropped_inbound"), d("packets_dropped_outbound")};
        auto& h = history_[id];
        h.push_back(r.rates);
        while (h.size() > kHistory) h.pop_front();
      }
      r.total = now;
      r.last_t = t;
      emit dataChanged(index(int(i), RxPps), index(int(i), Columns - 1));
    }
  }
}

const std::deque<Rates>* AdapterModel::history(int adapter_id) const {
  const auto it = history_.find(adapter_id);
  return it == history_.end() ? nullptr : &it->second;
}

QList<int> AdapterModel::adapter_ids() const {
  QList<int> out;
  for (const auto& r : rows_) out.push_back(r.info["id"].toInt());
  return out;
}

QString AdapterModel::adapter_name(int adapter_id) const {
  for (const auto& r : rows_)
    if (r.info["id"].toInt() == adapter_id) return r.info["name"].toString();
  return QString::number(adapter_id);
}

}  // namespace vpf::console
