# test_promises.py - promises over HTTP and the CLI that no other test held vramd to: load progress and vramctl's bar, device=N, PATCH immediate_offload at run time, MCP tool failures as results, vramctl mcp with a token.
import json
import os
import pty
import re
import select
import subprocess
import tempfile
import threading

from vramtest import VRAMCTL, VRAMD, Vramd, check, clean_env, eq, finish

tmp = tempfile.mkdtemp(prefix="vram-promises-")

# --- load progress while a load is in flight, and vramctl load's bar ---
# 'hold' sits on the GPU and cannot be evicted (its backup does not fit the 1M host
# budget), so the load of 'file' waits for device memory, in state "loading" with its
# progress at 0 of its bytes, until 'hold' is released: a load held mid-flight without
# any timing. vramctl load shows its bar on a terminal (stderr a pty here).
path = os.path.join(tmp, "m.safetensors")
r = subprocess.run([VRAMCTL, "make-model", path, "--size", "24M", "--seed", "4"],
                   capture_output=True, text=True)
eq(r.returncode, 0, "make-model")
with Vramd("--evict-wait", "600", "--host-budget", "1M",
           models=["hold=synthetic:48M", f"file={path}"], host_memory="64M") as d:
    s, _, _ = d.post("/api/v1/models/hold/load")
    eq(s, 200, "progress: the holder is loaded")
    total = d.model("file")["bytes"]
    master, slave = pty.openpty()
    p = subprocess.Popen([VRAMCTL, "load", "file"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, text=True,
                         env=clean_env({"VRAM_URL": d.url}), cwd=tmp)
    os.close(slave)
    seen = []
    lock = threading.Lock()

    def read_tty():
        while True:
            try:
                ready, _, _ = select.select([master], [], [], 1.0)
                if not ready:
                    if p.poll() is not None:
                        return
                    continue
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            with lock:
                seen.append(chunk.decode("utf-8", "replace"))

    reader = threading.Thread(target=read_tty, daemon=True)
    reader.start()

    def tty_text():
        with lock:
            return "".join(seen)

    bar = re.compile(r"loading file \[[# ]{30}\]\s+0%\s+0 B / \S+ MiB")
    check(d.wait_for(lambda: d.model("file")["state"] == "loading", timeout=60),
          "progress: the load is in flight", d.model("file"))
    st = d.model("file")
    eq(st["load_progress"], {"done_bytes": 0, "total_bytes": total, "fraction": 0.0},
       "progress: the status's load_progress while the load waits")
    s, _, one = d.get("/api/v1/models/file")
    eq((s, one.get("load_progress")), (200, st["load_progress"]),
       "progress: the model's own status says the same")
    check(d.wait_for(lambda: bar.search(tty_text()), timeout=60),
          "progress: vramctl load shows a bar with its percentage on the terminal",
          repr(tty_text()[-300:]))
    eq(p.poll(), None, "progress: vramctl still waits for the load")
    s, _, _ = d.post("/api/v1/models/hold/release")
    eq(s, 200, "progress: the holder released")
    out, _ = p.communicate(timeout=120)
    reader.join(30)
    os.close(master)
    eq(p.returncode, 0, "progress: vramctl load exit code")
    check(re.search(r"file loaded in .* \(now on GPU\)", out), "progress: vramctl says it loaded",
          out)
    st = d.model("file")
    eq((st["location"], st["load_progress"]), ("GPU", None),
       "progress: after the load no progress is shown")
    # without a terminal no bar is drawn
    r = d.ctl("release", "file")
    r = d.ctl("load", "file")
    eq(r.returncode, 0, "progress: load without a terminal")
    check("[" not in r.stderr and "%" not in r.stderr, "progress: no bar when stderr is no tty",
          r.stderr)

# --- device=N: the --model spec and the HTTP registration place a model on device 1 ---
with Vramd("--gpu-budget", "16M", models=["d1=synthetic:8M:1,device=1", "d0=synthetic:4M:2"],
           host_memory="64M", env={"VRAM_HOST_DEVICES": "2"}) as d:
    eq((d.model("d1")["device"], d.model("d0")["device"]), (1, 0), "device: from the --model spec")

    def charged():
        s, _, b = d.get("/api/v1/devices")
        return [x["charged_bytes"] for x in b["devices"]]

    eq(charged(), [0, 0], "device: nothing charged before a load")
    s, _, _ = d.post("/api/v1/models/d1/load")
    eq(s, 200, "device: load of d1")
    c = charged()
    check(c[1] >= 8 << 20 and c[0] == 0, "device: d1's bytes are charged to device 1 only", c)
    s, _, b = d.post("/api/v1/models", {"name": "r1", "source": "synthetic:4M:3",
                                        "options": {"device": 1}})
    eq((s, b.get("status", {}).get("device")), (200, 1), "device: registered over HTTP on device 1")
    s, _, _ = d.post("/api/v1/models/r1/load")
    c2 = charged()
    check(s == 200 and c2[1] >= c[1] + (4 << 20) and c2[0] == 0,
          "device: r1 charged to device 1 as well", c2)
    s, _, b = d.post("/api/v1/models", {"spec": "big1=synthetic:20M,device=1"})
    eq(s, 200, "device: a model larger than device 1's budget registers")
    s, _, b = d.post("/api/v1/models/big1/load")
    eq((s, b["error"]["code"]), (503, "ENOMEM"), "device: over device 1's budget: 503 ENOMEM")
    check("on device 1" in b["error"]["message"], "device: the message names device 1", b)
    s, _, b = d.post("/api/v1/models", {"name": "x", "source": "synthetic:4M",
                                        "options": {"device": 2}})
    eq((s, b["error"]["code"]), (400, "ENODEV"), "device: a device that does not exist is a 400")
    check("device 2 does not exist" in b["error"]["message"], "device: and said so", b)
    s, _, b = d.post("/api/v1/models", {"name": "y", "source": "/nonexistent/m.safetensors"})
    eq(s, 400, "a source that cannot be opened is a 400, not a 500")
r = subprocess.run([VRAMD, "--backend", "host", "--port", "0",
                    "--model", "z=synthetic:4M,device=3"],
                   capture_output=True, text=True, timeout=60,
                   env=clean_env({"VRAM_HOST_MEMORY": "64M", "VRAM_HOST_DEVICES": "2"}),
                   cwd=tmp)
check(r.returncode != 0 and "device 3" in r.stderr, "device: --model on a missing device fails",
      (r.returncode, r.stderr))

# --- PATCH immediate_offload has an effect at run time ---
with Vramd(models=["m=synthetic:8M:1"]) as d:
    s, _, b = d.post("/api/v1/models/m/load")
    eq((s, b["location"], b["offloaded"]), (200, "GPU", False), "patch: a load stays on the GPU")
    s, _, b = d.request("PATCH", "/api/v1/models/m", body={"immediate_offload": True})
    eq((s, b["status"]["immediate_offload"]), (200, True), "patch: immediate_offload on")
    eq(d.model("m")["location"], "GPU", "patch: the setting itself moves nothing")
    s, _, b = d.post("/api/v1/models/m/load")
    eq((s, b["offloaded"], b["location"]), (200, True, "CPU"),
       "patch on: the end of a use offloads at once")
    eq(d.model("m")["location"], "CPU", "patch on: the model is on the CPU")
    s, _, b = d.post("/api/v1/models/m/run")
    eq((s, b["location"], b["steps"]["end_lease"]["offloaded"]), (200, "CPU", True),
       "patch on: a run ends on the CPU too")
    s, _, b = d.request("PATCH", "/api/v1/models/m", body={"immediate_offload": False})
    eq((s, b["status"]["immediate_offload"]), (200, False), "patch: immediate_offload off")
    s, _, b = d.post("/api/v1/models/m/load")
    eq((s, b["action"], b["offloaded"], b["location"]), (200, "restored", False, "GPU"),
       "patch off: a use leaves the model on the GPU")
    eq(d.model("m")["location"], "GPU", "patch off: it stays there")
    eq(d.model("m")["offloads"], 2, "patch: two offloads, both from immediate offload")

# --- MCP over HTTP: a failing tool is a result with isError, not a JSON-RPC error ---
with Vramd(models=["small=synthetic:4M", "huge=synthetic:128M"], host_memory="64M") as d:
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    s, hd, b = d.request("POST", "/mcp", raw=json.dumps(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}}).encode(), headers=h)
    eq(s, 200, "mcp: initialize")
    h["Mcp-Session-Id"] = hd.get("mcp-session-id", "")
    h["MCP-Protocol-Version"] = "2025-06-18"
    s, _, b = d.request("POST", "/mcp", raw=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "load_model", "arguments": {"model": "huge"}}}).encode(), headers=h)
    eq(s, 200, "mcp: a failing tool call is still HTTP 200")
    check(isinstance(b, dict) and "error" not in b and b.get("id") == 1,
          "mcp: not a JSON-RPC error", b)
    res = (b or {}).get("result", {})
    eq(res.get("isError"), True, "mcp: ENOMEM is a result with isError: true")
    check("ENOMEM" in res.get("content", [{}])[0].get("text", ""), "mcp: its text names ENOMEM",
          res)
    eq(d.model("huge")["location"], "未加载", "mcp: nothing loaded")

# --- vramctl mcp against a vramd with a token ---
lines = [{"jsonrpc": "2.0", "id": 0, "method": "initialize",
          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                     "clientInfo": {"name": "t", "version": "1"}}},
         {"jsonrpc": "2.0", "method": "notifications/initialized"},
         {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
          "params": {"name": "load_model", "arguments": {"model": "a"}}}]
text = "\n".join(json.dumps(m) for m in lines) + "\n"
with Vramd("--token", "tok-123", models=["a=synthetic:4M"]) as d:
    for how, argv, env in (("VRAM_TOKEN", [], {"VRAM_TOKEN": "tok-123"}),
                           ("--token", ["--token", "tok-123"], {})):
        r = subprocess.run([VRAMCTL, "--url", d.url, *argv, "mcp"], input=text,
                           capture_output=True, text=True, timeout=60, env=clean_env(env))
        eq(r.returncode, 0, f"mcp with {how}: exit 0 at EOF")
        out = {m.get("id"): m for m in map(json.loads, r.stdout.splitlines())}
        eq(sorted(out, key=str), [0, 1], f"mcp with {how}: one answer per request")
        eq(out.get(0, {}).get("result", {}).get("serverInfo", {}).get("name"), "vramd",
           f"mcp with {how}: initialize")
        eq(out.get(1, {}).get("result", {}).get("isError"), False, f"mcp with {how}: a tool works")
        eq(d.model("a")["location"], "GPU", f"mcp with {how}: the tool acted")
        d.post("/api/v1/models/a/release", headers={"Authorization": "Bearer tok-123"})
    for how, env in (("no token", {}), ("a wrong token", {"VRAM_TOKEN": "nope"})):
        r = subprocess.run([VRAMCTL, "--url", d.url, "mcp"], input=text, capture_output=True,
                           text=True, timeout=60, env=clean_env(env))
        out = [json.loads(l) for l in r.stdout.splitlines()]
        eq([m.get("id") for m in out], [0, 1], f"mcp with {how}: an answer per request, none for "
                                               "the notification")
        check(all("error" in m and "Bearer" in m["error"]["message"] for m in out),
              f"mcp with {how}: each answer is an error that asks for the token", out)
        check("401" in r.stderr and "--token" in r.stderr,
              f"mcp with {how}: stderr says the token is missing", r.stderr)
        eq(d.model("a")["location"], "未加载", f"mcp with {how}: nothing done")

finish()
