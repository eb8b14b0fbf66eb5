// vpf-console: the connections the plugin follows (the agent's list_connections), kept by
// id so that a row stays where it is while its counters move.
#pragma once

#include <QAbstractTableModel>
#include <QJsonArray>
#include <QJsonObject>
#include <vector>

namespace vpf::console {

class ConnectionModel : public QAbstractTableModel {
  Q_OBJECT
 public:
  enum Column { Id, Adapter, Vm, Protocol, Local, Remote, Opened, State, TxPackets, TxBytes, RxPackets, RxBytes, Idle, Columns };

  explicit ConnectionModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}
  int rowCount(const QModelIndex& = {}) const override { return int(rows_.size()); }
  int columnCount(const QModelIndex& = {}) const override { return Columns; }
  QVariant data(const QModelIndex& index, int role) const override;
  QVariant headerData(int section, Qt::Orientation o, int role) const override;

  // list_connections' "connections": rows that went are removed, the others updated, new
  // ones inserted in id order.
  void set_connections(const QJsonArray& conns);

 private:
  std::vector<QJsonObject> rows_;  // ordered by id
};

}  // namespace vpf::console
