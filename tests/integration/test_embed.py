# test_embed.py - an application embedding libvram-server (examples/embed_server.c) serves the seed's API and MCP for its own models.
import json
import os
import re
import signal
import subprocess

from vramtest import SOURCE_DIR, check, clean_env, eq, finish

BIN = os.environ.get("EMBED_SERVER") or os.path.join(SOURCE_DIR, "build", "embed_server")


def request(port, method, path, body=None, headers=None):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.getheader("Content-Type", "").startswith("application/json") and data:
        return r.status, json.loads(data)
    return r.status, data.decode("utf-8", "replace")


def start(extra_env=None):
    env = clean_env({"VRAM_BACKEND": "host", "VRAM_HOST_MEMORY": "256M"})
    env.update(extra_env or {})
    p = subprocess.Popen([BIN, "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         text=True)
    line = p.stdout.readline()
    m = re.search(r":(\d+)/api/gpu/status", line)
    if not m:
        p.kill()
        raise SystemExit(f"embed_server did not start: {line!r} {p.stderr.read()[:500]!r}")
    return p, int(m.group(1))


def main():
    p, port = start()
    try:
        st, status = request(port, "GET", "/api/gpu/status")
        eq(st, 200, "status answers")
        eq(sorted(status), ["codec", "tts"], "the application's models are served")
        eq(status["codec"]["location"], "未加载", "nothing loaded before first use")
        st, r = request(port, "POST", "/api/v1/models/codec/load")
        eq(st, 200, "load of a callback model over HTTP")
        st, one = request(port, "GET", "/api/v1/models/codec")
        # immediate_offload: the end of the load's lease offloads it at once
        eq(one["state"], "cpu", "the callback model was offloaded after its use")
        st, r = request(port, "POST", "/api/v1/models/codec/run")
        eq(st, 200, "run restores and checksums the callback model")
        st, r2 = request(port, "POST", "/api/v1/models/codec/run")
        eq(r2.get("checksum"), r.get("checksum"), "bytes identical across cycles")
        st, r = request(port, "POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                              "params": {"protocolVersion": "2025-06-18",
                                                         "capabilities": {},
                                                         "clientInfo": {"name": "t", "version": "1"}}},
                        {"Accept": "application/json, text/event-stream"})
        eq(st, 200, "MCP initialize on the embedded server")
        check(r and r.get("result", {}).get("protocolVersion") == "2025-06-18", "MCP answer", r)
        st, text = request(port, "GET", "/metrics")
        eq(st, 200, "metrics served")
        check('vram_model_restores_total{model="codec"} 2' in text, "metrics count the restores",
              text[:300])
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    eq(p.returncode, 0, "stops cleanly on SIGTERM")
    check("stopped" in out, "printed its stop line", out + err)

    # a token set by the application is enforced
    p, port = start({"EMBED_TOKEN": "s3cret"})
    try:
        st, r = request(port, "POST", "/api/gpu/offload", {})
        eq(st, 401, "no token: refused")
        st, r = request(port, "POST", "/api/gpu/offload", {}, {"Authorization": "Bearer s3cret"})
        eq(st, 200, "with the token: accepted")
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    finish()


if __name__ == "__main__":
    main()
