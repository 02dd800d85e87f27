# vramtest.py - helpers for the integration tests: start vramd on a free port (host backend), talk HTTP, run vramctl.
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("VRAM_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))


def _find(var, name):
    path = os.environ.get(var)
    if path:
        return os.path.abspath(path)
    for d in ("build", "build-srv"):
        p = os.path.join(SOURCE_DIR, d, name)
        if os.access(p, os.X_OK):
            return p
    sys.exit(f"{name} not found: set {var}")


VRAMD = _find("VRAMD", "vramd")
VRAMCTL = _find("VRAMCTL", "vramctl")

failures = []


def check(cond, what, detail=""):
    """Records a failed expectation (the test goes on) and prints it with its caller's line."""
    if cond:
        return True
    frame = traceback.extract_stack(limit=2)[0]
    msg = f"FAIL {os.path.basename(frame.filename)}:{frame.lineno}: {what}"
    if detail != "":
        msg += f"\n     got: {str(detail)[:600]}"
    print(msg, flush=True)
    failures.append(msg)
    return False


def eq(got, want, what):
    return check(got == want, f"{what}: expected {want!r}", got)


def finish():
    """Exits 1 when any check failed, else 0."""
    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        sys.exit(1)
    print("ok", flush=True)
    sys.exit(0)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("VRAM_") or k in ("GPU_IDLE_TIMEOUT", "CUDA_VISIBLE_DEVICES",
                                                  "NVIDIA_VISIBLE_DEVICES"))}
    env["VRAM_LOG_LEVEL"] = "info"
    # fresh device memory holds poison, as real VRAM holds old bytes (host.c)
    env["VRAM_HOST_POISON"] = os.environ.get("VRAM_HOST_POISON", "1")
    # no test joins (or, as vramd, listens on) the machine's node socket
    # unless it names one of its own (--node-socket, or in extra)
    env["VRAM_NODE_SOCKET"] = "off"
    if extra:
        env.update(extra)
    return env


class Vramd:
    """A vramd process on a free port with the host backend; stderr collected in self.log."""

    def __init__(self, *args, models=None, host_memory="512M", env=None, port="0", cwd=None,
                 wait=True, backend="host"):
        self.cwd = cwd or tempfile.mkdtemp(prefix="vramd-test-")
        self.own_cwd = cwd is None
        argv = [VRAMD, "--port", str(port)]
        if backend:
            argv += ["--backend", backend]
        for m in models or []:
            argv += ["--model", m]
        argv += list(args)
        e = clean_env({"VRAM_HOST_MEMORY": host_memory})
        if env:
            e.update(env)
        self.log = []
        self.started = threading.Event()
        self.url = None
        self.port = None
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=e, cwd=self.cwd, text=True,
                                     errors="replace")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if wait:
            self.wait_started()

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            m = re.search(r"listening on (http://\S+):(\d+)", line)
            if m and not self.url:
                self.port = int(m.group(2))
                self.url = f"http://127.0.0.1:{self.port}"
                self.started.set()
        self.started.set()

    def wait_started(self, timeout=30):
        self.started.wait(timeout)
        if not self.url:
            self.proc.kill()
            raise RuntimeError("vramd did not start:\n" + "\n".join(self.log[-30:]))

    def request(self, method, path, body=None, headers=None, raw=None, timeout=120):
        """Returns (status, headers dict (lower-case names), parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        conn.close()
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        return r.status, hdrs, parsed

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def status(self):
        s, _, b = self.get("/api/gpu/status")
        assert s == 200, (s, b)
        return b

    def model(self, name):
        return self.status()[name]

    def wait_for(self, pred, timeout=10, step=0.05):
        end = time.time() + timeout
        while time.time() < end:
            v = pred()
            if v:
                return v
            time.sleep(step)
        return pred()

    def ctl(self, *args, env=None, input=None, timeout=120):
        """Runs vramctl against this daemon; returns CompletedProcess (text)."""
        e = clean_env({"VRAM_URL": self.url})
        if env:
            e.update(env)
        return subprocess.run([VRAMCTL, *args], env=e, cwd=self.cwd, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends sig, waits; returns (exit code, seconds it took)."""
        t0 = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.reader.join(5)
        if self.own_cwd:
            shutil.rmtree(self.cwd, ignore_errors=True)
        return rc, time.time() - t0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        rc, took = self.stop()
        # every test ends its daemon with SIGTERM: a clean exit 0 (and no leak report
        # under ASan) through the whole shutdown (no request left behind) each time;
        # how long it takes is not checked (a loaded machine may be slow)
        check(rc == 0 and any(l.endswith("vramd: stopped") for l in self.log),
              f"vramd exits 0 on SIGTERM after a clean stop (rc {rc}, {took:.1f} s)",
              "\n".join(self.log[-15:]))


GOLDEN = os.path.join(SOURCE_DIR, "tests", "golden", "golden.json")


def expected_checksum(size, seed=0):
    """The checksum of synthetic:SIZE:SEED from the golden vectors, computed from vram.h's
    definitions by tests/golden/make_golden.py (not by the code under test)."""
    with open(GOLDEN) as f:
        sources = json.load(f)["sources"]
    key = f"{size}:{seed}"
    if key not in sources:
        raise KeyError(f"{key} is not in {GOLDEN}: add it to SOURCES in make_golden.py and rerun it")
    return sources[key]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def stable(status):
    """A status without the fields that change by themselves (idle time, timings)."""
    out = {}
    for name, st in status.items():
        out[name] = {k: v for k, v in st.items() if k not in ("idle_time_seconds",)}
    return out
