#!/usr/bin/env python3
# test_node.py - one emulated GPU, many processes: vramd's node socket, node-wide LRU eviction, the view, remote orders, and the faults (SIGKILL, restart, silence, floods, permissions).
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vramtest import Vramd, check, clean_env, eq, finish  # noqa: E402

MEMBER = os.environ.get("NODE_MEMBER") or os.path.join(os.path.dirname(os.environ["VRAMD"]),
                                                       "node_member")
MIB = 1 << 20
TMP = tempfile.mkdtemp(prefix="vram-node-")
os.chmod(TMP, 0o755)  # the permission test's unprivileged member must reach the socket
SOCK = os.path.join(TMP, "node.sock")
SHARE = "node-test-%d" % os.getpid()
CAPACITY = "256M"


def node_env(name, extra=None):
    e = {"VRAM_NODE_SOCKET": SOCK, "VRAM_NODE_NAME": name, "VRAM_HOST_SHARED": SHARE,
         "VRAM_HOST_MEMORY": CAPACITY, "VRAM_BACKEND": "host", "VRAM_EVICT_WAIT": "1",
         "VRAM_LOG_LEVEL": "info"}
    e.update(extra or {})
    return e


class Member:
    """A node_member process: one manager, driven by command lines."""

    def __init__(self, name, extra=None, user=None, binary=MEMBER):
        env = clean_env(node_env(name, extra))
        self.log_path = os.path.join(TMP, name + ".log")
        self.errf = open(self.log_path, "w")
        pre = None
        if user is not None:
            def pre():
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errf, env=env, text=True, cwd=TMP,
                                     preexec_fn=pre)
        first = self.proc.stdout.readline().split()
        if first[:2] != ["ok", "ready"]:
            raise RuntimeError("member %s did not start: %s %s" % (name, first, self.log()))
        self.pid = int(first[2])
        self.name = name

    def cmd(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def log(self):
        self.errf.flush()
        with open(self.log_path) as f:
            return f.read()

    def state(self, model):
        return self.cmd("state " + model).split()[-1]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.cmd("quit")
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errf.close()


def node(d):
    s, _, b = d.get("/api/v1/node")
    return b if s == 200 else {"members": []}


def member_view(d, pid):
    for mb in node(d)["members"]:
        if mb["pid"] == pid:
            return mb
    return None


def model_view(d, pid, name):
    mb = member_view(d, pid)
    for mv in (mb or {}).get("models", []):
        if mv["name"] == name:
            return mv
    return None


def wait_state(d, pid, name, state, leases=None, timeout=60):
    """The view shows the model in state (members report every 0.5 s)."""
    def ok():
        mv = model_view(d, pid, name)
        return mv and mv["state"] == state and (leases is None or mv["leases"] == leases)
    return d.wait_for(ok, timeout=timeout)


def start_vramd(models=None):
    return Vramd("--node-socket", SOCK, models=models, host_memory=CAPACITY,
                 env={"VRAM_HOST_SHARED": SHARE, "VRAM_EVICT_WAIT": "1"})


# ---- the view and node-wide LRU ----
def test_lru_and_view(d, a, b):
    for line in ("register a1 64M", "register a2 64M", "register a3 64M 0"):
        eq(a.cmd(line), "ok", "A: " + line)
    for m in ("a1", "a2", "a3"):  # loaded in this order: a1 is the least recently used
        eq(a.cmd("load " + m), "ok", "A loads " + m)
        time.sleep(0.05)
    eq(b.cmd("register b1 64M"), "ok", "B registers b1")
    eq(b.cmd("register b2 64M"), "ok", "B registers b2")
    eq(b.cmd("register b3 64M"), "ok", "B registers b3")
    eq(b.cmd("acquire b1"), "ok", "B acquires b1: the device is now full (4 x 64M)")
    for m in ("a1", "a2", "a3"):
        check(wait_state(d, a.pid, m, "gpu"), "the view shows A's %s on the GPU" % m)
    check(wait_state(d, b.pid, "b1", "gpu", leases=1), "the view shows B's b1 leased")

    # B needs 64M and has nothing idle of its own: vramd takes A's least
    # recently used idle model (a1), never the resident a3 (idle timeout 0)
    eq(b.cmd("acquire b2"), "ok", "B's acquire of b2 succeeds through node-wide eviction")
    eq(a.state("a1"), "cpu", "A's least recently used model a1 was offloaded by A")
    eq(a.state("a2"), "gpu", "A's a2 (used later) stays")
    eq(a.state("a3"), "gpu", "A's resident a3 (idle timeout 0) stays")
    check(d.wait_for(lambda: any("node-evict model=a1 owner=svc-a" in l and "for=b2" in l and
                                 "asker=svc-b" in l for l in d.log), timeout=30),
          "vramd logs the eviction with who gave and who asked", "\n".join(d.log[-10:]))
    check(d.wait_for(lambda: any(e["model"] == "a1" and e["owner_pid"] == a.pid and
                                 e["asker_pid"] == b.pid for e in node(d)["evictions"]),
                     timeout=30), "the view lists the eviction")

    # a leased model is never taken: A leases a2, B needs 64M more
    eq(a.cmd("acquire a2"), "ok", "A acquires a2")
    check(wait_state(d, a.pid, "a2", "gpu", leases=1), "the view shows a2 leased")
    r = b.cmd("acquire b3")
    check(r.startswith("err ENOMEM"), "B's acquire of b3 fails with ENOMEM when only leased and "
          "resident models are left", r)
    eq(a.state("a2"), "gpu", "the leased a2 stayed on the GPU")
    eq(a.state("a3"), "gpu", "the resident a3 stayed on the GPU")
    eq(a.cmd("end a2"), "ok", "A ends its lease on a2")

    # the view lists every process with its models and owners
    v = node(d)
    pids = sorted(mb["pid"] for mb in v["members"])
    eq(pids, sorted([a.pid, b.pid, d.proc.pid]), "the view lists vramd, A and B")
    names = {mv["id"]: mv["owner"] for mb in v["members"] for mv in mb["models"]}
    eq(names.get("a1@%d" % a.pid), "svc-a", "a1's node-wide id names its owner")
    eq(names.get("b2@%d" % b.pid), "svc-b", "b2's node-wide id names its owner")


# ---- orders through HTTP ----
def test_remote_orders(d, a, b):
    s, _, body = d.post("/api/v1/models/b2@%d/offload" % b.pid, {})
    eq(s, 409, "offloading B's leased b2 from vramd is refused (409): %s" % body)
    eq(b.state("b2"), "gpu", "b2 stays on the GPU")
    eq(b.cmd("end b2"), "ok", "B ends its lease on b2")
    check(wait_state(d, b.pid, "b2", "gpu", leases=0), "the view shows b2 without leases")
    before = b.cmd("check b2")
    s, _, body = d.post("/api/v1/models/b2@%d/offload" % b.pid, {})
    eq(s, 200, "offloading B's b2 through vramd succeeds: %s" % body)
    eq(b.state("b2"), "cpu", "B itself carried out the offload")
    eq(b.cmd("check b2"), before, "b2's bytes are intact in its backup")
    s, _, body = d.request("PATCH", "/api/v1/models/a2@%d" % a.pid, {"idle_timeout": 42})
    eq(s, 200, "PATCH of A's a2 through vramd succeeds: %s" % body)
    check(d.wait_for(lambda: (model_view(d, a.pid, "a2") or {}).get("idle_timeout") == 42,
                     timeout=60), "A applied the idle timeout (the view shows 42)")
    s, _, body = d.post("/api/v1/models/nosuch@%d/release" % a.pid, {})
    eq(s, 404, "a remote model that does not exist is 404: %s" % body)
    s, _, body = d.post("/api/v1/models/b2@999999999/offload", {})
    eq(s, 404, "an id naming no member is an unknown model (404)")


# ---- a member killed with SIGKILL ----
def test_sigkill(d, a, b):
    """A member killed with SIGKILL leaves the view at once and its memory is free."""
    eq(b.cmd("acquire b3"), "ok", "B leases b3: the device is full again")
    eq(a.cmd("acquire a2"), "ok", "A leases a2: nothing on the device can be evicted")
    check(wait_state(d, a.pid, "a2", "gpu", leases=1), "the view shows a2 leased")
    a.proc.kill()
    a.proc.wait()
    check(d.wait_for(lambda: member_view(d, a.pid) is None, timeout=30),
          "A disappears from the view when it dies")
    eq(b.cmd("acquire b2"), "ok", "A's memory counts as free once it died: B restores b2")


# ---- a member that never answers, floods, garbage ----
def raw_member(name, model, idle=1000.0):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(SOCK)
    uuid = "HOST-%s-0" % SHARE
    c.sendall(("hello v=1 pid=%d name=%s backend=host devices=%s totals=%d\n"
               % (os.getpid(), name, uuid, 256 * MIB)).encode())
    c.sendall(("model name=%s dev=0 state=gpu bytes=%d leases=0 idle_timeout=600 "
               "release_timeout=0 immediate=0 idle=%f\n" % (model, 64 * MIB, idle)).encode())
    return c


def test_silent_member(d, b, c):
    """A member that joins but never answers its orders is skipped after a bounded wait."""
    silent = raw_member("silent", "mute", idle=100000.0)
    check(d.wait_for(lambda: any(mb["name"] == "silent" for mb in node(d)["members"]),
                     timeout=30), "the silent member joined")
    eq(c.cmd("register c1 64M"), "ok", "C registers c1")
    eq(c.cmd("load c1"), "ok", "C loads c1: the device is full, c1 is the only idle model")
    check(wait_state(d, c.pid, "c1", "gpu", leases=0), "the view shows C's idle c1")
    eq(b.cmd("register b4 64M"), "ok", "B registers b4")
    r = b.cmd("acquire b4")
    eq(r, "ok", "B's acquire succeeds although the least recently used model's owner is silent")
    check(any("node-evict-skipped model=mute" in l and "ETIMEDOUT" in l for l in d.log),
          "vramd skipped the silent member's model after its wait", "\n".join(d.log[-12:]))
    eq(c.state("c1"), "cpu", "the next model in LRU order (C's c1) went instead")
    silent.close()


def test_hostile_clients(d, b):
    # garbage, a line that never ends, and a flood: each is cut off alone
    for what, data in (("garbage", b"\x00\x01 not a line\n"),
                       ("a line with no end", b"x" * 8192),
                       ("a bad hello", b"hello v=1 name=x\n")):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(SOCK)
        c.settimeout(30)
        try:
            c.sendall(data)
            got = c.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        eq(got, b"", "vramd cuts off a client that sends %s" % what)
        c.close()
    flood = raw_member("flood", "f1")
    flood.settimeout(30)
    line = b"model name=f1 dev=0 state=gpu bytes=1 leases=0 idle_timeout=600 " \
           b"release_timeout=0 immediate=0 idle=1\n"
    cut = False
    try:
        for _ in range(200):
            flood.sendall(line * 200)
    except (BrokenPipeError, ConnectionResetError):
        cut = True
    if not cut:
        try:
            while True:
                got = flood.recv(65536)
                if not got:
                    cut = True
                    break
        except (ConnectionResetError, socket.timeout):
            cut = True
    check(cut, "vramd cuts off a client that floods it")
    flood.close()
    check(d.wait_for(lambda: any("node cut off" in l and "lines a second" in l for l in d.log),
                     timeout=30),
          "vramd logs why it cut the flooding client off",
          "\n".join(l for l in d.log if "cut off" in l or "leave" in l))
    check(member_view(d, b.pid) is not None, "B is still in the view after the hostile clients")
    s, _, _ = d.get("/api/v1/node")
    eq(s, 200, "vramd still answers")


def test_permissions(d):
    """The socket's owner, group and mode decide who may join."""
    mode = stat.S_IMODE(os.stat(SOCK).st_mode)
    eq(oct(mode), oct(0o660), "the socket is created with mode 0660")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        # a copy nobody can run: the build tree may sit in a folder only
        # root can enter (a mktemp -d clone is mode 0700)
        binary = os.path.join(TMP, "node_member")
        shutil.copy(MEMBER, binary)
        os.chmod(binary, 0o755)
        outsider = Member("outsider", {"VRAM_HOST_SHARED": ""}, user=nobody, binary=binary)
    else:  # the owner itself is refused by mode 0
        os.chmod(SOCK, 0)
        outsider = Member("outsider", {"VRAM_HOST_SHARED": ""})
    check(outsider.proc.poll() is None, "a process that may not join still runs on its own")
    eq(outsider.cmd("register o1 8M"), "ok", "the outsider registers a model")
    eq(outsider.cmd("load o1"), "ok", "the outsider loads its model on its own")
    check(d.wait_for(lambda: "permission denied" in outsider.log(), timeout=30),
          "the outsider logs that the socket refused it", outsider.log())
    check(member_view(d, outsider.pid) is None, "the outsider is not in the view")
    os.chmod(SOCK, 0o666)
    check(d.wait_for(lambda: member_view(d, outsider.pid) is not None, timeout=60),
          "once the mode lets it, the outsider joins")
    outsider.stop()


def test_restart(b):
    """vramd going away leaves members working; they rejoin when it is back."""
    d2 = start_vramd()
    check(d2.wait_for(lambda: member_view(d2, b.pid) is not None, timeout=60),
          "B rejoins the restarted vramd")
    check(wait_state(d2, b.pid, "b3", b.state("b3")), "the new vramd sees B's models again")
    d2.stop()


def main():
    d = start_vramd(models=["v=synthetic:16M"])
    a = Member("svc-a")
    b = Member("svc-b")
    c = None
    try:
        check(d.wait_for(lambda: member_view(d, a.pid) and member_view(d, b.pid), timeout=60),
              "both members joined", "\n".join(d.log[-10:]))
        test_lru_and_view(d, a, b)
        test_remote_orders(d, a, b)
        test_sigkill(d, a, b)
        c = Member("svc-c")
        test_silent_member(d, b, c)
        test_hostile_clients(d, b)
        test_permissions(d)
        rc, _ = d.stop()
        eq(rc, 0, "vramd stops cleanly with members joined")
        check(not os.path.exists(SOCK), "vramd removes its socket when it stops")
        eq(b.cmd("end b4"), "ok", "B ends a lease while vramd is gone")
        eq(b.cmd("load b4"), "ok", "B keeps working while vramd is gone")
        test_restart(b)
    finally:
        for mbr in (a, b, c):
            if mbr:
                mbr.stop()
        if d.proc.poll() is None:
            d.stop()
        try:
            os.unlink("/dev/shm/vram-host-" + SHARE)
        except OSError:
            pass
        shutil.rmtree(TMP, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
