# test_errors.py - every error status of vramd's HTTP API (400 401 403 404 405 409 413 503), and that no bad request changes state.
import http.client
import os
import random
import socket
import threading
import time

from vramtest import Vramd, check, eq, finish, stable

MODELS = ["Llasa-8B=synthetic:32M", "XCodec2=synthetic:8M", "big=synthetic:192M"]


def err(d, method, path, want, code=None, what="", **kw):
    s, h, b = d.request(method, path, **kw)
    label = what or f"{method} {path}"
    eq(s, want, f"{label}: status")
    check(isinstance(b, dict) and isinstance(b.get("error"), dict) and
          isinstance(b["error"].get("message"), str) and b["error"]["message"],
          f"{label}: JSON error body with a message", b)
    if code and isinstance(b, dict) and isinstance(b.get("error"), dict):
        eq(b["error"].get("code"), code, f"{label}: error code")
    return s, h, b


with Vramd(models=MODELS, host_memory="256M") as d:
    d.post("/api/v1/models/Llasa-8B/load")
    before = stable(d.status())

    # --- 400: malformed JSON, wrong types, bad values ---
    T = "/api/gpu/timeout"
    for raw in (b"{", b'{"timeout": NaN}', b'{"timeout": Infinity}', b'{"timeout": 1e400}',
                b'{"timeout": 300,}', b"[1, 2]", b'"300"', b"300", b'{"timeout": 1, "timeout": 2}',
                b'{"timeout": 99999999999999999999999}', b'{"model": "\xff\xfe"}',
                b'{"model": "a\\u0000b", "timeout": 1}', b"\x00\x01\x02"):
        err(d, "POST", T, 400, "EINVAL", f"timeout body {raw[:30]!r}", raw=raw,
            headers={"Content-Type": "application/json"})
    for body in ({}, {"timeout": "300"}, {"timeout": -1}, {"timeout": -0.001},
                 {"timeout": 1e12}, {"timeout": 315360001}, {"timeout": None}, {"timeout": True},
                 {"timeout": [300]}, {"timeout": {"s": 1}}, {"timeout": 300, "extra": 1},
                 {"timeout_seconds": 300}, {"timeout": 300, "model": 7}):
        err(d, "POST", T, 400, "EINVAL", f"timeout {body}", body=body)
    for path in ("/api/gpu/offload", "/api/gpu/release"):
        for body in ({"model": 5}, {"model": ""}, {"model": None, "x": 1}, {"model": ["a"]},
                     {"model": "x" * 300}, {"nowait": "yes"}):
            err(d, "POST", path, 400, "EINVAL", f"{path} {body}", body=body)
    P = "/api/v1/models/XCodec2"
    for body in ({}, {"idle_timeout": -5}, {"idle_timeout": "5"}, {"release_timeout": -1},
                 {"immediate_offload": "maybe"},
                 {"immediate_offload": 2}, {"idle_timeout": 5, "release_timeout": -1},
                 {"idle_timeout": 5, "bogus": 1}, {"model": "Llasa-8B", "idle_timeout": 5}):
        err(d, "PATCH", P, 400, "EINVAL", f"PATCH {body}", body=body)
    err(d, "POST", "/api/v1/models/XCodec2/run", 400, "EINVAL", "run with another model in body",
        body={"model": "Llasa-8B"})

    # --- 404: unknown model, unknown endpoint ---
    err(d, "GET", "/api/v1/models/nope", 404, "ENOENT")
    for a in ("load", "run", "offload", "release"):
        err(d, "POST", f"/api/v1/models/nope/{a}", 404, "ENOENT")
    err(d, "PATCH", "/api/v1/models/nope", 404, "ENOENT", body={"idle_timeout": 5})
    err(d, "POST", "/api/gpu/offload", 404, "ENOENT", body={"model": "nope"})
    err(d, "POST", "/api/gpu/release", 404, "ENOENT", body={"model": "nope"})
    _, _, b = err(d, "POST", T, 404, "ENOENT", body={"timeout": 5, "model": "nope"})
    check("Llasa-8B" in b["error"]["message"], "404 message lists the models", b)
    err(d, "GET", "/nope", 404, "NOT_FOUND")
    err(d, "GET", "/api/gpu", 404, "NOT_FOUND")

    # --- 405: wrong method, with Allow ---
    for method, path, allow in (("GET", "/api/gpu/offload", "POST"),
                                ("GET", "/api/gpu/release", "POST"),
                                ("GET", "/api/gpu/timeout", "POST"),
                                ("PUT", "/api/gpu/timeout", "POST"),
                                ("POST", "/api/gpu/status", "GET, HEAD"),
                                ("PUT", "/api/v1/models/XCodec2", "GET, HEAD, PATCH, DELETE"),
                                ("GET", "/api/v1/models/XCodec2/load", "POST"),
                                ("POST", "/metrics", "GET, HEAD"),
                                ("POST", "/healthz", "GET, HEAD")):
        _, h, _ = err(d, method, path, 405, "METHOD_NOT_ALLOWED")
        eq(h.get("allow"), allow, f"{method} {path}: Allow header")

    # --- 413: body over the limit, by Content-Length and chunked ---
    big = b'{"timeout": 1, "pad": "' + b"x" * (100 * 1024) + b'"}'
    err(d, "POST", T, 413, "PAYLOAD_TOO_LARGE", "oversized body", raw=big,
        headers={"Content-Type": "application/json"})

    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    conn.request("POST", T, body=chunks(), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    r.read()
    eq(r.status, 413, "oversized chunked body")
    conn.close()
    # a huge announced body is refused before any of it is sent
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s.sendall(b"POST /api/gpu/timeout HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n")
    head = s.recv(4096).decode("latin-1")
    s.close()
    check(head.startswith("HTTP/1.1 413"), "huge Content-Length answered 413 at once", head[:80])

    # --- 403: foreign Origin or Host (DNS rebinding, cross-site) ---
    for hdrs in ({"Origin": "http://evil.example"}, {"Host": "evil.example"},
                 {"Host": f"evil.example:{d.port}"}, {"Origin": "null"},
                 {"Origin": "http://127.0.0.1.evil.example"}):
        err(d, "POST", "/api/gpu/release", 403, "FORBIDDEN", f"release with {hdrs}", headers=hdrs)
        err(d, "GET", "/api/gpu/status", 403, "FORBIDDEN", f"status with {hdrs}", headers=hdrs)
    for hdrs in ({"Origin": f"http://localhost:{d.port}"}, {"Host": f"localhost:{d.port}"},
                 {"Host": f"[::1]:{d.port}"}, {"Origin": "http://127.0.0.1:3000"}):
        s, _, _ = d.request("GET", "/api/gpu/status", headers=hdrs)
        eq(s, 200, f"loopback {hdrs} accepted")

    # --- the bad requests above changed nothing ---
    eq(stable(d.status()), before, "no state changed by bad requests")

    # --- 409 (nowait) and 202 (deferred) while a model is loading ---
    def slow_load(out):
        out.append(d.post("/api/v1/models/big/load"))

    got409 = got202 = False
    for attempt in range(5):
        d.post("/api/v1/models/big/release")
        out = []
        t = threading.Thread(target=slow_load, args=(out,))
        t.start()
        if d.wait_for(lambda: d.model("big")["state"] == "loading", timeout=5, step=0.005):
            s, _, b = d.post("/api/gpu/offload", {"model": "big", "nowait": True})
            if s == 409:
                got409 = True
                eq(b["error"]["code"], "EBUSY", "409 code")
            s, _, b = d.post("/api/v1/models/big/offload")
            if s == 202:
                got202 = True
                eq(b["deferred"], True, "202 says deferred")
        t.join()
        eq(out[0][0], 200, "the slow load itself succeeded")
        if got409 and got202:
            break
    check(got409, "offload with nowait during a load answered 409")
    check(got202, "offload during a load answered 202 (deferred)")
    if got202:
        eq(d.wait_for(lambda: d.model("big")["location"] == "CPU", timeout=10), True,
           "the deferred offload happened when the load's lease ended")

    # --- garbage on the wire never kills the daemon ---
    rnd = random.Random(1)
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=1)
        kind = i % 6
        if kind == 0:
            payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 400)))
        elif kind == 1:
            payload = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        elif kind == 2:
            payload = b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * 70000 + b"\r\n\r\n"
        elif kind == 3:
            payload = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n"
        elif kind == 4:
            payload = b"POST /api/gpu/timeout HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        else:
            payload = b"\r\n\r\nBREW /coffee HTCPCP/1.0\r\n\r\n"
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.recv(1024)
        except OSError:
            pass
        s.close()
    s, _, b = d.get("/healthz")
    eq(s, 200, "alive after garbage")

# --- 503: a model that cannot fit the device ---
with Vramd("--evict-wait", "0.2", models=["huge=synthetic:96M", "small=synthetic:8M"],
           host_memory="64M") as d:
    s, _, b = err(d, "POST", "/api/v1/models/huge/load", 503, "ENOMEM")
    check("huge" in b["error"]["message"] or "memory" in b["error"]["message"],
          "ENOMEM message says what did not fit", b)
    eq(d.model("huge")["location"], "未加载", "a failed load leaves the model unloaded")
    check(d.model("huge")["last_error"], "last_error kept", d.model("huge"))
    s, _, b = d.post("/api/v1/models/small/run")
    eq(s, 200, "another model still works after ENOMEM")

# --- 401: token ---
TOKEN = "s3cret-token"
for how in ("flag", "env"):
    args = ("--token", TOKEN) if how == "flag" else ()
    env = {"VRAM_TOKEN": TOKEN} if how == "env" else None
    with Vramd(*args, models=["m=synthetic:4M"], env=env) as d:
        s, _, _ = d.get("/api/gpu/status")
        eq(s, 200, f"[{how}] reads need no token")
        before = stable(d.status())
        _, h, _ = err(d, "POST", "/api/gpu/timeout", 401, "UNAUTHORIZED", f"[{how}] no token",
                      body={"timeout": 5})
        check("bearer" in h.get("www-authenticate", "").lower(), "WWW-Authenticate: Bearer", h)
        for a in ("Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer ",
                  f"Bearer {TOKEN[:-1]}"):
            err(d, "POST", "/api/gpu/timeout", 401, "UNAUTHORIZED", f"[{how}] Authorization: {a}",
                body={"timeout": 5}, headers={"Authorization": a})
        err(d, "POST", "/api/v1/models/m/load", 401, what=f"[{how}] load without token")
        err(d, "PATCH", "/api/v1/models/m", 401, what=f"[{how}] PATCH without token",
            body={"idle_timeout": 1})
        s, _, b = d.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"})
        eq(s, 401, f"[{how}] /mcp needs the token")
        s, _, _ = d.request("GET", "/mcp")
        eq(s, 401, f"[{how}] GET /mcp needs the token too")
        eq(stable(d.status()), before, f"[{how}] refused requests changed nothing")
        for a in (f"Bearer {TOKEN}", f"bearer  {TOKEN}"):
            s, _, _ = d.post("/api/gpu/timeout", {"timeout": 7}, headers={"Authorization": a})
            eq(s, 200, f"[{how}] Authorization: {a}")
        eq(d.model("m")["idle_timeout_seconds"], 7, f"[{how}] authorized change applied")

finish()
