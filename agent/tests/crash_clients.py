#!/usr/bin/env python3
"""Crash consistency of rule changes (tests only).

crash_clients.py RUN_DIR AGENT [AGENT ARGS...]

Runs vpf-agent (restarting it whenever it is not running, as a supervisor would), four
clients that make 1000 rule changes in all (adds of new rules, deletes of rules they saw
added), and a killer that SIGKILLs the agent 5 times and ovsdb-server once at random
moments (ovsdb-server is started again at once with its own command line).  A change is
"acknowledged" when the agent answered it with a result; one answered with an error or
not at all is "unknown" (it may or may not have been applied) and its rule id is not used
again.  At the end it waits for the agent and writes RUN_DIR/journal.json: every rule id
with its expected state ("present", "absent" or "unknown") and the rule it names, and
the counts.  The caller checks the database, the datapath and packets against it.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

RUN, AGENT, AGENT_ARGS = sys.argv[1], sys.argv[2], sys.argv[3:]
SOCK = os.path.join(RUN, "agent.sock")
CLIENTS, CHANGES = 4, 1000
AGENT_KILLS, OVSDB_KILLS = 5, 1
rng = random.Random(int(os.environ.get("VPF_CRASH_SEED", "7")))
stop = threading.Event()
lock = threading.Lock()
agent_proc = None
counts = {"acknowledged": 0, "unknown": 0, "agent_kills": 0, "ovsdb_kills": 0, "agent_starts": 0, "reconnects": 0}


def rule_of(rid):
    return {"kind": "filter", "id": rid, "bpf": "udp dst port %d" % port_of(rid), "action": "drop"}


def port_of(rid):
    return 2000 + rid


def start_agent():
    global agent_proc
    log = open(os.path.join(RUN, "agent.log"), "ab")
    agent_proc = subprocess.Popen([AGENT] + AGENT_ARGS, stdout=log, stderr=subprocess.STDOUT)
    counts["agent_starts"] += 1


def supervisor():
    while not stop.is_set():
        with lock:
            if agent_proc is None or agent_proc.poll() is not None:
                start_agent()
        time.sleep(0.05)


class Client:
    """One connection to the agent; reconnects (for up to 60 s) when it breaks."""

    def __init__(self):
        self.sock = None
        self.buf = b""
        self.next_id = 1

    def connect(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(SOCK)
                self.sock, self.buf = s, b""
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the agent did not come back within 60 s")

    def call(self, method, params):
        """The result, or None when the outcome is unknown (error reply or broken connection)."""
        if self.sock is None:
            self.connect()
            counts["reconnects"] += 1
        self.next_id += 1
        line = json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        try:
            self.sock.sendall(line.encode() + b"\n")
            while True:
                while b"\n" not in self.buf:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    self.buf += chunk
                text, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(text)
                if msg.get("id") != self.next_id:
                    continue  # a notification
                return msg.get("result") if "error" not in msg else None
        except (OSError, ValueError):
            self.sock.close()
            self.sock = None
            return None


def client(c, n, journal):
    cl = Client()
    present = []
    next_rid = c * 10000 + 1
    for _ in range(n):
        if present and rng.random() < 0.4:
            rid = present.pop(rng.randrange(len(present)))
            ok = cl.call("delete_rule", {"kind": "filter", "id": rid}) is not None
            with lock:
                journal[rid] = "absent" if ok else "unknown"
        else:
            rid = next_rid
            next_rid += 1
            ok = cl.call("add_rule", {"rule": rule_of(rid)}) is not None
            with lock:
                journal[rid] = "present" if ok else "unknown"
            if ok:
                present.append(rid)
        with lock:
            counts["acknowledged" if ok else "unknown"] += 1
            done[0] += 1


def killer():
    # Kill moments spread over the run: after random numbers of completed changes.
    marks = sorted(rng.sample(range(50, CHANGES - 50), AGENT_KILLS + OVSDB_KILLS))
    ovsdb_at = rng.choice(marks)
    for m in marks:
        while done[0] < m and not stop.is_set():
            time.sleep(0.005)
        time.sleep(rng.random() * 0.02)
        if m == ovsdb_at:
            pid = int(open(os.path.join(RUN, "ovsdb-server.pid")).read())
            cmdline = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[:-1]
            cwd = os.readlink("/proc/%d/cwd" % pid)
            os.kill(pid, signal.SIGKILL)
            while os.path.exists("/proc/%d" % pid) and open("/proc/%d/stat" % pid).read().split()[2] != "Z":
                time.sleep(0.01)
            # --detach: returns when it serves
            subprocess.run(cmdline, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            counts["ovsdb_kills"] += 1
        else:
            # The agent as it runs (the supervisor may be starting it again): wait for it.
            deadline = time.time() + 30
            while time.time() < deadline:
                with lock:
                    if agent_proc is not None and agent_proc.poll() is None:
                        agent_proc.send_signal(signal.SIGKILL)
                        agent_proc.wait()
                        counts["agent_kills"] += 1
                        break
                time.sleep(0.01)


done = [0]
journal = {}
with lock:
    start_agent()
threading.Thread(target=supervisor, daemon=True).start()
k = threading.Thread(target=killer)
k.start()
threads = [threading.Thread(target=client, args=(c, CHANGES // CLIENTS, journal)) for c in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
k.join()
# The agent as it runs now: wait until it answers.
Client().connect()
stop.set()
with open(os.path.join(RUN, "journal.json"), "w") as f:
    json.dump({"rules": {str(r): {"state": s, "rule": rule_of(r), "port": port_of(r)} for r, s in journal.items()},
               "counts": counts, "agent_pid": agent_proc.pid}, f)
print("  changes: %(acknowledged)d acknowledged, %(unknown)d unknown; agent killed %(agent_kills)d times "
      "(started %(agent_starts)d), ovsdb-server killed %(ovsdb_kills)d, client reconnects %(reconnects)d" % counts)
