# test_seed.py - the seed's own curl lines, verbatim, against vramd on the seed's port 7861 (another free port only when 7861 is taken).
import json
import shutil
import socket
import subprocess

from vramtest import Vramd, check, eq, finish

SEED_LINES = [
    "curl http://localhost:7861/api/gpu/status",
    "curl -X POST http://localhost:7861/api/gpu/offload",
    "curl -X POST http://localhost:7861/api/gpu/release",
    """curl -X POST http://localhost:7861/api/gpu/timeout \\
  -H "Content-Type: application/json" \\
  -d '{"timeout": 300}'""",
    "curl http://localhost:7861/api/gpu/status | jq",
]


def port_free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


port = 7861
if not port_free(port):
    print("note: port 7861 is taken on this machine; the seed's lines run against another port")
    port = 0


def sh(line, d):
    if port == 0:
        line = line.replace("localhost:7861", f"localhost:{d.port}")
    if line.endswith("| jq") and not shutil.which("jq"):
        line = line[: -len("| jq")] + "| python3 -m json.tool"
    r = subprocess.run(["bash", "-c", "set -o pipefail; " + line], capture_output=True,
                       text=True, timeout=60)
    eq(r.returncode, 0, f"`{line.splitlines()[0]}` exit code")
    return r.stdout


with Vramd(models=["Llasa-8B=synthetic:32M", "XCodec2=synthetic:8M"], port=port) as d:
    out = json.loads(sh(SEED_LINES[0], d))
    eq(sorted(out), ["Llasa-8B", "XCodec2"], "status lists the seed's models")
    eq(out["XCodec2"]["location"], "未加载", "XCodec2 not loaded, as in the seed's example")
    for f in ("model_name", "location", "idle_time_seconds", "idle_timeout_seconds",
              "monitor_running", "gpu_memory"):
        check(f in out["Llasa-8B"], f"seed field {f}")

    d.post("/api/v1/models/Llasa-8B/load")
    out = json.loads(sh(SEED_LINES[1], d))
    eq(out["success"], True, "offload answers success")
    eq(d.model("Llasa-8B")["location"], "CPU", "the seed's offload moved Llasa-8B to the CPU")

    out = json.loads(sh(SEED_LINES[2], d))
    eq(out["success"], True, "release answers success")
    eq(d.model("Llasa-8B")["location"], "未加载", "the seed's release freed it")

    out = json.loads(sh(SEED_LINES[3], d))
    eq(out["success"], True, "timeout answers success")
    check(all(m["idle_timeout_seconds"] == 300 for m in d.status().values()),
          "the seed's timeout set 300 s everywhere")

    text = sh(SEED_LINES[4], d)
    eq(json.loads(text)["Llasa-8B"]["idle_timeout_seconds"], 300, "status | jq")

finish()
