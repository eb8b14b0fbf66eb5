// vpf-console: the live packet list (notify and capture events), bounded, with a
// tshark-like one-line decode per packet, and export to pcap or pcapng.
#pragma once

#include <QAbstractTableModel>
#include <QSortFilterProxyModel>
#include <deque>

#include "agent_client.h"
#include "decode.h"

namespace vpf::console {

class PacketModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { No, Time, Adapter, Direction, Size, Source, Destination, Protocol, Info, Rule, Event, Columns };
  static constexpr size_t kMaxPackets = 100000;  // the oldest go beyond this

  explicit PacketModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}
  int rowCount(const QModelIndex& = {}) const override { return int(rows_.size()); }
  int columnCount(const QModelIndex& = {}) const override { return Columns; }
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

  void add(const PacketEvent& ev);
  void clear();
  const PacketEvent& event(int row) const { return rows_[size_t(row)].ev; }
  uint64_t total() const { return next_no_ - 1; }
  // Writes the rows (all when empty) to `path`; false with *error set on failure.
  bool export_file(const QString& path, bool pcapng, const QList<int>& rows, QString* error) const;

 private:
  struct Row {
    uint64_t no;
    PacketEvent ev;
    Summary summary;
  };
  std::deque<Row> rows_;
  uint64_t next_no_ = 1;
};

// Filters on every column's text (case-insensitive substring).
class PacketFilter : public QSortFilterProxyModel {
 public:
  using QSortFilterProxyModel::QSortFilterProxyModel;
  void set_text(const QString& t);

 protected:
  bool filterAcceptsRow(int row, const QModelIndex& parent) const override;

 private:
  QString text_;
};

QString format_time_ns(uint64_t ns);  // local time with nanoseconds

}  // namespace vpf::console
