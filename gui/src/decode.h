// vpf-console: one-line summaries of Ethernet frames (in the manner of tshark's), a
// layer-by-layer description, and a hex dump.  Bounds-checked: a truncated or malformed
// frame is described as such.
#pragma once

#include <QByteArray>
#include <QString>

namespace vpf::console {

struct Summary {
  QString source, destination, protocol, info;
};

Summary summarize(const QByteArray& frame);
QString describe(const QByteArray& frame);  // several lines
QString hex_dump(const QByteArray& frame);

}  // namespace vpf::console
