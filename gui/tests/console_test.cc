// QtTest cases for the console's models and widgets (no agent needed).
#include <QDialogButtonBox>
#include <QFile>
#include <QJsonArray>
#include <QLineEdit>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QTemporaryDir>
#include <QtTest>
#include <cstring>

#include "adapter_model.h"
#include "agent_client.h"
#include "connection_model.h"
#include "decode.h"
#include "packet_model.h"
#include "rule_editor.h"

using namespace vpf::console;
namespace proto = vpf::protocol;

namespace {

QByteArray hex(const char* h) { return QByteArray::fromHex(h); }
// UDP 10.0.0.1:1024 -> 10.0.0.2:1280 with 4 payload bytes.
const QByteArray kUdp = hex("52540000000252540000000108004500002000000000401100000a0000010a0000020400050000080000d1000000");

QByteArray event_frame(uint32_t adapter, uint8_t type, const QByteArray& data) {
  proto::EventFrame e{};
  e.event_id = type == proto::kCapture ? 77 : 0;
  e.timestamp_ns = 1700000000123456789ull;
  e.adapter = adapter;
  e.type = type;
  e.packet_type = 1;
  e.rule_id = 5;
  e.rule_kind = 1;
  e.packet_size = uint32_t(data.size());
  e.data_size = uint32_t(data.size());
  proto::FrameHeader h{proto::kFrameMagic, uint16_t(proto::kVersion), proto::kEventFrame, uint32_t(sizeof e + data.size()), 0};
  QByteArray out(reinterpret_cast<const char*>(&h), sizeof h);
  out.append(reinterpret_cast<const char*>(&e), sizeof e);
  out.append(data);
  return out;
}

QJsonObject stats(int id, double rx, double tx, double drop_out) {
  QJsonObject total{{"packets_received", rx}, {"bytes_received", rx * 100}, {"packets_sent", tx},
                    {"bytes_sent", tx * 100}, {"packets_dropped_inbound", 0}, {"packets_dropped_outbound", drop_out}};
  return {{"adapters", QJsonArray{QJsonObject{{"adapter_id", id}, {"total", total}}}}};
}

}  // namespace

class ConsoleTest : public QObject {
  Q_OBJECT
 private slots:
  void client_parses_events_notifications_and_split_input() {
    AgentClient c("/nonexistent");
    QSignalSpy events(&c, &AgentClient::packet_event);
    QSignalSpy notes(&c, &AgentClient::notification);
    const QByteArray bytes = event_frame(3, proto::kNotify, kUdp) +
                             "{\"jsonrpc\":\"2.0\",\"method\":\"adapter_added\",\"params\":{\"adapter_id\":4}}\n" +
                             event_frame(3, proto::kCapture, kUdp);
    for (int cut : {1, 17, 70, int(bytes.size()) - 3}) {  // any split of the stream
      events.clear();
      notes.clear();
      c.feed(bytes.left(cut));
      c.feed(bytes.mid(cut));
      QCOMPARE(events.size(), 2);
      QCOMPARE(notes.size(), 1);
    }
    const auto ev = events[1][0].value<PacketEvent>();
    QCOMPARE(ev.frame.adapter, 3u);
    QCOMPARE(ev.frame.event_id, 77ull);
    QCOMPARE(ev.data, kUdp);
    QCOMPARE(notes[0][0].toString(), QString("adapter_added"));
    QCOMPARE(notes[0][1].toJsonObject()["adapter_id"].toInt(), 4);
  }

  void client_drops_a_malformed_frame_and_reports_a_refusal() {
    AgentClient c("/nonexistent");
    QSignalSpy events(&c, &AgentClient::packet_event);
    QByteArray bad = event_frame(1, proto::kNotify, kUdp);
    bad[4] = 9;  // version 9
    c.feed(bad);
    QCOMPARE(events.size(), 0);
    QVERIFY(c.state_text().contains("malformed"));
    c.feed("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"permission denied: uid 65534\"}}\n");
    QCOMPARE(c.state(), AgentClient::State::Refused);
    QVERIFY(c.state_text().contains("permission denied"));
    bool answered = false;
    c.call("status", {}, [&](const QJsonValue&, const QJsonObject& err) { answered = err["message"].toString().contains("not connected"); });
    QVERIFY(answered);
  }

  void adapter_model_follows_ports_and_computes_rates() {
    AdapterModel m;
    QJsonArray two{QJsonObject{{"id", 1}, {"name", "p2"}}, QJsonObject{{"id", 0}, {"name", "p1"}}};
    m.set_adapters(two);
    QCOMPARE(m.rowCount(), 2);
    QCOMPARE(m.index(0, AdapterModel::Name).data().toString(), QString("p1"));  // by id
    m.add_statistics(stats(0, 100, 50, 0), 10);
    QVERIFY(m.history(0) == nullptr);  // one sample: no rate yet
    m.add_statistics(stats(0, 300, 150, 20), 12);
    QCOMPARE(m.history(0)->size(), size_t(1));
    QCOMPARE(m.history(0)->back().rx_pps, 100.0);
    QCOMPARE(m.history(0)->back().tx_pps, 50.0);
    QCOMPARE(m.history(0)->back().drop_out_ps, 10.0);
    QCOMPARE(m.index(0, AdapterModel::RxTotal).data().toString(), QLocale().toString(300));
    QSignalSpy removed(&m, &QAbstractItemModel::rowsRemoved);
    QSignalSpy inserted(&m, &QAbstractItemModel::rowsInserted);
    m.set_adapters(QJsonArray{QJsonObject{{"id", 0}, {"name", "p1"}}, QJsonObject{{"id", 5}, {"name", "p9"}}});
    QCOMPARE(removed.size(), 1);
    QCOMPARE(inserted.size(), 1);
    QCOMPARE(m.adapter_ids(), QList<int>({0, 5}));
    QVERIFY(m.history(0) != nullptr);  // kept for a port that stayed
    for (int i = 0; i < 700; ++i) m.add_statistics(stats(0, 300 + i, 150, 20), 13 + i);
    QCOMPARE(m.history(0)->size(), AdapterModel::kHistory);  // bounded
  }

  void connection_model_keeps_rows_by_id() {
    ConnectionModel m;
    auto conn = [](int id, int sent, const char* state) {
      return QJsonObject{{"id", id}, {"adapter_id", 0}, {"vm", 7}, {"protocol", "tcp"}, {"ip_version", 4},
                         {"local_address", "10.0.0.1"}, {"local_port", 40000 + id}, {"remote_address", "10.0.0.2"},
                         {"remote_port", 80}, {"direction", "outgoing"}, {"state", state}, {"packets_sent", sent},
                         {"bytes_sent", sent * 60}, {"packets_received", 1}, {"bytes_received", 60}, {"idle_ms", 1500}};
    };
    m.set_connections(QJsonArray{conn(7, 1, "syn_sent"), conn(3, 4, "established")});
    QCOMPARE(m.rowCount(), 2);
    QCOMPARE(m.index(0, ConnectionModel::Id).data().toLongLong(), 3LL);  // by id
    QCOMPARE(m.index(0, ConnectionModel::Local).data().toString(), QString("10.0.0.1:40003"));
    QCOMPARE(m.index(0, ConnectionModel::Opened).data().toString(), QString("the VM"));
    QCOMPARE(m.index(0, ConnectionModel::Idle).data().toString(), QLocale().toString(1.5, 'f', 1));
    QSignalSpy removed(&m, &QAbstractItemModel::rowsRemoved);
    QSignalSpy inserted(&m, &QAbstractItemModel::rowsInserted);
    QSignalSpy changed(&m, &QAbstractItemModel::dataChanged);
    m.set_connections(QJsonArray{conn(9, 1, "syn_sent"), conn(7, 2, "established"), conn(5, 1, "syn_sent")});
    QCOMPARE(removed.size(), 1);   // 3 went
    QCOMPARE(inserted.size(), 2);  // 5 and 9 came
    QCOMPARE(changed.size(), 1);   // 7 stayed where it was, updated
    QCOMPARE(m.rowCount(), 3);
    QCOMPARE(m.index(1, ConnectionModel::Id).data().toLongLong(), 7LL);
    QCOMPARE(m.index(1, ConnectionModel::State).data().toString(), QString("established"));
    QCOMPARE(m.index(2, ConnectionModel::Id).data().toLongLong(), 9LL);
    m.set_connections(QJsonArray{});
    QCOMPARE(m.rowCount(), 0);
  }

  void decode_summaries() {
    Summary s = summarize(kUdp);
    QCOMPARE(s.protocol, QString("UDP"));
    QCOMPARE(s.source, QString("10.0.0.1"));
    QCOMPARE(s.info, QString("1024 → 1280 Len=4"));
    const QByteArray syn = hex("0000000000020000000000010800450000280000000040060000c0a80001c0a80002"
                               "d43100160000000100000000500272100000000000");
    s = summarize(syn);
    QCOMPARE(s.protocol, QString("TCP"));
    QVERIFY2(s.info.startsWith("54321 → 22 [SYN] Seq=1 Win=29200"), qPrintable(s.info));
    const QByteArray ping = hex("00000000000200000000000108004500001c0000000040010000c0a80001c0a800020800f7ff00010002");
    QCOMPARE(summarize(ping).info, QString("Echo (ping) request id=0x0001, seq=2"));
    const QByteArray arp = hex("ffffffffffff00000000000108060001080006040001000000000001c0a80001000000000000c0a80002");
    QCOMPARE(summarize(arp).info, QString("Who has 192.168.0.2? Tell 192.168.0.1"));
    QVERIFY(summarize(hex("0000")).info.contains("truncated"));
    QVERIFY(summarize(kUdp.left(20)).info.contains("truncated"));
    const QByteArray v6 = hex("000000000002000000000001" "86dd" "6000000000081140"
                              "20010db8000000000000000000000001" "20010db8000000000000000000000002" "0035d43100080000");
    s = summarize(v6);
    QCOMPARE(s.protocol, QString("UDP"));
    QCOMPARE(s.source, QString("2001:db8:0:0:0:0:0:1"));
    QVERIFY(describe(kUdp).contains("IPv4: 10.0.0.1 → 10.0.0.2"));
    QVERIFY(hex_dump(kUdp).startsWith("0000  52 54 00 00 00 02 52 54  00 00 00 01 08 00 45 00  RT....RT......E."));
  }

  void rule_dialog_allows_only_valid_rules() {
    AgentClient offline("/nonexistent");  // BPF cannot be checked without the agent
    RuleDialog d(&offline, "filter", {}, QJsonArray{QJsonObject{{"id", 3}, {"name", "p1"}}});
    auto* ok = d.findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Ok);
    QVERIFY(d.valid());
    QVERIFY(ok->isEnabled());
    d.min_edit()->setValue(100);
    d.max_edit()->setValue(60);
    QVERIFY(!d.valid());
    QVERIFY(!ok->isEnabled());
    QVERIFY(d.problem().contains("minimum"));
    d.max_edit()->setValue(1500);
    QVERIFY(d.valid());
    auto* remote = d.findChildren<QLineEdit*>()[2];  // bpf, local, remote, ...
    Q_UNUSED(remote);
    for (auto* e : d.findChildren<QLineEdit*>()) {
      if (e->placeholderText().contains("peer")) e->setText("10.0.0.0/33");
    }
    QVERIFY(d.problem().contains("remote address"));
    for (auto* e : d.findChildren<QLineEdit*>()) {
      if (e->placeholderText().contains("peer")) e->setText("10.0.0.0/8");
      if (e->placeholderText().contains("lo-hi") && e->text().isEmpty()) e->setText("80-20");
    }
    QVERIFY(d.problem().contains("port"));
    for (auto* e : d.findChildren<QLineEdit*>())
      if (e->placeholderText().contains("lo-hi")) e->setText("22");
    QVERIFY(d.valid());
    d.id_edit()->setValue(42);
    const QJsonObject r = d.rule();
    QCOMPARE(r["id"].toInt(), 42);
    QCOMPARE(r["kind"].toString(), QString("filter"));
    QCOMPARE(r["min_size"].toInt(), 100);
    QCOMPARE(r["remote"].toString(), QString("10.0.0.0/8"));
    QCOMPARE(r["remote_port"].toInt(), 22);
    QCOMPARE(r["action"].toString(), QString("drop"));
    d.bpf_edit()->setText("tcp port 22");  // not checkable offline: not valid
    QVERIFY(!d.valid());
    QTRY_VERIFY(d.problem().contains("cannot check"));
    QVERIFY(!ok->isEnabled());
  }

  void packet_model_lists_filters_bounds_and_exports() {
    PacketModel m;
    PacketEvent ev;
    std::memset(&ev.frame, 0, sizeof ev.frame);
    ev.frame.timestamp_ns = 1700000000123456789ull;
    ev.frame.packet_size = uint32_t(kUdp.size());
    ev.frame.data_size = uint32_t(kUdp.size());
    ev.frame.rule_kind = 1;
    ev.frame.rule_id = 9;
    ev.data = kUdp;
    m.add(ev);
    ev.frame.adapter = 2;
    ev.frame.type = proto::kCapture;
    m.add(ev);
    QCOMPARE(m.rowCount(), 2);
    QCOMPARE(m.index(0, PacketModel::Protocol).data().toString(), QString("UDP"));
    QCOMPARE(m.index(1, PacketModel::Event).data().toString(), QString("capture"));
    QCOMPARE(m.index(0, PacketModel::Rule).data().toString(), QString("filter 9"));
    QVERIFY(m.index(0, PacketModel::Time).data().toString().endsWith(".123456789"));
    PacketFilter f;
    f.setSourceModel(&m);
    f.set_text("capture");
    QCOMPARE(f.rowCount(), 1);
    f.set_text("");
    QCOMPARE(f.rowCount(), 2);
    QTemporaryDir dir;
    QString err;
    QVERIFY(m.export_file(dir.filePath("a.pcap"), false, {}, &err));
    QFile pcap(dir.filePath("a.pcap"));
    QVERIFY(pcap.open(QIODevice::ReadOnly));
    const QByteArray bytes = pcap.readAll();
    QCOMPARE(bytes.size(), 24 + 2 * (16 + kUdp.size()));
    QCOMPARE(bytes.left(4), hex("4d3cb2a1"));  // nanosecond pcap
    QVERIFY(m.export_file(dir.filePath("b.pcapng"), true, {1}, &err));
    QFile ng(dir.filePath("b.pcapng"));
    QVERIFY(ng.open(QIODevice::ReadOnly));
    QCOMPARE(ng.size(), 28 + 32 + 32 + ((kUdp.size() + 3) / 4) * 4);
    QVERIFY(!m.export_file("/nonexistent/x.pcap", false, {}, &err));
    QVERIFY(err.contains("cannot write"));
  }
};

QTEST_MAIN(ConsoleTest)
#include "console_test.moc"
