// Matcher benchmarks: the classifier (every kernel) against DPDK's rte_acl and a linear
// scan on ClassBench-like rule sets; rule update latency against rte_acl's rebuild; one
// BPF expression against DPDK's rte_bpf JIT and libpcap's bpf_filter; 100 BPF rules vs 1.
//
// Each comparison runs both sides in the same process on the same packets, checks that
// they decide the same, and ends with lines "ratio <name> <value>" (how many times faster
// vportfilter is; higher is better).  Run through scripts/bench.sh matcher.
//
// VPF_BENCH_CLASSBENCH=DIR adds every standard ClassBench filter set NAME of DIR that has
// its header trace NAME_trace beside it: converted as `vpf-gen --from-classbench` does,
// cross-checked against rte_acl on the whole trace, classified by both, and reported as
// "ratio classify_cb_NAME_vs_rte_acl".
#include <benchmark/benchmark.h>
#include <pcap/pcap.h>
#include <rte_acl.h>
#include <rte_bpf.h>
#include <rte_eal.h>
#include <rte_mbuf.h>
#include <malloc.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <chrono>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>

#include "classbench.h"
#include "vpf/matcher/classifier.h"

using namespace vpf;
using namespace vpf::matcher;

namespace {

// ---------------------------------------------------------------- shared data

size_t trace_len() {
  const char* e = std::getenv("VPF_BENCH_TRACE");
  return e ? size_t(std::strtoull(e, nullptr, 10)) : 1000000;
}

struct RuleSetData {
  std::vector<Rule> rules;
  std::vector<std::vector<uint8_t>> frames;
  std::vector<PacketRef> refs;
  std::vector<const uint8_t*> l3;  // rte_acl input: the IPv4 header
};

void add_frames(RuleSetData& d, const std::vector<bench::Header>& trace) {
  for (const auto& h : trace) d.frames.push_back(bench::header_frame(h));
  for (const auto& f : d.frames) {
    d.refs.push_back(PacketRef{f.data(), uint32_t(f.size()), {0, Direction::Outgoing, 0}});
    d.l3.push_back(f.data() + 14);
  }
}

RuleSetData& ruleset(size_t n, bench::Style style = bench::Style::Acl, int family = 4) {
  static std::map<std::tuple<size_t, int, int>, std::unique_ptr<RuleSetData>> cache;
  auto& slot = cache[{n, int(style), family}];
  if (!slot) {
    slot = std::make_unique<RuleSetData>();
    bench::GenOptions g;
    g.style = style;
    g.family = family;
    g.count = n;
    g.seed = 1000 + n + 17 * size_t(style) + family;
    slot->rules = bench::generate_rules(g);
    add_frames(*slot, bench::generate_trace(slot->rules, trace_len(), 77 + n));
  }
  return *slot;
}

std::map<std::string, double> g_ns_per_pkt;  // benchmark name -> ns per packet
std::map<std::string, std::string> g_notes;

// A classifier loaded with `rules`, its tree built; its figures into note `key`.
std::unique_ptr<Classifier> load_ours(const std::vector<Rule>& rules, const std::string& key) {
  auto c = std::make_unique<Classifier>();
      // The tree is built once, alone and timed, as the background builder would build it
      // a moment after the load (in Background mode it would start during the load and
      // run beside build_tree(): two builds at once on this machine's two cores).
      c->set_tree_mode(Classifier::TreeMode::Manual);
      const size_t heap0 = mallinfo2().uordblks;
      const auto t0 = std::chrono::steady_clock::now();
      c->apply({}, rules);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      c->build_tree();
      const double tree_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() - ms;
      // Everything the classifier allocated for these rules (its structures as counted
      // by stats(), plus the rules it keeps, the entries' shared-pointer control blocks
      // and malloc's own headers), with the tree built and the build's scratch freed.
      const double heap_per_rule = double(mallinfo2().uordblks - heap0) / double(rules.size());
      c->set_tree_mode(Classifier::TreeMode::Background);
      const auto s = c->stats();
      char buf[320];
      std::snprintf(buf, sizeof buf,
                    "%u rules -> %u entries, tree of %u entries (%u leaf items, depth %u, built in %.1f ms), "
                    "%u tables, %.1f bytes/rule (heap %.1f), load %.1f ms",
                    s.rules, s.entries, s.tree_entries, s.tree_items, s.tree_depth, tree_ms, s.tables,
                    double(s.memory_bytes) / s.rules, heap_per_rule, ms);
      g_notes[key] = buf;
  return c;
}

struct OursCache {
  std::map<std::tuple<size_t, int, int>, std::unique_ptr<Classifier>> by_n;
  Classifier& get(size_t n, bench::Style style = bench::Style::Acl, int family = 4) {
    auto& c = by_n[{n, int(style), family}];
    if (!c)
      c = load_ours(ruleset(n, style, family).rules,
                    "ours_" + std::string(bench::style_name(style)) + (family == 6 ? "6_" : "_") + std::to_string(n));
    return *c;
  }
} g_ours;

// The ClassBench pairs of VPF_BENCH_CLASSBENCH, by name.
struct CbSet {
  RuleSetData data;
  std::unique_ptr<Classifier> ours;
};
std::map<std::string, std::unique_ptr<CbSet>> g_cb;

// Every NAME of `dir` with NAME_trace beside it; throws naming what could not be read.
void load_classbench(const std::string& dir) {
  namespace fs = std::filesystem;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.ends_with("_trace") || !fs::exists(e.path().string() + "_trace")) continue;
    auto cb = std::make_unique<CbSet>();
    cb->data.rules = bench::read_classbench_filters(e.path().string());
    add_frames(cb->data, bench::read_classbench_trace(e.path().string() + "_trace"));
    if (cb->data.rules.empty() || cb->data.refs.size() < 32)
      throw std::runtime_error(e.path().string() + ": needs at least one rule and 32 headers in its trace");
    cb->ours = load_ours(cb->data.rules, "ours_cb_" + name);
    g_cb[name] = std::move(cb);
  }
}

// ---------------------------------------------------------------- rte_acl

RTE_ACL_RULE_DEF(Acl5, 5);

const rte_acl_field_def kAclFields[5] = {
    {.type = RTE_ACL_FIELD_TYPE_BITMASK, .size = 1, .field_index = 0, .input_index = 0, .offset = 9},
    {.type = RTE_ACL_FIELD_TYPE_MASK, .size = 4, .field_index = 1, .input_index = 1, .offset = 12},
    {.type = RTE_ACL_FIELD_TYPE_MASK, .size = 4, .field_index = 2, .input_index = 2, .offset = 16},
    {.type = RTE_ACL_FIELD_TYPE_RANGE, .size = 2, .field_index = 3, .input_index = 3, .offset = 20},
    {.type = RTE_ACL_FIELD_TYPE_RANGE, .size = 2, .field_index = 4, .input_index = 3, .offset = 22},
};

bool g_eal_ok = false;

// rte_acl rules for `rules` (rule i: priority by position, userdata i + 1).  A port
// condition applies to TCP, UDP, SCTP and UDP-Lite only (docs/rules.md), while rte_acl
// reads the four bytes after the IPv4 header whatever the protocol: a rule for any protocol
// with a port condition becomes one rte_acl rule for each of the four.
std::vector<Acl5> acl_rules(const std::vector<Rule>& rules) {
  std::vector<Acl5> out;
  out.reserve(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) {
    const Rule& r = rules[i];
    std::vector<uint8_t> protos = {r.protocol};
    if (r.protocol == 0 && (!r.local_port.any() || !r.remote_port.any())) protos = {6, 17, 132, 136};
    for (const uint8_t proto : protos) {
      Acl5& a = out.emplace_back();
      std::memset(&a, 0, sizeof a);
      a.data.category_mask = 1;
      a.data.priority = int32_t(RTE_ACL_MAX_PRIORITY - i);  // first rule wins
      a.data.userdata = uint32_t(i + 1);
      a.field[0].value.u8 = proto;
      a.field[0].mask_range.u8 = proto ? 0xff : 0;
      auto plen = [](const IpAddr& addr, const IpAddr& m) {
        if (addr.is_zero() && m.is_zero()) return 0;
        return m.is_zero() ? 32 : std::countl_one(m.w[0]);
      };
      a.field[1].value.u32 = r.local_ip.w[0];
      a.field[1].mask_range.u32 = uint32_t(plen(r.local_ip, r.local_mask));
      a.field[2].value.u32 = r.remote_ip.w[0];
      a.field[2].mask_range.u32 = uint32_t(plen(r.remote_ip, r.remote_mask));
      a.field[3].value.u16 = r.local_port.lo;
      a.field[3].mask_range.u16 = r.local_port.hi;
      a.field[4].value.u16 = r.remote_port.lo;
      a.field[4].mask_range.u16 = r.remote_port.hi;
    }
  }
  return out;
}

struct AclCtx {
  rte_acl_ctx* ctx = nullptr;
  double build_ms = 0;
  ~AclCtx() {
    if (ctx) rte_acl_free(ctx);
  }
};

std::unique_ptr<AclCtx> build_acl(const std::vector<Rule>& rules, const std::string& name) {
  auto a = std::make_unique<AclCtx>();
  rte_acl_param prm{};
  prm.name = name.c_str();
  prm.socket_id = SOCKET_ID_ANY;
  prm.rule_size = RTE_ACL_RULE_SZ(5);
  auto ar = acl_rules(rules);
  prm.max_rule_num = uint32_t(ar.size());
  a->ctx = rte_acl_create(&prm);
  if (!a->ctx) return nullptr;
  if (rte_acl_add_rules(a->ctx, reinterpret_cast<rte_acl_rule*>(ar.data()), uint32_t(ar.size())) != 0) return nullptr;
  rte_acl_config cfg{};
  cfg.num_categories = 1;
  cfg.num_fields = 5;
  std::memcpy(cfg.defs, kAclFields, sizeof kAclFields);
  const auto t0 = std::chrono::steady_clock::now();
  if (rte_acl_build(a->ctx, &cfg) != 0) return nullptr;
  a->build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return a;
}

// Freed explicitly before rte_eal_cleanup() (see main).
std::map<std::pair<size_t, int>, std::unique_ptr<AclCtx>> g_acl_cache;
std::map<std::string, std::unique_ptr<AclCtx>> g_cb_acl;  // by ClassBench set

AclCtx* acl_for(size_t n, bench::Style style = bench::Style::Acl) {
  if (!g_eal_ok) return nullptr;
  auto& c = g_acl_cache[{n, int(style)}];
  if (!c) {
    const std::string tag = std::string(bench::style_name(style)) + "_" + std::to_string(n);
    c = build_acl(ruleset(n, style).rules, "vpfbench_" + tag);
    if (c) g_notes["rte_acl_build_" + tag] = std::to_string(c->build_ms) + " ms";
  }
  return c.get();
}

const enum rte_acl_classify_alg kAlgs[] = {RTE_ACL_CLASSIFY_SCALAR, RTE_ACL_CLASSIFY_SSE, RTE_ACL_CLASSIFY_AVX2,
                                      RTE_ACL_CLASSIFY_AVX512X16, RTE_ACL_CLASSIFY_AVX512X32};
const char* alg_name(enum rte_acl_classify_alg a) {
  switch (a) {
    case RTE_ACL_CLASSIFY_SCALAR: return "scalar";
    case RTE_ACL_CLASSIFY_SSE: return "sse";
    case RTE_ACL_CLASSIFY_AVX2: return "avx2";
    case RTE_ACL_CLASSIFY_AVX512X16: return "avx512x16";
    case RTE_ACL_CLASSIFY_AVX512X32: return "avx512x32";
    default: return "default";
  }
}

// Checks that ours and rte_acl decide the first `limit` packets of the trace (whole
// batches) the same way; the result goes into note cross_check_<tag>.
void cross_check(RuleSetData& d, Classifier& c, AclCtx* a, const std::string& tag, size_t limit) {
  if (!a) return;
  const size_t m = std::min(d.refs.size(), limit);
  std::vector<Decision> ours(32);
  uint32_t res[32];
  size_t bad = 0;
  for (size_t i = 0; i + 32 <= m; i += 32) {
    c.classify(&d.refs[i], 32, ours.data());
    rte_acl_classify(a->ctx, &d.l3[i], res, 32, 1);
    for (int k = 0; k < 32; ++k) {
      const uint32_t want = res[k] ? d.rules[res[k] - 1].id : kNoRule;
      bad += ours[k].rule_id != want;
    }
  }
  g_notes["cross_check_" + tag] = std::to_string(bad) + " mismatches with rte_acl over " + std::to_string(m / 32 * 32) + " packets";
  if (bad) std::fprintf(stderr, "CROSS-CHECK FAILED: %zu mismatches (%s)\n", bad, tag.c_str());
}
void cross_check(size_t n, bench::Style style = bench::Style::Acl) {
  cross_check(ruleset(n, style), g_ours.get(n, style), acl_for(n, style),
              std::string(bench::style_name(style)) + "_" + std::to_string(n), 100000);
}

// ---------------------------------------------------------------- classify benchmarks

void set_per_packet(benchmark::State& st, uint64_t tsc, uint64_t pkts) {
  st.SetItemsProcessed(int64_t(pkts));
  st.counters["tsc_cycles_per_pkt"] = double(tsc) / double(pkts);
}

// 32 packets at a time through ours (one ISA) or rte_acl (one method), cycling over the trace.
void ours_loop(benchmark::State& st, RuleSetData& d, Classifier& c, Isa isa) {
  c.set_isa(isa);
  Decision out[32];
  size_t i = 0;
  uint64_t pkts = 0;
  const uint64_t t0 = __rdtsc();
  for (auto _ : st) {
    if (i + 32 > d.refs.size()) i = 0;
    c.classify(&d.refs[i], 32, out);
    benchmark::DoNotOptimize(out);
    i += 32;
    pkts += 32;
  }
  set_per_packet(st, __rdtsc() - t0, pkts);
  st.counters["pkts_per_iter"] = 32;
}

void acl_loop(benchmark::State& st, RuleSetData& d, AclCtx* a, enum rte_acl_classify_alg alg) {
  if (!a) {
    st.SkipWithError("rte_acl unavailable (EAL init or build failed)");
    return;
  }
  uint32_t res[32];
  if (rte_acl_classify_alg(a->ctx, d.l3.data(), res, 32, 1, alg) != 0) {
    st.SkipWithError("classify method not supported here");
    return;
  }
  size_t i = 0;
  uint64_t pkts = 0;
  const uint64_t t0 = __rdtsc();
  for (auto _ : st) {
    if (i + 32 > d.l3.size()) i = 0;
    rte_acl_classify_alg(a->ctx, &d.l3[i], res, 32, 1, alg);
    benchmark::DoNotOptimize(res);
    i += 32;
    pkts += 32;
  }
  set_per_packet(st, __rdtsc() - t0, pkts);
  st.counters["pkts_per_iter"] = 32;
}

void BM_Ours(benchmark::State& st, Isa isa) {
  if (!isa_supported(isa)) {
    st.SkipWithError("ISA not supported by this CPU");
    return;
  }
  const size_t n = size_t(st.range(0));
  const auto style = static_cast<bench::Style>(st.range(1));
  const int family = int(st.range(2));
  ours_loop(st, ruleset(n, style, family), g_ours.get(n, style, family), isa);
}

void BM_RteAcl(benchmark::State& st, enum rte_acl_classify_alg alg) {
  const size_t n = size_t(st.range(0));
  const auto style = static_cast<bench::Style>(st.range(1));
  acl_loop(st, ruleset(n, style), acl_for(n, style), alg);
}

void BM_Linear(benchmark::State& st) {
  const size_t n = size_t(st.range(0));
  const auto style = static_cast<bench::Style>(st.range(1));
  const int family = int(st.range(2));
  auto& d = ruleset(n, style, family);
  static std::map<std::tuple<size_t, int, int>, std::unique_ptr<LinearClassifier>> cache;
  auto& lin = cache[{n, int(style), family}];
  if (!lin) {
    lin = std::make_unique<LinearClassifier>();
    for (const auto& r : d.rules) lin->add(r);
  }
  size_t i = 0;
  uint64_t pkts = 0;
  const uint64_t t0 = __rdtsc();
  for (auto _ : st) {
    if (i >= d.refs.size()) i = 0;
    benchmark::DoNotOptimize(lin->classify(d.refs[i].data, d.refs[i].len, d.refs[i].meta));
    ++i;
    ++pkts;
  }
  set_per_packet(st, __rdtsc() - t0, pkts);
  st.counters["pkts_per_iter"] = 1;
}

// ---------------------------------------------------------------- updates

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

void BM_Update(benchmark::State& st) {
  const size_t n = size_t(st.range(0));
  auto& d = ruleset(n);
  bench::GenOptions g;
  g.count = 4000;
  g.seed = 9;
  auto extra = bench::generate_rules(g);
  std::vector<double> add_us, del_us;
  uint64_t builds = 0;
  for (auto _ : st) {
    st.PauseTiming();
    Classifier c;
    c.apply({}, d.rules);
    c.build_tree();
    const uint64_t built_before = c.stats().tree_builds;
    st.ResumeTiming();
    // 4,000 adds that stay, then their deletes, paced like a provisioning script (a
    // millisecond's pause every 20 changes): the changes pile up, so the background builder
    // builds and installs new trees while the adds and deletes go on.
    auto pace = [](size_t k) {
      if (k % 20 == 19) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    for (size_t k = 0; k < extra.size(); ++k) {
      pace(k);
      Rule r = extra[k];
      r.id = uint32_t(10000000 + k);
      auto t0 = std::chrono::steady_clock::now();
      c.add(r);
      add_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    for (size_t k = 0; k < extra.size(); ++k) {
      pace(k);
      auto t0 = std::chrono::steady_clock::now();
      c.remove(RuleRef{extra[k].kind, uint32_t(10000000 + k)});
      del_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    builds += c.stats().tree_builds - built_before;
  }
  st.counters["tree_builds"] = double(builds);
  st.counters["add_p50_us"] = percentile(add_us, 0.5);
  st.counters["add_p99_us"] = percentile(add_us, 0.99);
  st.counters["del_p50_us"] = percentile(del_us, 0.5);
  st.counters["del_p99_us"] = percentile(del_us, 0.99);
  g_notes["update_" + std::to_string(n)] = "add p50 " + std::to_string(percentile(add_us, 0.5)) + " us, p99 " +
                                           std::to_string(percentile(add_us, 0.99)) + " us; delete p50 " +
                                           std::to_string(percentile(del_us, 0.5)) + " us, p99 " +
                                           std::to_string(percentile(del_us, 0.99)) + " us; " + std::to_string(builds) +
                                           " trees built and installed meanwhile";
  g_ns_per_pkt["update_add_p99_" + std::to_string(n)] = percentile(add_us, 0.99) * 1000.0;
  g_ns_per_pkt["update_del_p99_" + std::to_string(n)] = percentile(del_us, 0.99) * 1000.0;
}

void BM_RteAclRebuild(benchmark::State& st) {
  const size_t n = size_t(st.range(0));
  if (!g_eal_ok) {
    st.SkipWithError("EAL unavailable");
    return;
  }
  auto rules = ruleset(n).rules;
  std::vector<double> ms;
  int k = 0;
  for (auto _ : st) {
    auto a = build_acl(rules, "vpfrebuild" + std::to_string(k++));
    if (!a) {
      st.SkipWithError("rte_acl build failed");
      return;
    }
    ms.push_back(a->build_ms);
  }
  st.counters["build_ms_p50"] = percentile(ms, 0.5);
  g_ns_per_pkt["rte_acl_rebuild_" + std::to_string(n)] = percentile(ms, 0.5) * 1e6;
}

// ---------------------------------------------------------------- BPF

const char* kOneExpr = "tcp dst port 80 and net 10.0.0.0/8";

struct BpfData {
  std::vector<std::vector<uint8_t>> frames;
  std::vector<PacketRef> refs;
  std::vector<rte_mbuf> mbufs;
  std::vector<bpf_insn> prog;
  std::shared_ptr<const BpfJit> jit;
  rte_bpf* rbpf = nullptr;
  rte_bpf_jit rjit{};
  Classifier one, hundred;
};

std::unique_ptr<BpfData> g_bpf;  // freed before rte_eal_cleanup()

BpfData& bpfdata() {
  auto& d = g_bpf;
  if (d) return *d;
  d = std::make_unique<BpfData>();
  // A mixed trace: half of it to 10/8, a third TCP port 80.
  std::mt19937_64 rng(5);
  for (int i = 0; i < 65536; ++i) {
    bench::Header h;
    h.proto = rng() % 3 ? 6 : 17;
    h.src.w[0] = 0xc0a80000u | uint32_t(rng() % 65536);
    h.dst.w[0] = (rng() % 2 ? 0x0a000000u : 0xac100000u) | uint32_t(rng() % 65536);
    h.sport = uint16_t(1024 + rng() % 60000);
    h.dport = rng() % 3 == 0 ? 80 : uint16_t(rng() % 2000);
    d->frames.push_back(bench::header_frame(h));
  }
  for (auto& f : d->frames) d->refs.push_back(PacketRef{f.data(), uint32_t(f.size()), {}});
  d->mbufs.resize(d->frames.size());
  for (size_t i = 0; i < d->frames.size(); ++i) {
    rte_mbuf& m = d->mbufs[i];
    std::memset(&m, 0, sizeof m);
    m.buf_addr = d->frames[i].data();
    m.buf_len = uint16_t(d->frames[i].size());
    m.data_off = 0;
    m.data_len = uint16_t(d->frames[i].size());
    m.pkt_len = uint32_t(d->frames[i].size());
    m.nb_segs = 1;
    m.next = nullptr;
  }
  d->prog = compile_bpf(kOneExpr);
  d->jit = BpfJit::compile(d->prog);
  bpf_program bp{u_int(d->prog.size()), d->prog.data()};
  if (rte_bpf_prm* prm = rte_bpf_convert(&bp)) {
    d->rbpf = rte_bpf_load(prm);
    rte_free(prm);
    if (d->rbpf) rte_bpf_get_jit(d->rbpf, &d->rjit);
  }
  Rule r;
  r.id = 1;
  r.bpf = kOneExpr;
  d->one.add(r);
  std::vector<Rule> many;
  for (uint32_t k = 0; k < 100; ++k) {
    Rule x;
    x.id = k;
    // 99 rules that rarely match, then the same rule as `one`: every packet walks them.
    x.bpf = k < 99 ? "tcp dst port " + std::to_string(3000 + k) + " and net 10." + std::to_string(k + 1) + ".0.0/16"
                   : std::string(kOneExpr);
    many.push_back(x);
  }
  d->hundred.apply({}, many);
  d->hundred.build_tree();  // what the background builder publishes a moment later
  for (auto [name, c] : {std::pair<const char*, Classifier*>{"ours_bpf_1", &d->one}, {"ours_bpf_100", &d->hundred}}) {
    const auto s = c->stats();
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "%u rules -> %u entries, %u dynamic slots, tree of %u entries (%u leaf items, depth %u), %u tables, "
                  "bit form of %u entries in %u class tables",
                  s.rules, s.entries, s.dynamic_slots, s.tree_entries, s.tree_items, s.tree_depth, s.tables,
                  s.bit_form_entries, s.bit_form_chunks);
    g_notes[name] = buf;
  }
  // Agreement check: all executors accept the same packets.
  size_t pcap_acc = 0, jit_acc = 0, rte_acc = 0, ours_acc = 0;
  for (size_t i = 0; i < d->frames.size(); ++i) {
    const auto& f = d->frames[i];
    pcap_acc += bpf_filter(d->prog.data(), f.data(), u_int(f.size()), u_int(f.size())) != 0;
    jit_acc += d->jit->run(f.data(), uint32_t(f.size()), uint32_t(f.size())) != 0;
    if (d->rjit.func) rte_acc += d->rjit.func(&d->mbufs[i]) != 0;
    ours_acc += d->one.classify_one(f.data(), uint32_t(f.size())).matched();
  }
  g_notes["bpf_agreement"] = "accepted of " + std::to_string(d->frames.size()) + ": libpcap " + std::to_string(pcap_acc) +
                             ", our JIT " + std::to_string(jit_acc) + ", rte_bpf " + std::to_string(rte_acc) +
                             ", our classifier " + std::to_string(ours_acc);
  g_notes["bpf_lowered"] = d->one.rules()[0].bpf_lowered ? "the expression is lowered to classifier entries" : "not lowered";
  return *d;
}

template <class F>
void bpf_loop(benchmark::State& st, F&& per_batch) {
  auto& d = bpfdata();
  size_t i = 0;
  uint64_t pkts = 0;
  const uint64_t t0 = __rdtsc();
  for (auto _ : st) {
    if (i + 32 > d.frames.size()) i = 0;
    per_batch(d, i);
    i += 32;
    pkts += 32;
  }
  set_per_packet(st, __rdtsc() - t0, pkts);
  st.counters["pkts_per_iter"] = 32;
}

void BM_BpfOursClassifier(benchmark::State& st) {
  Decision out[32];
  bpf_loop(st, [&](BpfData& d, size_t i) {
    d.one.classify(&d.refs[i], 32, out);
    benchmark::DoNotOptimize(out);
  });
}
void BM_BpfOursJit(benchmark::State& st) {
  bpf_loop(st, [&](BpfData& d, size_t i) {
    uint32_t acc = 0;
    for (size_t k = i; k < i + 32; ++k) acc += d.jit->run(d.refs[k].data, d.refs[k].len, d.refs[k].len);
    benchmark::DoNotOptimize(acc);
  });
}
void BM_BpfRteBpfJit(benchmark::State& st) {
  if (!bpfdata().rjit.func) {
    st.SkipWithError("rte_bpf JIT unavailable");
    return;
  }
  bpf_loop(st, [&](BpfData& d, size_t i) {
    uint64_t acc = 0;
    for (size_t k = i; k < i + 32; ++k) acc += d.rjit.func(&d.mbufs[k]);
    benchmark::DoNotOptimize(acc);
  });
}
void BM_BpfLibpcap(benchmark::State& st) {
  bpf_loop(st, [&](BpfData& d, size_t i) {
    uint32_t acc = 0;
    for (size_t k = i; k < i + 32; ++k)
      acc += bpf_filter(d.prog.data(), d.refs[k].data, d.refs[k].len, d.refs[k].len);
    benchmark::DoNotOptimize(acc);
  });
}
void BM_Bpf100Rules(benchmark::State& st) {
  Decision out[32];
  bpf_loop(st, [&](BpfData& d, size_t i) {
    d.hundred.classify(&d.refs[i], 32, out);
    benchmark::DoNotOptimize(out);
  });
}

// ---------------------------------------------------------------- reporting

class Collector : public benchmark::ConsoleReporter {
 public:
  Collector() : ConsoleReporter(isatty(1) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      // With --benchmark_repetitions the ratios use the median of the repetitions.
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      auto it = r.counters.find("pkts_per_iter");
      if (it == r.counters.end()) continue;
      // GetAdjustedRealTime() is per iteration in the run's time unit (ns here).
      g_ns_per_pkt[r.run_name.str()] = r.GetAdjustedRealTime() / it->second.value;
    }
  }
};

// The fastest benchmark whose name starts with `prefix` and ends with `suffix`: its name
// ("" if none ran) and its ns per packet.
std::pair<std::string, double> fastest(const std::string& prefix, const std::string& suffix = "") {
  std::pair<std::string, double> best{"", 1e300};
  for (const auto& [k, v] : g_ns_per_pkt)
    if (k.starts_with(prefix) && k.ends_with(suffix) && v < best.second) best = {k, v};
  return best;
}

void ratio(const std::string& name, const std::string& ours, const std::string& anchor) {
  auto a = g_ns_per_pkt.find(ours), b = g_ns_per_pkt.find(anchor);
  if (a == g_ns_per_pkt.end() || b == g_ns_per_pkt.end() || a->second <= 0) {
    std::printf("ratio %s n/a\n", name.c_str());
    return;
  }
  std::printf("ratio %s %.3f\n", name.c_str(), b->second / a->second);
}

}  // namespace

int main(int argc, char** argv) {
  // EAL for rte_acl / rte_bpf: no hugepages, no devices, private prefix.
  std::string prefix = "--file-prefix=vpfbench" + std::to_string(getpid());
  const char* eal[] = {"vpf-bench", "--no-huge", "-m", "2048", "--no-pci", "--no-shconf", "--no-telemetry",
                       "--legacy-mem", "--log-level=lib.eal:error", "--force-max-simd-bitwidth=512", prefix.c_str()};
  g_eal_ok = rte_eal_init(int(sizeof eal / sizeof *eal), const_cast<char**>(eal)) >= 0;
  if (!g_eal_ok) std::fprintf(stderr, "warning: rte_eal_init failed; rte_acl comparisons skipped\n");

  const std::vector<int64_t> sizes = {1000, 10000, 100000};
  const int64_t acl = int64_t(bench::Style::Acl);
  for (int64_t n : sizes) {
    for (Isa isa : {Isa::Scalar, Isa::Sse42, Isa::Avx2, Isa::Avx512})
      benchmark::RegisterBenchmark(("classify/ours_" + std::string(isa_name(isa))).c_str(),
                                   [isa](benchmark::State& s) { BM_Ours(s, isa); })->Args({n, acl, 4});
    for (auto alg : kAlgs)
      benchmark::RegisterBenchmark(("classify/rte_acl_" + std::string(alg_name(alg))).c_str(),
                                   [alg](benchmark::State& s) { BM_RteAcl(s, alg); })->Args({n, acl, 4});
    benchmark::RegisterBenchmark("classify/linear", BM_Linear)->Args({n, acl, 4});
  }
  // The other ClassBench styles at 10k (IPv4, against rte_acl), and IPv6 acl at 10k
  // (against the linear scan: the rte_acl field layout here is IPv4's).
  for (auto style : {bench::Style::Fw, bench::Style::Ipc}) {
    const std::string name = bench::style_name(style);
    benchmark::RegisterBenchmark(("classify_" + name + "/ours_avx512").c_str(),
                                 [](benchmark::State& s) { BM_Ours(s, Isa::Avx512); })->Args({10000, int64_t(style), 4});
    benchmark::RegisterBenchmark(("classify_" + name + "/ours_scalar").c_str(),
                                 [](benchmark::State& s) { BM_Ours(s, Isa::Scalar); })->Args({10000, int64_t(style), 4});
    for (auto alg : {RTE_ACL_CLASSIFY_SCALAR, RTE_ACL_CLASSIFY_SSE, RTE_ACL_CLASSIFY_AVX2, RTE_ACL_CLASSIFY_AVX512X32})
      benchmark::RegisterBenchmark(("classify_" + name + "/rte_acl_" + alg_name(alg)).c_str(),
                                   [alg](benchmark::State& s) { BM_RteAcl(s, alg); })->Args({10000, int64_t(style), 4});
  }
  benchmark::RegisterBenchmark("classify_acl6/ours_avx512", [](benchmark::State& s) { BM_Ours(s, Isa::Avx512); })
      ->Args({10000, acl, 6});
  benchmark::RegisterBenchmark("classify_acl6/linear", BM_Linear)->Args({10000, acl, 6});
  if (const char* dir = std::getenv("VPF_BENCH_CLASSBENCH")) {
    try {
      load_classbench(dir);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "VPF_BENCH_CLASSBENCH: %s\n", e.what());
      return 1;
    }
    if (g_cb.empty()) std::fprintf(stderr, "VPF_BENCH_CLASSBENCH: no NAME with NAME_trace in %s\n", dir);
  }
  for (auto& [name, cb] : g_cb) {
    CbSet* set = cb.get();
    if (g_eal_ok) {
      g_cb_acl[name] = build_acl(set->data.rules, "vpfbench_cb_" + name);
      if (g_cb_acl[name]) g_notes["rte_acl_build_cb_" + name] = std::to_string(g_cb_acl[name]->build_ms) + " ms";
    }
    AclCtx* a = g_cb_acl[name].get();
    for (Isa isa : supported_isas())
      benchmark::RegisterBenchmark(("classify_cb_" + name + "/ours_" + isa_name(isa)).c_str(),
                                   [set, isa](benchmark::State& st) { ours_loop(st, set->data, *set->ours, isa); });
    for (auto alg : kAlgs)
      benchmark::RegisterBenchmark(("classify_cb_" + name + "/rte_acl_" + alg_name(alg)).c_str(),
                                   [set, a, alg](benchmark::State& st) { acl_loop(st, set->data, a, alg); });
  }
  benchmark::RegisterBenchmark("update/ours", BM_Update)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("update/rte_acl_rebuild", BM_RteAclRebuild)->Arg(10000)->Iterations(5)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("bpf/ours_classifier", BM_BpfOursClassifier);
  benchmark::RegisterBenchmark("bpf/ours_jit", BM_BpfOursJit);
  benchmark::RegisterBenchmark("bpf/rte_bpf_jit", BM_BpfRteBpfJit);
  benchmark::RegisterBenchmark("bpf/libpcap_bpf_filter", BM_BpfLibpcap);
  benchmark::RegisterBenchmark("bpf/ours_100_rules", BM_Bpf100Rules);

  benchmark::Initialize(&argc, argv);
  for (int64_t n : sizes) {
    ruleset(size_t(n));
    g_ours.get(size_t(n));
    cross_check(size_t(n));
  }
  for (auto style : {bench::Style::Fw, bench::Style::Ipc}) cross_check(10000, style);
  for (auto& [name, cb] : g_cb) cross_check(cb->data, *cb->ours, g_cb_acl[name].get(), "cb_" + name, SIZE_MAX);
  bpfdata();
  Collector rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();

  std::printf("\n");
  for (const auto& [k, v] : g_notes) std::printf("note %s: %s\n", k.c_str(), v.c_str());
  std::printf("\n");
  for (int64_t n : sizes) {
    const std::string s = std::to_string(n);
    const auto [best_ours, to] = fastest("classify/ours_", "/" + s + "/0/4");
    const auto [best_acl, ta] = fastest("classify/rte_acl_", "/" + s + "/0/4");
    if (!best_ours.empty() && !best_acl.empty())
      std::printf("note best at %s rules: %s (%.1f ns/pkt), %s (%.1f ns/pkt)\n", s.c_str(), best_ours.c_str(), to,
                  best_acl.c_str(), ta);
    const char* tag = n == 1000 ? "1k" : n == 10000 ? "10k" : "100k";
    ratio(std::string("classify_acl_") + tag + "_vs_rte_acl", best_ours, best_acl);
    for (Isa isa : supported_isas())
      ratio(std::string("classify_acl_") + tag + "_" + isa_name(isa) + "_vs_rte_acl",
            "classify/ours_" + std::string(isa_name(isa)) + "/" + s + "/0/4", best_acl);
    ratio(std::string("classify_acl_") + tag + "_vs_linear", best_ours, "classify/linear/" + s + "/0/4");
    ratio(std::string("classify_acl_") + tag + "_scalar_vs_rte_acl_scalar", "classify/ours_scalar/" + s + "/0/4",
          "classify/rte_acl_scalar/" + s + "/0/4");
  }
  for (auto style : {bench::Style::Fw, bench::Style::Ipc}) {
    const std::string name = bench::style_name(style), args = "/10000/" + std::to_string(int(style)) + "/4";
    const std::string best_acl = fastest("classify_" + name + "/rte_acl_").first;
    ratio("classify_" + name + "_10k_vs_rte_acl", "classify_" + name + "/ours_avx512" + args, best_acl);
    ratio("classify_" + name + "_10k_scalar_vs_rte_acl_scalar", "classify_" + name + "/ours_scalar" + args,
          "classify_" + name + "/rte_acl_scalar" + args);
  }
  for (const auto& [name, cb] : g_cb)
    ratio("classify_cb_" + name + "_vs_rte_acl", fastest("classify_cb_" + name + "/ours_").first,
          fastest("classify_cb_" + name + "/rte_acl_").first);
  ratio("classify_acl6_10k_vs_linear", "classify_acl6/ours_avx512/10000/0/6", "classify_acl6/linear/10000/0/6");
  ratio("update_add_p99_10k_vs_rte_acl_rebuild", "update_add_p99_10000", "rte_acl_rebuild_10000");
  ratio("update_del_p99_10k_vs_rte_acl_rebuild", "update_del_p99_10000", "rte_acl_rebuild_10000");
  ratio("bpf_one_expr_vs_rte_bpf", "bpf/ours_classifier", "bpf/rte_bpf_jit");
  ratio("bpf_one_expr_vs_libpcap", "bpf/ours_classifier", "bpf/libpcap_bpf_filter");
  ratio("bpf_one_expr_jit_vs_rte_bpf", "bpf/ours_jit", "bpf/rte_bpf_jit");
  ratio("bpf_one_expr_jit_vs_libpcap", "bpf/ours_jit", "bpf/libpcap_bpf_filter");
  ratio("bpf_100_rules_vs_1", "bpf/ours_100_rules", "bpf/ours_classifier");
  std::fflush(stdout);
  g_acl_cache.clear();
  g_cb_acl.clear();
  if (g_bpf && g_bpf->rbpf) rte_bpf_destroy(g_bpf->rbpf);
  g_bpf.reset();
  if (g_eal_ok) rte_eal_cleanup();
  return 0;
}
