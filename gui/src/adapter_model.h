// vpf-console: the adapters (VM ports) with their counters and rates, and the history of
// those rates that the statistics plots draw.
#pragma once

#include <QAbstractTableModel>
#include <QJsonArray>
#include <QJsonObject>
#include <deque>
#include <map>

namespace vpf::console {

struct Rates {
  double t = 0;  // seconds since the model's start
  double rx_pps = 0, tx_pps = 0, rx_bps = 0, tx_bps = 0, drop_in_ps = 0, drop_out_ps = 0;
};

class AdapterModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { Id, Name, Friendly, Type, Mac, Vm, RxPps, TxPps, RxBps, TxBps, DropIn, DropOut, RxTotal, TxTotal, Columns };
  static constexpr size_t kHistory = 600;  // samples kept per adapter (10 minutes at 1/s)

  explicit AdapterModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}
  int rowCount(const QModelIndex& = {}) const override { return int(rows_.size()); }
  int columnCount(const QModelIndex& = {}) const override { return Columns; }
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

  // list_adapters' result: rows appear and disappear.
  void set_adapters(const QJsonArray& adapters);
  // get_statistics' result taken at `t` seconds: counters, and rates against the last one.
  void add_statistics(const QJsonObject& stats, double t);

  const std::deque<Rates>* history(int adapter_id) const;
  QList<int> adapter_ids() const;
  QString adapter_name(int adapter_id) const;

 private:
  struct Row {
    QJsonObject info;
    QJsonObject total;  // the last counters
    double last_t = -1;
    Rates rates;
  };
  std::vector<Row> rows_;  // ordered by id
  std::map<int, std::deque<Rates>> history_;
};

}  // namespace vpf::console
