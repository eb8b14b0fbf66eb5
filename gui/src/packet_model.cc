// vpf-console: see packet_model.h.
#include "packet_model.h"

#include <QDateTime>
#include <cstdio>

#include "vpf/capture_file.h"

namespace vpf::console {

QString format_time_ns(uint64_t ns) {
  const QDateTime t = QDateTime::fromMSecsSinceEpoch(qint64(ns / 1000000));
  return t.toString("HH:mm:ss.") + QString("%1").arg(ns % 1000000000, 9, 10, QChar('0'));
}

QVariant PacketModel::headerData(int section, Qt::Orientation o, int role) const {
  if (o != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"No.", "Time", "Adapter", "Dir", "Size", "Source", "Destination",
                                "Protocol", "Info", "Rule", "Event"};
  return tr(names[section]);
}

QVariant PacketModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || size_t(index.row()) >= rows_.size() || role != Qt::DisplayRole) return {};
  const Row& r = rows_[size_t(index.row())];
  const auto& f = r.ev.frame;
  static const char* kinds[] = {"passthrough", "filter", "connection"};
  switch (index.column()) {
    case No: return qulonglong(r.no);
    case Time: return format_time_ns(f.timestamp_ns);
    case Adapter: return f.adapter;
    case Direction: return f.direction ? tr("in") : tr("out");
    case Size: return f.packet_size;
    case Source: return r.summary.source;
    case Destination: return r.summary.destination;
    case Protocol: return r.summary.protocol;
    case Info: return r.summary.info;
    case Rule: return QString("%1 %2").arg(f.rule_kind < 3 ? kinds[f.rule_kind] : "?").arg(f.rule_id);
    case Event: return f.type == protocol::kCapture ? tr("capture") : tr("notify");
  }
  return {};
}

void PacketModel::add(const PacketEvent& ev) {
  if (rows_.size() >= kMaxPackets) {
    beginRemoveRows({}, 0, 0);
    rows_.pop_front();
    endRemoveRows();
  }
  beginInsertRows({}, int(rows_.size()), int(rows_.size()));
  rows_.push_back(Row{next_no_++, ev, summarize(ev.data)});
  endInsertRows();
}

void PacketModel::clear() {
  beginResetModel();
  rows_.clear();
  endResetModel();
}

bool PacketModel::export_file(const QString& path, bool pcapng, const QList<int>& rows, QString* error) const {
  FILE* f = std::fopen(path.toLocal8Bit().constData(), "wb");
  if (!f) {
    *error = tr("cannot write %1").arg(path);
    return false;
  }
  CaptureFileWriter w(f, pcapng);
  auto put = [&](const Row& r) {
    w.write(r.ev.frame.timestamp_ns, reinterpret_cast<const uint8_t*>(r.ev.data.constData()), uint32_t(r.ev.data.size()),
            r.ev.frame.packet_size);
  };
  if (rows.isEmpty()) {
    for (const auto& r : rows_) put(r);
  } else {
    for (int i : rows)
      if (i >= 0 && size_t(i) < rows_.size()) put(rows_[size_t(i)]);
  }
  const bool ok = w.ok() && std::fclose(f) == 0;
  if (!ok) *error = tr("writing %1 failed").arg(path);
  return ok;
}

void PacketFilter::set_text(const QString& t) {
  text_ = t.trimmed();
  invalidateFilter();
}

bool PacketFilter::filterAcceptsRow(int row, const QModelIndex& parent) const {
  if (text_.isEmpty()) return true;
  for (int c = 0; c < sourceModel()->columnCount(); ++c)
    if (sourceModel()->index(row, c, parent).data().toString().contains(text_, Qt::CaseInsensitive)) return true;
  return false;
}

}  // namespace vpf::console
