# test_runtime.py - models at run time (POST/DELETE /api/v1/models, reopen, vramctl), SIGHUP reload, the event log, the dashboard page, a new user's rough edges.
import os
import signal
import subprocess
import tempfile
import threading
import time

from vramtest import VRAMCTL, VRAMD, Vramd, check, clean_env, eq, finish, free_port

TOKEN = "t0k3n"
AUTH = {"Authorization": "Bearer " + TOKEN}

# ---- register and unregister over HTTP, with the validation of --model ----
with Vramd("--token", TOKEN, models=["a=synthetic:8M"], host_memory="128M") as d:
    s, _, b = d.post("/api/v1/models", {"name": "b", "source": "synthetic:4M"})
    eq(s, 401, "registering needs the token")
    body = {"name": "b", "source": "synthetic:4M:7",
            "options": {"idle_timeout": "10m", "immediate_offload": "yes", "device": 0}}
    s, _, b = d.post("/api/v1/models", body, headers=AUTH)
    eq(s, 200, "POST /api/v1/models registers")
    eq((b["status"]["idle_timeout_seconds"], b["status"]["immediate_offload"]), (600, True),
       "its options, parsed as --model parses them")
    eq(d.model("b")["location"], "未加载", "nothing is loaded before the first use")
    s, _, b = d.post("/api/v1/models", body, headers=AUTH)
    eq((s, b["error"]["code"]), (409, "EEXIST"), "a taken name is 409")
    s, _, b = d.post("/api/v1/models", {"spec": "c=synthetic:4M,idle_timeout=90s,release_timeout=1h"},
                     headers=AUTH)
    eq((s, d.model("c")["idle_timeout_seconds"], d.model("c")["release_timeout_seconds"]),
       (200, 90, 3600), "a spec string, as vramd --model takes it")
    for bad, what in (({"spec": "x=synthetic:4M,bogus=1"}, "unknown option 'bogus'"),
                      ({"name": "x", "source": "synthetic:4M", "options": {"idle_timeout": -1}},
                       "negative"),
                      ({"name": "x", "source": "synthetic:4M", "options": {"immediate_offload": "maybe"}},
                       "true or false"),
                      ({"name": "x/y", "source": "synthetic:4M"}, "name"),
                      ({"name": "x"}, "'source' is required"),
                      ({"name": "x", "source": "synthetic:4M", "color": "red"}, "unknown field")):
        s, _, b = d.post("/api/v1/models", bad, headers=AUTH)
        check(s == 400 and what in b["error"]["message"], f"POST {bad}: 400 naming the problem",
              (s, b))
    # the same text through vramd's own flag gives the same message
    r = subprocess.run([VRAMD, "--port", "0", "--model", "x=synthetic:4M,bogus=1"],
                       capture_output=True, text=True, env=clean_env(), timeout=30)
    check(r.returncode == 2 and "unknown option 'bogus'" in r.stderr, "--model: the same parser", r.stderr)
    check("x" not in d.status(), "no bad request registered anything")

    s, _, b = d.request("DELETE", "/api/v1/models/c")
    eq(s, 401, "unregistering needs the token")
    s, _, b = d.request("DELETE", "/api/v1/models/c", headers=AUTH)
    check(s == 200 and "c" not in d.status(), "DELETE /api/v1/models/c unregisters", b)
    s, _, b = d.request("DELETE", "/api/v1/models/c", headers=AUTH)
    eq(s, 404, "DELETE of an unknown model is 404")
    s, _, _ = d.post("/api/v1/models/a/load", headers=AUTH)
    s, _, b = d.request("DELETE", "/api/v1/models/a", headers=AUTH)
    check(s == 200 and "a" not in d.status(), "a loaded model is released and dropped", b)

    # removing a model while a request loads it: it waits for the request or is refused, never
    # pulls the model out from under it
    d.post("/api/v1/models", {"name": "slow", "source": "synthetic:64M"}, headers=AUTH)
    got = {}
    t = threading.Thread(target=lambda: got.update(load=d.post("/api/v1/models/slow/load", headers=AUTH)[0]))
    t.start()
    time.sleep(0.05)
    s, _, b = d.request("DELETE", "/api/v1/models/slow", headers=AUTH)
    t.join(60)
    check(s in (200, 409) and got.get("load") in (200, 404), "DELETE during a load: done after it, or 409",
          (s, b, got))
    check(d.get("/healthz")[0] == 200, "vramd is well after it")

    # the event log, with a cursor
    s, _, ev = d.get("/api/v1/events")
    kinds = [e["kind"] for e in ev["events"]]
    check(s == 200 and "register" in kinds and "load" in kinds, "events: registers and the load", kinds)
    s, _, ev2 = d.get(f"/api/v1/events?since={ev['next']}")
    eq((s, ev2["events"], ev2["next"]), (200, [], ev["next"]), "events since the cursor: none new")
    s, _, b = d.get("/api/v1/events?since=-1")
    eq(s, 400, "a bad cursor is 400")

    # the dashboard for browsers, the endpoint list for everyone else
    s, h, page = d.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    check(s == 200 and h["content-type"].startswith("text/html") and "<script>" in page and
          "frame-ancestors 'none'" in h.get("content-security-policy", ""),
          "GET / as a browser: the dashboard with a strict CSP")
    check("http://" not in page.replace("http://www.w3.org", "") and "https://" not in page,
          "the page loads nothing from elsewhere")
    s, h, b = d.get("/", headers={"Accept": "application/json"})
    check(s == 200 and b["name"] == "vramd" and any(e["path"] == "/api/v1/events" for e in b["endpoints"]),
          "GET / as JSON: the endpoint list", b)
    s, _, _ = d.get("/", headers={"Accept": "text/html", "Host": "evil.example"})
    eq(s, 403, "the dashboard keeps the Host check")

# ---- vramctl register / unregister / reopen, and the file changed on disk ----
tmp = tempfile.mkdtemp()
path = os.path.join(tmp, "m.safetensors")
subprocess.run([VRAMCTL, "make-model", path, "--size", "2M", "--seed", "1"], check=True,
               capture_output=True)
with Vramd(host_memory="128M") as d:
    r = d.ctl("register", f"m={path},idle_timeout=5m")
    check(r.returncode == 0 and "registered m" in r.stdout, "vramctl register", r.stderr)
    eq(d.model("m")["idle_timeout_seconds"], 300, "vramctl register: its options")
    r = d.ctl("register", "n=synthetic:1M,bogus=1")
    check(r.returncode == 1 and "bogus" in r.stderr, "vramctl register: vramd's parser refuses", r.stderr)
    r = d.ctl("run", "m")
    before = d.model("m")["bytes"]
    subprocess.run([VRAMCTL, "make-model", path, "--size", "4M", "--seed", "2"], check=True,
                   capture_output=True)
    r = d.ctl("reopen", "m")
    check(r.returncode == 0 and "reopened" in r.stdout, "vramctl reopen", r.stderr)
    after = d.model("m")
    check(after["bytes"] > before and after["idle_timeout_seconds"] == 300,
          "reopen: the new file's size, the same options", (before, after["bytes"]))
    r = d.ctl("run", "m")
    eq(r.returncode, 0, "the reopened model loads from the new file")
    # released, then the file changes again: the next load reopens it by itself
    d.ctl("release", "m")
    subprocess.run([VRAMCTL, "make-model", path, "--size", "6M", "--seed", "3"], check=True,
                   capture_output=True)
    r = d.ctl("load", "m")
    check(r.returncode == 0 and d.model("m")["bytes"] > after["bytes"],
          "the next load after a release reads the changed file", r.stderr)
    check(any("changed on disk" in line for line in d.log), "and says so in the log")
    after = d.model("m")
    d.ctl("release", "m")
    os.unlink(path)
    r = d.ctl("reopen", "m")
    check(r.returncode == 1 and d.model("m")["bytes"] == after["bytes"],
          "reopen of a missing file fails and keeps the model", r.stderr)
    d.ctl("register", "u=synthetic:1M")
    d.ctl("load", "u")
    r = d.ctl("unload", "u")
    eq((r.returncode, d.model("u")["location"]), (0, "CPU"), "vramctl unload = offload")
    r = d.ctl("ps")
    check(r.returncode == 0 and "m" in r.stdout, "vramctl ps = status")
    r = d.ctl("unregister", "m")
    check(r.returncode == 0 and "m" not in d.status(), "vramctl unregister", r.stderr)

# ---- SIGHUP: the config file and .env again ----
cwd = tempfile.mkdtemp()
conf = os.path.join(cwd, "vramd.conf")


def write(p, text):
    with open(p, "w") as f:
        f.write(text)


write(conf, "model keep=synthetic:4M\nmodel gone=synthetic:4M\nmodel opts=synthetic:4M,idle_timeout=60\n")
with Vramd("--config", conf, cwd=cwd, host_memory="128M") as d:
    d.post("/api/v1/models/gone/load")
    write(conf, "model keep=synthetic:4M\nmodel opts=synthetic:4M,idle_timeout=120\n"
                "model new=synthetic:2M\n")
    write(os.path.join(cwd, ".env"), "GPU_IDLE_TIMEOUT=900\n")
    d.proc.send_signal(signal.SIGHUP)
    ok = d.wait_for(lambda: "new" in d.status() and "gone" not in d.status())
    check(ok, "SIGHUP: a new model appears, a removed one is dropped", list(d.status()))
    st = d.status()
    eq((st["opts"]["idle_timeout_seconds"], st["keep"]["idle_timeout_seconds"]), (120, 900),
       "SIGHUP: changed options and .env apply")
    write(conf, "model keep=synthetic:4M\nmodel broken=synthetic:4M,idle_timeout=soon\n")
    n = len(d.log)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: any("nothing changed" in line for line in d.log[n:]))
    check(any("nothing changed" in line and "soon" in line for line in d.log[n:]),
          "a bad file changes nothing and says why", "\n".join(d.log[n:]))
    eq(sorted(d.status()), ["keep", "new", "opts"], "the models after a bad reload")

# ---- rough edges of a first start ----
cwd = tempfile.mkdtemp()
port = free_port()
write(os.path.join(cwd, ".env"), f"VRAM_PORT={port}\nVRAM_GPU_BUGDET=50%\nOTHER_TOOL_KEY=1\n")
env = clean_env()
with Vramd(models=["a=synthetic:4M"], cwd=cwd, port=port) as d:
    check(any("VRAM_GPU_BUGDET" in line and "did you mean VRAM_GPU_BUDGET" in line for line in d.log),
          "a misspelled .env variable is named, with the nearest known one", "\n".join(d.log[:5]))
    check(not any("OTHER_TOOL_KEY" in line for line in d.log), "another program's keys are left alone")
    # vramctl finds vramd through the same .env (no VRAM_URL)
    r = subprocess.run([VRAMCTL, "status"], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0 and "a" in r.stdout, "vramctl follows VRAM_PORT of .env", r.stderr)
for argv, what in ((["--frobnicate"], "unknown option '--frobnicate'"),
                   (["--model", "a/b=synthetic:1M"], "model name")):
    r = subprocess.run([VRAMD, *argv], capture_output=True, text=True, env=env, timeout=30)
    check(r.returncode == 2 and what in r.stderr, f"vramd {' '.join(argv)}: exit 2, '{what}'",
          (r.returncode, r.stderr))

finish()
