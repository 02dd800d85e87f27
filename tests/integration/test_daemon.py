# test_daemon.py - vramd as a process: flags, --config, .env, --help, signals (graceful stop, exit 0), a taken port, bad options.
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

from vramtest import VRAMD, Vramd, check, clean_env, eq, finish


def run_vramd(*args, env=None, cwd=None, timeout=20):
    e = clean_env({"VRAM_HOST_MEMORY": "64M"})
    if env:
        e.update(env)
    return subprocess.run([VRAMD, *args], env=e, cwd=cwd or tempfile.mkdtemp(),
                          capture_output=True, text=True, timeout=timeout)


# --- signals: SIGTERM and SIGINT stop it cleanly (no upper bound on the time: a loaded
# machine may be slow; the behaviour is the clean path, exit 0 and its last line) ---
for sig in (signal.SIGTERM, signal.SIGINT):
    d = Vramd(models=["a=synthetic:8M"])
    s, _, _ = d.post("/api/v1/models/a/load")
    eq(s, 200, f"{sig.name}: a model loaded before the signal")
    rc, took = d.stop(sig)
    eq(rc, 0, f"{sig.name}: exit code 0")
    check(any(f"{sig.name} received, stopping" in l for l in d.log),
          f"{sig.name}: logs that it received the signal", d.log[-3:])
    check(d.log and d.log[-1].endswith("vramd: stopped"),
          f"{sig.name}: the clean path to the end: 'stopped' is the last line", d.log[-3:])

# --- SIGTERM with a request demonstrably in flight still exits 0 ---
# 'hold' is on the GPU and cannot be evicted (its host backup does not fit the
# 1M host budget), so the load of 'big' waits for device memory (evict-wait 600 s):
# it stays in flight, in state "loading", until the signal comes.
d = Vramd("--evict-wait", "600", "--host-budget", "1M",
          models=["hold=synthetic:40M", "big=synthetic:40M:1"], host_memory="64M")
s, _, _ = d.post("/api/v1/models/hold/load")
eq(s, 200, "in flight: the holder is loaded")
out = []


def slow():
    try:
        out.append(d.post("/api/v1/models/big/load", timeout=120))
    except Exception as e:  # the daemon may end the connection
        out.append(e)


t = threading.Thread(target=slow)
t.start()
check(d.wait_for(lambda: d.model("big")["state"] == "loading", timeout=60),
      "in flight: the load of big is under way", d.model("big"))
check(d.wait_for(lambda: any("offload-failed model=hold" in l for l in d.log), timeout=60),
      "in flight: it tried to evict the holder and could not", d.log[-5:])
eq(d.model("big")["state"], "loading", "in flight: still loading (waiting for memory)")
eq(d.model("hold")["location"], "GPU", "in flight: the holder stays on the GPU")
eq(out, [], "in flight: no answer yet")
rc, took = d.stop(signal.SIGTERM)
t.join(120)
eq(rc, 0, "SIGTERM during a load: exit 0")
check(any("SIGTERM received, stopping" in l for l in d.log), "SIGTERM during a load: logged",
      d.log[-5:])
# the load still waits when the grace period (5 s) ends: vramd answers it 503 ECANCELED,
# says so, and exits 0 without it
check(any("1 slow request still running" in l for l in d.log),
      "SIGTERM during a load: the request in flight is accounted for", d.log[-5:])
check(not t.is_alive() and len(out) == 1 and isinstance(out[0], tuple),
      "the client of the load got an answer", out)
if out and isinstance(out[0], tuple):
    eq((out[0][0], (out[0][2] or {}).get("error", {}).get("code")), (503, "ECANCELED"),
       "the load in flight is answered 503 ECANCELED at the stop")

# --- a second vramd on a taken port: one clear message, non-zero exit ---
with Vramd(models=["a=synthetic:4M"]) as d:
    r = run_vramd("--backend", "host", "--port", str(d.port))
    eq(r.returncode, 1, "taken port: exit 1")
    lines = r.stderr.strip().splitlines()
    eq(len(lines), 1, "taken port: one line")
    check(f"port {d.port} is already in use" in r.stderr, "taken port: says so", r.stderr)
    s, _, _ = d.get("/healthz")
    eq(s, 200, "the first vramd is unharmed")

# --- bad options: exit 2 with a message that names the problem ---
for args, env, needle in (
        (["--bogus", "1"], None, "--bogus"),
        (["--port", "abc"], None, "abc"),
        (["--port", "70000"], None, "70000"),
        (["--idle-timeout", "-1"], None, "-1"),
        (["--backend", "tpu"], None, "tpu"),
        (["--model", "noequals"], None, "NAME=SOURCE"),
        (["--model", "a=synthetic:4M,colour=red"], None, "colour"),
        (["--model", "a=synthetic:4M,idle_timeout=-3"], None, "idle_timeout"),
        (["--model", "a=synthetic:4M", "--model", "a=synthetic:8M"], None, "twice"),
        (["--port"], None, "needs a value"),
        ([], {"GPU_IDLE_TIMEOUT": "soon"}, "GPU_IDLE_TIMEOUT"),
        (["stray"], None, "stray"),
        (["--config", "/nonexistent/vramd.conf"], None, "/nonexistent/vramd.conf")):
    r = run_vramd("--backend", "host", *args, env=env)
    eq(r.returncode, 2, f"vramd {' '.join(args)} {env or ''}: exit 2")
    check(needle in r.stderr and r.stderr.startswith("vramd: "),
          f"vramd {' '.join(args)}: one 'vramd: ' message naming {needle!r}", r.stderr)
r = run_vramd("--backend", "host", "--model", "x=/nonexistent/model.safetensors")
eq(r.returncode, 1, "a model source that does not open: exit 1")
check("/nonexistent/model.safetensors" in r.stderr, "names the source", r.stderr)

# --- --help documents every option with its variable and default ---
r = run_vramd("--help")
eq(r.returncode, 0, "--help exit 0")
for needle in ("--model NAME=SOURCE", "--config FILE", "--gpu auto", "--port PORT", "VRAM_PORT",
               "default 7861", "--bind ADDR", "default 127.0.0.1", "GPU_IDLE_TIMEOUT",
               "default 600", "VRAM_TOKEN", "--backend", "VRAM_HOST_MEMORY", "VRAM_GPU_BUDGET",
               "SIGTERM", "immediate_offload"):
    check(needle in r.stdout, f"--help mentions {needle}")
eq(run_vramd("--version").stdout.strip().split()[0], "vramd", "--version")

# --- --config: the same lines as flags; the command line wins ---
cfgdir = tempfile.mkdtemp()
conf = os.path.join(cfgdir, "vramd.conf")
with open(conf, "w") as f:
    f.write("# demo config\n"
            "model Llasa-8B=synthetic:8M,immediate_offload=1\n"
            "--model XCodec2=synthetic:4M:2\n"
            "idle-timeout = 77\n"
            "VRAM_RELEASE_TIMEOUT=900\n"
            "\n")
with Vramd("--config", conf) as d:
    st = d.status()
    eq(sorted(st), ["Llasa-8B", "XCodec2"], "models from the config file")
    eq(st["Llasa-8B"]["immediate_offload"], True, "per-model option from the config file")
    eq(st["XCodec2"]["idle_timeout_seconds"], 77, "flag line from the config file")
    eq(st["XCodec2"]["release_timeout_seconds"], 900, "variable line from the config file")
with Vramd("--config", conf, "--idle-timeout", "88", models=["extra=synthetic:4M"]) as d:
    st = d.status()
    eq(st["XCodec2"]["idle_timeout_seconds"], 88, "command line beats the config file")
    eq(sorted(st), ["Llasa-8B", "XCodec2", "extra"], "config models plus command-line models")
with open(conf, "a") as f:
    f.write("frobnicate yes\n")
r = run_vramd("--backend", "host", "--config", conf)
eq(r.returncode, 2, "unknown option in the config file: exit 2")
check(f"{conf}:7:" in r.stderr, "config error names file and line", r.stderr)

# --- ./.env is read (the seed's GPU_IDLE_TIMEOUT); the environment beats it ---
envdir = tempfile.mkdtemp()
with open(os.path.join(envdir, ".env"), "w") as f:
    f.write("# GPU 空闲超时时间（秒）\nGPU_IDLE_TIMEOUT=123\nNVIDIA_VISIBLE_DEVICES=0\n")
with Vramd(models=["a=synthetic:4M"], cwd=envdir) as d:
    eq(d.model("a")["idle_timeout_seconds"], 123, ".env GPU_IDLE_TIMEOUT")
with Vramd(models=["a=synthetic:4M"], cwd=envdir, env={"GPU_IDLE_TIMEOUT": "45"}) as d:
    eq(d.model("a")["idle_timeout_seconds"], 45, "environment beats .env")
with Vramd("--idle-timeout", "9", models=["a=synthetic:4M"], cwd=envdir,
           env={"GPU_IDLE_TIMEOUT": "45"}) as d:
    eq(d.model("a")["idle_timeout_seconds"], 9, "flag beats environment")

# --- --gpu without NVML keeps going; --show-config ---
with Vramd("--gpu", "auto", models=["a=synthetic:4M"],
           env={"VRAM_NVML_LIBRARY": "/nonexistent/libnvidia-ml.so.1"}) as d:
    check(any("--gpu auto" in l for l in d.log), "--gpu auto explains why it picked nothing",
          d.log[:5])
r = run_vramd("--show-config", "--port", "7999")
eq(r.returncode, 0, "--show-config")
check("VRAM_PORT" in r.stdout and "7999" in r.stdout, "--show-config shows values", r.stdout)

# --- no models: still serves, warns ---
with Vramd() as d:
    eq(d.status(), {}, "no models: empty status")
    check(d.wait_for(lambda: any("no models" in l for l in d.log), timeout=5),
          "warns about no models")

# --- binding to a bad address fails clearly ---
r = run_vramd("--backend", "host", "--bind", "192.0.2.1", "--port", "0")
eq(r.returncode, 1, "unavailable bind address: exit 1")
check("192.0.2.1" in r.stderr, "names the address", r.stderr)

finish()
