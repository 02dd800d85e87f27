# test_hostile.py - vramd and vramctl against hostile setups: a daemon that never answers, the token kept off the command line, a wildcard bind and rebinding Host names, a failing idle offload and SIGTERM.
import os
import socket
import subprocess
import tempfile
import threading
import time

from vramtest import VRAMCTL, Vramd, check, clean_env, eq, finish


def vramctl_deadline():
    """Issue 11.2: a vramd that accepts but never answers: vramctl gives up with exit 2."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # and never answer
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    env = clean_env({"VRAM_URL": f"http://127.0.0.1:{port}"})
    p = subprocess.run([VRAMCTL, "--timeout", "1", "status"], env=env, capture_output=True,
                       text=True, timeout=120)
    eq(p.returncode, 2, "vramctl exits 2 (not reachable) at its deadline")
    check("cannot reach vramd" in p.stderr, "it says vramd is not reachable", p.stderr)
    p = subprocess.run([VRAMCTL, "status"], env=dict(env, VRAMCTL_TIMEOUT="1"),
                       capture_output=True, text=True, timeout=120)
    eq(p.returncode, 2, "VRAMCTL_TIMEOUT sets the deadline")
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def token_file():
    """Issue 11.8: --token-file keeps the token out of /proc/PID/cmdline."""
    fd, path = tempfile.mkstemp()
    os.write(fd, b"file-token-123\n")
    os.close(fd)
    os.chmod(path, 0o600)
    with Vramd("--token-file", path, models=["a=synthetic:1M"]) as d:
        with open(f"/proc/{d.proc.pid}/cmdline", "rb") as f:
            check(b"file-token-123" not in f.read(), "the token is not on the command line")
        s, _, _ = d.post("/api/v1/models/a/load")
        eq(s, 401, "no token: 401")
        s, _, _ = d.post("/api/v1/models/a/load",
                         headers={"Authorization": "Bearer file-token-123"})
        eq(s, 200, "the file's token is accepted")
        p = d.ctl("--token-file", path, "load", "a")
        eq(p.returncode, 0, "vramctl --token-file")
    os.unlink(path)


def wildcard_bind():
    """Issue 11.4: --bind 0.0.0.0 refuses a rebinding Host, even with a matching Origin."""
    with Vramd("--bind", "0.0.0.0", "--allowed-hosts", "gpu1.lan", models=["a=synthetic:1M"]) as d:
        s, _, _ = d.get("/api/gpu/status", headers={"Host": f"rebind.evil:{d.port}",
                                                    "Origin": f"http://rebind.evil:{d.port}"})
        eq(s, 403, "a rebinding name is refused on a wildcard bind")
        s, _, _ = d.get("/api/gpu/status", headers={"Host": f"gpu1.lan:{d.port}"})
        eq(s, 200, "an --allowed-hosts name passes")
        s, _, _ = d.get("/api/gpu/status", headers={"Host": f"{socket.gethostname()}:{d.port}"})
        eq(s, 200, "this machine's host name passes")
        s, _, _ = d.get("/api/gpu/status", headers={"Host": f"127.0.0.1:{d.port}"})
        eq(s, 200, "loopback passes")


def failing_idle_offload():
    """Issue 11.1: an idle model whose backup does not fit: one error line, the
    other model offloaded, requests answered, SIGTERM stops it (checked on exit)."""
    with Vramd("--host-budget", "8M", "--idle-timeout", "0.2",
               models=["big=synthetic:12M:1", "small=synthetic:2M:2"]) as d:
        for m in ("big", "small"):
            s, _, _ = d.post(f"/api/v1/models/{m}/load")
            eq(s, 200, f"load {m}")
        check(d.wait_for(lambda: d.model("small")["location"] == "CPU", timeout=60),
              "the other idle model is offloaded")
        time.sleep(1.5)
        s, _, b = d.post("/api/v1/models/big/run")
        eq(s, 200, "the failing model still answers")
        errors = [l for l in d.log if "offload-failed" in l and "big" in l]
        check(1 <= len(errors) <= 3, "the failure is logged once, not in a loop", len(errors))


vramctl_deadline()
token_file()
wildcard_bind()
failing_idle_offload()
finish()
