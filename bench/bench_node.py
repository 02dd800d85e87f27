#!/usr/bin/python3
"""bench_node.py - what node-wide eviction costs: an acquire that must first evict a model of another process (through vramd), next to one that evicts a model of its own process, in the same run.

usage: bench/bench_node.py [--build DIR] [--size SIZE] [--rounds N]

One emulated device of 1.5 x SIZE (the host backend's VRAM_HOST_SHARED) is
shared by vramd and member processes (tests/support/node_member, built with
the tests). Each round times one acquire of a SIZE model (default 256M) that
does not fit until an idle SIZE model is offloaded:
  local: the idle model belongs to the acquiring process, which evicts it
         itself (the baseline: what a single process does today);
  node:  the idle model belongs to another process: the acquiring process
         asks vramd, vramd has the owner offload it, then the acquire maps.
Both times include the same offload and load of SIZE bytes; the ratio
node/local is the price of coordinating through the node socket. Prints
medians over N rounds (default 15; this VM's copies vary a lot between
rounds), after one untimed round of each.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), "tests", "integration"))

ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(os.path.dirname(here), "build"))
ap.add_argument("--size", default="256M")
ap.add_argument("--rounds", type=int, default=15)
args = ap.parse_args()
os.environ.setdefault("VRAMD", os.path.join(args.build, "vramd"))
os.environ.setdefault("VRAMCTL", os.path.join(args.build, "vramctl"))
MEMBER = os.path.join(args.build, "node_member")
if not os.access(MEMBER, os.X_OK):
    sys.exit("bench_node: %s not found (build with the tests: make build)" % MEMBER)

from vramtest import Vramd, clean_env  # noqa: E402

units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
size = int(args.size[:-1]) * units[args.size[-1]] if args.size[-1] in units else int(args.size)
capacity_mib = size * 3 // 2 // (1 << 20)
capacity_mib -= capacity_mib % 2  # 2 MiB granules
tmp = tempfile.mkdtemp(prefix="vram-bench-node-")
sock = os.path.join(tmp, "node.sock")
share = "bench-node-%d" % os.getpid()
env = {"VRAM_NODE_SOCKET": sock, "VRAM_HOST_SHARED": share, "VRAM_BACKEND": "host",
       "VRAM_HOST_MEMORY": "%dM" % capacity_mib, "VRAM_EVICT_WAIT": "5",
       "VRAM_LOG_LEVEL": os.environ.get("BENCH_LOG", "warn"), "VRAM_HOST_POISON": "0"}


class Member:
    def __init__(self, name):
        e = clean_env(dict(env, VRAM_NODE_NAME=name))
        self.p = subprocess.Popen([MEMBER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=e)
        self.pid = int(self.p.stdout.readline().split()[2])

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        r = self.p.stdout.readline().strip()
        if not r.startswith("ok"):
            raise RuntimeError("%s: %s" % (line, r))
        return r

    def timed(self, line):
        t0 = time.perf_counter()
        self.cmd(line)
        return time.perf_counter() - t0

    def quit(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait(60)


def idle_in_view(d, pid, name):
    def ok():
        with urllib.request.urlopen(d.url + "/api/v1/node") as r:
            v = json.load(r)
        for mb in v["members"]:
            for m in mb["models"] if mb["pid"] == pid else []:
                if m["name"] == name and m["state"] == "gpu" and m["leases"] == 0:
                    return True
        return False
    if not d.wait_for(ok, timeout=60):
        raise RuntimeError("the view never showed %s idle" % name)


d = Vramd("--node-socket", sock, host_memory="%dM" % capacity_mib,
          env={"VRAM_HOST_SHARED": share, "VRAM_LOG_LEVEL": "info"})
a, b = Member("owner"), Member("asker")
try:
    for m in (a, b):
        m.cmd("register x %d" % size)
        m.cmd("register y %d" % size)
    local, node = [], []
    for r in range(args.rounds + 1):  # round 0 is a warm-up (first touch of everything)
        # local: b's own idle x goes for its y (after the same wait for the
        # view as below, so that both models sit idle equally long)
        b.cmd("load x")
        idle_in_view(d, b.pid, "x")
        local.append(b.timed("acquire y"))
        b.cmd("end y")
        b.cmd("release x")
        b.cmd("release y")
        # node: a's idle x goes for b's y, through vramd
        a.cmd("load x")
        idle_in_view(d, a.pid, "x")
        node.append(b.timed("acquire y"))
        if a.cmd("state x") != "ok cpu":
            raise RuntimeError("the owner's model was not offloaded")
        b.cmd("end y")
        a.cmd("release x")
        b.cmd("release y")
    local, node = local[1:], node[1:]
    lm, nm = statistics.median(local), statistics.median(node)
    print("device %d MiB shared by vramd and two member processes; model %d MiB; %d rounds, "
          "medians" % (capacity_mib, size >> 20, args.rounds))
    print("  acquire evicting its own idle model (local)      %8.3f s   1.00x" % lm)
    print("  acquire evicting another process's (node-wide)   %8.3f s   %.2fx" % (nm, nm / lm))
    print("  node-wide eviction's extra cost                  %8.3f s" % (nm - lm))
    print("rounds local: %s" % " ".join("%.3f" % t for t in local))
    print("rounds node:  %s" % " ".join("%.3f" % t for t in node))
finally:
    a.quit()
    b.quit()
    d.stop()
    try:
        os.unlink("/dev/shm/vram-host-" + share)
    except OSError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)
