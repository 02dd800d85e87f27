# test_node_view.py - one view of the node: a second process joins vramd's node socket; GET /api/v1/node, /metrics, vramctl status/node/offload/release/timeout show and act on its models.
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from vramtest import SOURCE_DIR, Vramd, check, eq, finish

PY_MEMBER = os.path.join(SOURCE_DIR, "tests", "support", "node_member.py")
C_MEMBER = os.environ.get("VRAM_NODE_MEMBER") or os.path.join(SOURCE_DIR, "build", "node_holder")
# the Python package as a member too (not in a sanitizer build, whose
# instrumented libvram.so /usr/bin/python3 cannot load)
PYTHON_MEMBER = os.environ.get("VRAM_PYTHON_MEMBER", "1") == "1"
DEADLINE = 60  # seconds for the member to join, or a change to show


def member_env():
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("VRAM_") or k in ("GPU_IDLE_TIMEOUT", "PYTHONPATH"))}
    env["PYTHONPATH"] = os.environ.get("VRAM_PYTHONPATH", os.path.join(SOURCE_DIR, "python"))
    lib = os.environ.get("VRAM_LIBRARY")
    if lib:
        env["VRAM_LIBRARY"] = lib
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_member(sock, name, *models, hold=None, python=False):
    """A process joined to sock (node_holder, or with python /usr/bin/python3
    with the gpu_manager package); returns (Popen, its pid) once its models
    (MODEL=BYTES) are loaded."""
    argv = ["/usr/bin/python3", PY_MEMBER] if python else [C_MEMBER]
    argv += [sock, name, *models]
    if hold:
        argv += ["--hold", hold]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=member_env(), text=True)
    line = p.stdout.readline()  # "ready PID", or "" when it died
    if not line.startswith("ready "):
        p.kill()
        raise RuntimeError("the member did not start:\n" + p.stderr.read())
    return p, int(line.split()[1])


def stop_member(p):
    p.stdin.close()
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def node(d):
    s, _, b = d.get("/api/v1/node")
    assert s == 200, (s, b)
    return b


def remote(view, mid):
    for mb in view["members"]:
        for m in mb["models"]:
            if m["id"] == mid:
                return m
    return None


def wait_node(d, pred, what):
    v = d.wait_for(lambda: pred(node(d)) and node(d), timeout=DEADLINE, step=0.1)
    check(bool(v), what, node(d))
    return v or node(d)


tmp = tempfile.mkdtemp(prefix="vram-node-view-")
sock = os.path.join(tmp, "node.sock")
try:
    with Vramd("--node-socket", sock, models=["a=synthetic:4M"], host_memory="128M") as d:
        # --- no one else yet: vramd alone, the old table ---
        v = wait_node(d, lambda v: len(v["members"]) == 1, "vramd joins its own node")
        me = v["members"][0]
        eq((me["self"], me["name"], [m["id"] for m in me["models"]]),
           (True, "vramd", [f"a@{me['pid']}"]), "vramd is a member with self: true")
        r = d.ctl("status")
        eq(r.stdout.splitlines()[0].split(), ["NAME", "LOCATION", "STATE", "SIZE", "IDLE",
                                              "TIMEOUT", "LEASES"],
           "status alone on the node: the usual columns")

        p, pid = start_member(sock, "svc-b", "b=1048576", "held=65536", hold="held")
        bid, hid = f"b@{pid}", f"held@{pid}"
        try:
            v = wait_node(d, lambda v: (remote(v, bid) or {}).get("state") == "gpu" and
                          remote(v, hid) is not None, "the member joins with its models")
            other = [mb for mb in v["members"] if mb["pid"] == pid]
            check(len(other) == 1 and other[0]["name"] == "svc-b" and not other[0]["self"] and
                  other[0]["uid"] == os.getuid() and other[0]["backend"] == "host",
                  "GET /api/v1/node: the member's name, pid, uid, backend", v)
            b = remote(v, bid)
            eq((b["owner"], b["name"], b["pid"], b["bytes"], b["device_uuid"]),
               ("svc-b", "b", pid, 1048576, ""), "its model with its owner (an unshared host device has no node uuid)")
            eq(remote(v, hid)["leases"], 1, "the held model has a lease")

            # --- /metrics: labelled by process ---
            s, _, text = d.get("/metrics")
            eq(s, 200, "metrics")
            check(re.search(r"^vram_node_members 2$", text, re.M), "vram_node_members 2", text)
            for series, val in (("vram_node_model_bytes", "1048576"),
                                ("vram_node_model_leases", "0")):
                want = (f'{series}{{process="svc-b",pid="{pid}",model="b",id="{bid}",'
                        f'state="gpu",device_uuid=""}} {val}')
                check(want in text, f"metrics: {want}", text)
            check(re.search(r'^vram_node_model_idle_seconds\{process="svc-b",pid="%d",model="b"'
                            % pid, text, re.M), "metrics: idle seconds", text)
            check(f'vram_node_model_leases{{process="svc-b",pid="{pid}",model="held",id="{hid}"'
                  in text, "metrics: the held model", text)
            for series in ("vram_node_evictions_given_total", "vram_node_bytes_given_total"):
                check(f'{series}{{process="svc-b",pid="{pid}"}} 0' in text, f"metrics: {series}",
                      text)
                check(f"# TYPE {series} counter" in text, f"{series} is a counter", text)
            check('vram_model_state{model="a",state="unloaded"} 1' in text,
                  "metrics: vramd's own series unchanged", text)

            # --- vramctl status: every model, with OWNER and PID ---
            r = d.ctl("ps")
            eq(r.returncode, 0, "ps exit code")
            lines = r.stdout.splitlines()
            eq(lines[0].split(), ["NAME", "LOCATION", "STATE", "SIZE", "IDLE", "TIMEOUT",
                                  "LEASES", "OWNER", "PID"], "ps with other processes: OWNER, PID")
            rows = {ln.split()[0]: ln for ln in lines[1:]}
            eq(sorted(rows), sorted(["a", bid, hid]), "ps: vramd's model and the member's")
            check(re.search(r"^a\s+未加载\s+unloaded\s+4\.0 MiB\s+-\s+10 minutes\s+0\s+vramd\s+%d$"
                            % me["pid"], rows.get("a", ""), re.M),
                  "ps: vramd's own row keeps its columns, owner vramd", rows.get("a"))
            check(re.search(r"^%s\s+GPU\s+gpu\s+1\.0 MiB\s+\S+\s+10 minutes\s+0\s+svc-b\s+%d$"
                            % (re.escape(bid), pid), rows.get(bid, "")),
                  "ps: the member's row under its node-wide id", rows.get(bid))
            check(re.search(r"in use\s+10 minutes\s+1\s+svc-b", rows.get(hid, "")),
                  "ps: the held model is in use", rows.get(hid))
            r = d.ctl("status", bid)
            eq((r.returncode, len(r.stdout.splitlines())), (0, 2), "status NAME@PID: one row")
            check(r.stdout.splitlines()[-1].startswith(bid), "status NAME@PID: its row", r.stdout)
            r = d.ctl("--json", "status")
            eq(sorted(json.loads(r.stdout)), ["a"], "status --json: vramd's own")

            # --- vramctl node ---
            r = d.ctl("node")
            eq(r.returncode, 0, "node exit code")
            lines = r.stdout.splitlines()
            check(lines[0] == f"node socket {sock}: 2 processes joined", "node: its socket", lines)
            head = [ln for ln in lines if ln.startswith("NAME")]
            eq(head[0].split() if head else None,
               ["NAME", "PID", "UID", "BACKEND", "MODELS", "GPU", "BYTES", "GIVEN"], "node: header")
            check(any(re.match(r"^svc-b\s+%d\s+%d\s+host\s+2\s+1\.1 MiB\s+-$" % (pid, os.getuid()),
                               ln) for ln in lines), "node: the member's row", lines)
            check(any(re.match(r"^vramd \(this vramd\)\s+%d\s" % me["pid"], ln) for ln in lines),
                  "node: vramd's own row", lines)
            check("no node evictions yet" in r.stdout, "node: no evictions yet", r.stdout)
            r = d.ctl("--json", "node")
            eq(len(json.loads(r.stdout)["members"]), 2, "node --json: the view")

            # --- acting on the member's models through vramctl (its owner does it) ---
            r = d.ctl("offload", bid)
            eq(r.returncode, 0, "offload NAME@PID exit code " + r.stderr)
            check("done by its owner" in r.stdout, "offload NAME@PID says who did it", r.stdout)
            eq(remote(wait_node(d, lambda v: remote(v, bid)["state"] == "cpu",
                                "the owner offloaded it"), bid)["state"], "cpu", "b is on the CPU")
            r = d.ctl("timeout", "90s", bid)
            eq(r.returncode, 0, "timeout NAME@PID exit code " + r.stderr)
            wait_node(d, lambda v: remote(v, bid)["idle_timeout"] == 90, "the owner set 90 s")
            r = d.ctl("offload", hid)
            check(r.returncode == 1 and "EBUSY" in r.stderr and "in use" in r.stderr,
                  "offload of a model in use in its process: EBUSY", (r.returncode, r.stderr))
            # the HTTP routes with the id in the path, escaped or not ---
            for path in (f"/api/v1/models/b%40{pid}/offload", f"/api/v1/models/{bid}/offload"):
                s, _, body = d.post(path, {})
                eq(s, 200, f"POST {path}")
                check("not on the GPU" in body["message"],
                      "an offload of a remote model already on the CPU succeeds, as a local one",
                      body)
            s, _, body = d.request("PATCH", f"/api/v1/models/b%40{pid}",
                                   body={"idle_timeout": 77, "immediate_offload": True})
            eq(s, 200, "PATCH of a remote model")
            wait_node(d, lambda v: remote(v, bid)["idle_timeout"] == 77 and
                      remote(v, bid)["immediate_offload"] is True, "the owner applied the PATCH")
            s, _, body = d.post(f"/api/v1/models/held%40{pid}/release", {})
            eq(s, 409, "release of a held remote model: 409")
            r = d.ctl("release", f"nope@{pid}")
            eq(r.returncode, 1, "release of no such remote model: exit 1")
            r = d.ctl("release", bid)
            eq(r.returncode, 0, "release NAME@PID exit code " + r.stderr)
            wait_node(d, lambda v: remote(v, bid)["state"] == "unloaded", "the owner released it")
            eq(d.model("a")["location"], "未加载", "vramd's own model untouched")

        finally:
            eq(stop_member(p), 0, "the member exits 0")

        # --- a process with the Python package: the same ---
        if PYTHON_MEMBER:
            p, pid = start_member(sock, "svc-py", "t=65536", python=True)
            tid = f"t@{pid}"
            try:
                wait_node(d, lambda v: (remote(v, tid) or {}).get("state") == "gpu",
                          "a Python process joins with its model")
                r = d.ctl("ps")
                check(any(ln.startswith(tid) and "svc-py" in ln for ln in r.stdout.splitlines()),
                      "ps lists the Python process's model", r.stdout)
                r = d.ctl("offload", tid)
                eq(r.returncode, 0, "offload of the Python process's model " + r.stderr)
                wait_node(d, lambda v: remote(v, tid)["state"] == "cpu",
                          "the Python process offloaded it")
            finally:
                eq(stop_member(p), 0, "the Python member exits 0")

        # --- it left: its models go, the table is the usual one again ---
        wait_node(d, lambda v: len(v["members"]) == 1, "the member leaves the node")
        r = d.ctl("ps")
        eq(r.stdout.splitlines()[0].split()[-1], "LEASES", "ps: the usual columns again")
        s, _, text = d.get("/metrics")
        check(re.search(r"^vram_node_members 1$", text, re.M) and "svc-b" not in text,
              "metrics: the member is gone", text)

    # --- a vramd without a node socket ---
    with Vramd(models=["a=synthetic:1M"]) as d:
        r = d.ctl("node")
        check(r.returncode == 0 and "no node socket" in r.stdout, "node without a node socket",
              (r.returncode, r.stdout, r.stderr))
        s, _, text = d.get("/metrics")
        check("vram_node_" not in text, "metrics without a node: no node series", "")
        r = d.ctl("status")
        eq(r.stdout.splitlines()[0].split()[-1], "LEASES", "status without a node: usual columns")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish()
