// vportfilter's packet-hook plugin: see plugin.h.
#include "plugin.h"

#include <cstdlib>
#include <sstream>

#include "vpf/matcher/rules_json.h"

namespace vpf::plugin {

using matcher::Action;
using matcher::Decision;
using matcher::Direction;
using matcher::PacketRef;

namespace {

std::atomic<uint64_t> g_generation{0};

// The reader index of this thread for the plugin instance of generation tls_gen.
thread_local uint64_t tls_gen = 0;
thread_local int tls_reader = -1;

}  // namespace

Plugin::Plugin(const ovs_packet_hook_host* host) : host_(host), generation_(++g_generation) {}

Plugin::~Plugin() = default;

void Plugin::classify(const PacketRef* refs, uint32_t n, Decision* out) {
  if (tls_gen != generation_) {
    tls_gen = generation_;
    tls_reader = next_reader_.fetch_add(1);
    if (tls_reader < kMaxThreads) readers_[size_t(tls_reader)].emplace(classifier_.reader());
  }
  if (tls_reader < kMaxThreads) {
    readers_[size_t(tls_reader)]->classify(refs, n, out);
    return;
  }
  std::lock_guard lock(overflow_mu_);
  if (!readers_[kMaxThreads]) readers_[kMaxThreads].emplace(classifier_.reader());
  readers_[kMaxThreads]->classify(refs, n, out);
}

Port* Plugin::port_open(const char* name, const char* type) {
  auto p = std::make_unique<Port>();
  p->name = name;
  p->type = type;
  Port* raw = p.get();
  std::lock_guard lock(ports_mu_);
  ports_.push_back(std::move(p));
  return raw;
}

void Plugin::port_close(Port* port) {
  std::lock_guard lock(ports_mu_);
  std::erase_if(ports_, [&](const std::unique_ptr<Port>& p) { return p.get() == port; });
}

void Plugin::hook(Port* port, Direction dir, ovs_packet_hook_batch* b) {
  const int32_t adapter = port->adapter.load(std::memory_order_relaxed);
  if (adapter < 0 || b->count == 0) return;
  const uint32_t n = b->count < matcher::kMaxBatch ? b->count : matcher::kMaxBatch;
  PacketRef refs[matcher::kMaxBatch];
  Decision out[matcher::kMaxBatch];
  const matcher::PacketMeta meta{uint32_t(adapter), dir, port->vm.load(std::memory_order_relaxed)};
  uint64_t bytes = 0, dropped = 0, dropped_bytes = 0, lost = 0;
  for (uint32_t i = 0; i < n; ++i) {
    refs[i].data = host_->packet_data(b->packets[i]);
    refs[i].len = host_->packet_size(b->packets[i]);
    refs[i].meta = meta;
    bytes += refs[i].len;
  }
  classify(refs, n, out);
  const bool closed = policy_.load(std::memory_order_relaxed) == Policy::FailClosed;
  for (uint32_t i = 0; i < n; ++i) {
    bool drop = false;
    switch (out[i].action) {
      case Action::Drop:
        drop = true;
        break;
      case Action::Capture:  // no agent attached yet: the policy decides
        ++lost;
        drop = closed;
        break;
      case Action::Notify:
        ++lost;
        break;
      case Action::Pass:
        break;
    }
    if (drop) {
      b->verdicts[i] = OVS_PACKET_DROP;
      ++dropped;
      dropped_bytes += refs[i].len;
    }
  }
  DirCounters& c = dir == Direction::Outgoing ? port->out : port->in;
  c.packets.fetch_add(n, std::memory_order_relaxed);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
  if (dropped) {
    c.dropped.fetch_add(dropped, std::memory_order_relaxed);
    c.dropped_bytes.fetch_add(dropped_bytes, std::memory_order_relaxed);
  }
  if (lost) c.events_lost.fetch_add(lost, std::memory_order_relaxed);
}

std::string Plugin::show() const {
  std::ostringstream o;
  const auto s = classifier_.stats();
  o << "rules: " << s.rules << " (" << s.entries << " entries in " << s.tables << " tables, kernel "
    << matcher::isa_name(classifier_.isa()) << ")\n";
  o << "policy without agent: " << (policy_.load() == Policy::FailOpen ? "fail-open" : "fail-closed") << "\n";
  o << "agent: not attached\n";
  std::lock_guard lock(ports_mu_);
  for (const auto& p : ports_) {
    const int32_t a = p->adapter.load();
    if (a < 0) continue;
    o << "adapter " << a << ": " << p->name << " (" << p->type << ", vm " << p->vm.load() << ")\n";
    for (auto [name, c] : {std::pair{"outgoing", &p->out}, std::pair{"incoming", &p->in}})
      o << "  " << name << ": packets " << c->packets.load() << " bytes " << c->bytes.load() << " dropped "
        << c->dropped.load() << " dropped_bytes " << c->dropped_bytes.load() << " events_lost "
        << c->events_lost.load() << "\n";
  }
  return o.str();
}

std::string Plugin::rules_load(const std::string& path, bool* ok) {
  *ok = false;
  try {
    const auto rules = matcher::rules_from_file(path);
    std::vector<matcher::RuleRef> old;
    for (const auto& info : classifier_.rules()) old.push_back({info.rule.kind, info.rule.id});
    classifier_.apply(old, rules);  // one snapshot: all or nothing
    *ok = true;
    return "loaded " + std::to_string(rules.size()) + " rules from " + path;
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string Plugin::adapter_set(const std::string& port, const std::string& id, const std::string& vm, bool* ok) {
  *ok = false;
  char* end = nullptr;
  const long a = std::strtol(id.c_str(), &end, 10);
  if (id.empty() || *end || a < -1 || a > 0x7fffffff) return "'" + id + "' is not an adapter id (0.., or -1 to release)";
  long v = 0;
  if (!vm.empty()) {
    v = std::strtol(vm.c_str(), &end, 10);
    if (*end || v < 0 || v > 0xffffffffL) return "'" + vm + "' is not a VM id";
  }
  std::lock_guard lock(ports_mu_);
  for (const auto& p : ports_) {
    if (p->name != port) continue;
    p->vm.store(uint32_t(v));
    p->adapter.store(int32_t(a));
    *ok = true;
    return "";
  }
  return "no port named '" + port + "'";
}

std::string Plugin::policy_set(const std::string& name, bool* ok) {
  *ok = true;
  if (name == "fail-open") policy_ = Policy::FailOpen;
  else if (name == "fail-closed") policy_ = Policy::FailClosed;
  else {
    *ok = false;
    return "'" + name + "' is not fail-open or fail-closed";
  }
  return "";
}

}  // namespace vpf::plugin
