#!/usr/bin/env python3
"""64 concurrent clients against vpf-agent (tests only).

client_load.py AGENT_SOCKET AGENT_PID SECONDS

Clients, all at once for SECONDS: 1 controller (starts an instance with a notify rule and
reads its events), 7 monitors (subscribe to every instance's events and read them), 24
readers (status, list_rules, list_adapters, get_statistics in turn), 16 rule changers
(add and delete rules of their own), 8 clients that subscribe and never read, and 8 that
connect, send part of a request or of a verdict frame, and hang up.  Meanwhile traffic
(one frame in 4 matching the notify rule) goes from p1 to p2 through the real switch with
`ovs-appctl netdev-dummy/receive`, 40 frames per call.  Prints one line of figures and a
JSON summary on the last line: calls and failures per kind, the slowest answer, events
seen, frames sent, the slowest `netdev-dummy/receive` (a stalled datapath would show
there), and the agent's resident size over time.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

SOCK, AGENT_PID, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
GUID = "{00000000-0000-0000-0000-0000000010AD}"
ETH_IP = "52540000000252540000000108004500002000000000401100000a0000010a000002"
stop = threading.Event()
lock = threading.Lock()
stats = {k: {"calls": 0, "failures": 0, "slowest_ms": 0.0} for k in ("reader", "changer", "controller")}
events = {"controller": 0, "monitors": 0}
misc = {"hangups": 0, "silent_clients": 0, "frames_sent": 0, "receive_slowest_ms": 0.0, "rss_kb": [], "anon_kb": []}
failures = []


class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(15)
        self.s.connect(SOCK)
        self.buf = b""
        self.next_id = 0

    def read_item(self):
        """One JSON message (dict) or event frame (bytes)."""
        while True:
            if self.buf.startswith(b"VPFF"):
                if len(self.buf) >= 16:
                    n = 16 + struct.unpack_from("<I", self.buf, 8)[0]
                    if len(self.buf) >= n:
                        item, self.buf = self.buf[:n], self.buf[n:]
                        return item
            elif b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                return json.loads(line)
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise OSError("the agent closed the connection")
            self.buf += chunk

    def call(self, method, params=None):
        self.next_id += 1
        self.s.sendall(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                   "params": params or {}}).encode() + b"\n")
        while True:
            item = self.read_item()
            if isinstance(item, dict) and item.get("id") == self.next_id:
                if "error" in item:
                    raise RuntimeError("%s: %s" % (method, item["error"]))
                return item["result"]


def timed(kind, fn):
    t = time.monotonic()
    try:
        fn()
        ok = True
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        ok = False
        with lock:
            failures.append("%s: %s" % (kind, e))
    ms = (time.monotonic() - t) * 1000
    with lock:
        st = stats[kind]
        st["calls"] += 1
        st["failures"] += 0 if ok else 1
        st["slowest_ms"] = max(st["slowest_ms"], ms)
    return ok


def reader():
    c = Conn()
    methods = ["status", "list_rules", "list_adapters", "get_statistics"]
    i = 0
    while not stop.is_set():
        m = methods[i % len(methods)]
        i += 1
        if not timed("reader", lambda: c.call(m)):
            return
        time.sleep(0.01)


def changer(n):
    c = Conn()
    k = 0
    while not stop.is_set():
        rid = 50000 + n * 1000 + k % 1000
        k += 1
        rule = {"kind": "filter", "id": rid, "bpf": "udp dst port %d" % (3000 + rid % 1000), "action": "drop"}
        if not timed("changer", lambda: c.call("add_rule", {"rule": rule})):
            return
        if not timed("changer", lambda: c.call("delete_rule", {"kind": "filter", "id": rid})):
            return
        time.sleep(0.02)


def event_reader(kind, c):
    c.s.settimeout(1)
    while not stop.is_set():
        try:
            item = c.read_item()
        except socket.timeout:
            continue
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append("%s: %s" % (kind, e))
            return
        if isinstance(item, bytes) and struct.unpack_from("<H", item, 6)[0] == 1:
            with lock:
                events[kind] += 1


def controller(ready):
    c = Conn()
    timed("controller", lambda: c.call("install", {"guid": GUID}))
    timed("controller", lambda: c.call("add_rule", {"instance": GUID, "rule": {
        "kind": "filter", "id": 1, "bpf": "udp dst port 1280", "action": "notify"}}))
    timed("controller", lambda: c.call("start_filter", {"instance": GUID}))
    ready.set()
    event_reader("controller", c)


def monitor():
    c = Conn()
    c.call("subscribe", {"instance": "*", "packets": True})
    event_reader("monitors", c)


def silent():
    c = Conn()
    c.call("subscribe", {"instance": "*", "packets": True})
    with lock:
        misc["silent_clients"] += 1
    stop.wait()  # never reads again; keeps the connection open
    c.s.close()


def hangup(n):
    parts = [b'{"jsonrpc": "2.0", "id": 1, "method": "sta',
             b"VPFF\x01\x00\x02\x00\x10\x00\x00\x00",            # a verdict frame's header, no body
             b'{"jsonrpc": "2.0", "id": 1, "method": "status"}\n{"jsonrpc"']
    i = n
    while not stop.is_set():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(SOCK)
        s.sendall(parts[i % len(parts)])
        i += 1
        s.close()
        with lock:
            misc["hangups"] += 1
        time.sleep(0.05)


def traffic():
    frames = []
    for i in range(40):
        port = 1280 if i % 4 == 0 else 1281
        frames.append("%s0400%04x00080000%02x000000" % (ETH_IP, port, i))
    while not stop.is_set():
        t = time.monotonic()
        subprocess.run(["ovs-appctl", "netdev-dummy/receive", "p1"] + frames, check=True, stdout=subprocess.DEVNULL)
        ms = (time.monotonic() - t) * 1000
        with lock:
            misc["frames_sent"] += len(frames)
            misc["receive_slowest_ms"] = max(misc["receive_slowest_ms"], ms)
        time.sleep(0.1)


def rss_sampler():
    """Once a second: the agent's resident size, and its anonymous part (its heap: the
    shared-memory rings it reads count as RssShmem, and grow until every page of them has
    been touched once)."""
    while not stop.is_set():
        with open("/proc/%d/status" % AGENT_PID) as f:
            v = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "RssAnon"))}
        misc["rss_kb"].append(v["VmRSS"])
        misc["anon_kb"].append(v["RssAnon"])
        stop.wait(1)


ready = threading.Event()
threads = [threading.Thread(target=controller, args=(ready,))]
threads[0].start()
ready.wait(10)
threads += [threading.Thread(target=monitor) for _ in range(7)]
threads += [threading.Thread(target=reader) for _ in range(24)]
threads += [threading.Thread(target=changer, args=(n,)) for n in range(16)]
threads += [threading.Thread(target=silent) for _ in range(8)]
threads += [threading.Thread(target=hangup, args=(n,)) for n in range(8)]
threads += [threading.Thread(target=traffic), threading.Thread(target=rss_sampler)]
for t in threads[1:]:
    t.start()
time.sleep(SECONDS)
stop.set()
for t in threads:
    t.join(30)
rss, anon = misc["rss_kb"], misc["anon_kb"]
at20 = min(20, len(rss) - 1)
summary = {"stats": stats, "events": events, "misc": dict(misc, rss_kb=None, anon_kb=None), "failures": failures[:10],
           "rss_peak_kb": max(rss), "rss_end_kb": rss[-1], "anon_at_20s_kb": anon[at20], "anon_peak_kb": max(anon),
           "anon_end_kb": anon[-1], "clients": 1 + 7 + 24 + 16 + 8 + 8}
print("  %d clients for %.0f s: reader calls %d (slowest %.1f ms), rule changes %d (slowest %.1f ms), events to the "
      "controller %d and to monitors %d, %d hang-ups, %d frames sent (slowest receive %.1f ms); agent resident "
      "peak %d kB, of it anonymous (heap) at 20 s %d kB, peak %d kB, end %d kB" % (
          summary["clients"], SECONDS, stats["reader"]["calls"], stats["reader"]["slowest_ms"],
          stats["changer"]["calls"], stats["changer"]["slowest_ms"], events["controller"], events["monitors"],
          misc["hangups"], misc["frames_sent"], misc["receive_slowest_ms"], summary["rss_peak_kb"],
          summary["anon_at_20s_kb"], summary["anon_peak_kb"], summary["anon_end_kb"]))
print(json.dumps(summary))
