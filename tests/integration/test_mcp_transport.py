# test_mcp_transport.py - MCP over Streamable HTTP (/mcp) and stdio (vramctl mcp) at the wire level: statuses, sessions, JSON-RPC errors.
import json
import subprocess

from vramtest import VRAMCTL, Vramd, check, clean_env, eq, finish

ACCEPT = "application/json, text/event-stream"


def rpc(d, msg, session=None, version=None, headers=None, raw=None):
    h = {"Content-Type": "application/json", "Accept": ACCEPT}
    if session:
        h["Mcp-Session-Id"] = session
    if version:
        h["MCP-Protocol-Version"] = version
    h.update(headers or {})
    data = raw if raw is not None else json.dumps(msg).encode()
    return d.request("POST", "/mcp", raw=data, headers=h)


def init(d, version="2025-11-25"):
    s, h, b = rpc(d, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": version, "capabilities": {},
                                 "clientInfo": {"name": "test", "version": "1"}}})
    return s, h.get("mcp-session-id"), b


with Vramd(models=["Llasa-8B=synthetic:8M", "XCodec2=synthetic:4M:1,immediate_offload=1"]) as d:
    # --- initialize and version negotiation ---
    for v in ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"):
        s, sid, b = init(d, v)
        eq(s, 200, f"initialize {v}")
        eq(b["result"]["protocolVersion"], v, f"server answers with the client's {v}")
        check(sid and all(0x21 <= ord(c) <= 0x7e for c in sid), "session id is visible ASCII", sid)
    s, sid0, b = init(d, "1999-01-01")
    eq(b["result"]["protocolVersion"], "2025-11-25", "unknown version: server's latest")
    eq(b["result"]["capabilities"], {"tools": {"listChanged": False}}, "capabilities: tools only")
    eq(b["result"]["serverInfo"]["name"], "vramd", "serverInfo")
    eq(b["id"], 0, "id 0 echoed as a number")

    s, sid, _ = init(d)
    s, _, b = rpc(d, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid, "2025-11-25")
    eq((s, b), (202, None), "notification: 202, no body")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": "p1", "method": "ping"}, sid, "2025-11-25")
    eq((s, b), (200, {"jsonrpc": "2.0", "id": "p1", "result": {}}), "ping, string id kept")

    # --- tools/list ---
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
    tools = {t["name"]: t for t in b["result"]["tools"]}
    eq(sorted(tools), sorted(["get_gpu_status", "offload_gpu", "release_gpu", "update_gpu_timeout",
                              "load_model", "run_model", "register_model", "unregister_model",
                              "reopen_model", "configure_model", "node_status"]),
       "the eleven tools")
    for t in tools.values():
        check(t["description"] and t["inputSchema"]["type"] == "object" and "annotations" in t,
              f"{t['name']}: description, object schema, annotations", t)
    eq(tools["get_gpu_status"]["annotations"]["readOnlyHint"], True, "status is read-only")
    eq(tools["node_status"]["annotations"]["readOnlyHint"], True, "node_status is read-only")
    eq(tools["release_gpu"]["annotations"]["destructiveHint"], True, "release is destructive")
    eq(tools["offload_gpu"]["annotations"]["destructiveHint"], False, "offload keeps the bytes")
    eq(tools["update_gpu_timeout"]["inputSchema"]["required"], ["timeout_seconds"],
       "timeout_seconds required")
    check("nextCursor" not in b["result"], "one page")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 3, "method": "tools/list",
                      "params": {"cursor": "abc"}}, sid)
    eq(b["error"]["code"], -32602, "unknown cursor: -32602")

    # --- tools/call: every tool, and the seed's calls ---
    def call(name, args, i=[100]):
        i[0] += 1
        s, _, b = rpc(d, {"jsonrpc": "2.0", "id": i[0], "method": "tools/call",
                          "params": {"name": name, "arguments": args}}, sid)
        eq(s, 200, f"tools/call {name}: HTTP 200")
        return b

    b = call("get_gpu_status", {})
    r = b["result"]
    eq(r["isError"], False, "get_gpu_status ok")
    eq(json.loads(r["content"][0]["text"]), r["structuredContent"], "text = structuredContent")
    eq(r["structuredContent"]["Llasa-8B"]["location"], "未加载", "status through MCP")
    r = call("run_model", {"model": "XCodec2"})["result"]
    eq((r["isError"], r["structuredContent"]["location"]), (False, "CPU"), "run_model")
    r = call("load_model", {"model": "Llasa-8B"})["result"]
    eq(r["structuredContent"]["location"], "GPU", "load_model")
    r = call("offload_gpu", {})["result"]
    eq(r["isError"], False, "offload_gpu {}")
    eq(d.model("Llasa-8B")["location"], "CPU", "offload_gpu applied")
    r = call("release_gpu", {"model": "XCodec2"})["result"]
    eq(d.model("XCodec2")["location"], "未加载", "release_gpu with a model")
    r = call("release_gpu", {})["result"]
    eq(d.model("Llasa-8B")["location"], "未加载", "release_gpu {}")
    r = call("update_gpu_timeout", {"timeout_seconds": 300})["result"]
    eq(r["isError"], False, "update_gpu_timeout 300")
    eq(d.model("Llasa-8B")["idle_timeout_seconds"], 300, "timeout applied")
    r = call("configure_model", {"model": "XCodec2", "idle_timeout": 42, "immediate_offload": False})
    eq(r["result"]["isError"], False, "configure_model")
    eq(d.model("XCodec2")["idle_timeout_seconds"], 42, "configure_model applied")
    r = call("node_status", {})["result"]
    eq((r["isError"], r["structuredContent"]["members"]), (False, []),
       "node_status without a node socket: no members")

    # --- bad arguments: results with isError, state unchanged ---
    for name, args in (("update_gpu_timeout", {"timeout_seconds": -1}),
                       ("update_gpu_timeout", {"timeout_seconds": "300"}),
                       ("update_gpu_timeout", {}),
                       ("update_gpu_timeout", {"timeout_seconds": 1e20}),
                       ("update_gpu_timeout", {"timeout": 300}),
                       ("offload_gpu", {"model": "nope"}),
                       ("offload_gpu", {"model": 3}),
                       ("run_model", {}),
                       ("load_model", {"model": "nope"}),
                       ("get_gpu_status", {"verbose": True}),
                       ("node_status", {"model": "x"}),
                       ("configure_model", {"idle_timeout": 5}),
                       ("configure_model", {"model": "XCodec2"})):
        r = call(name, args)
        check(r.get("result", {}).get("isError") is True, f"{name} {args}: isError result", r)
        text = r.get("result", {}).get("content", [{}])[0].get("text", "")
        check(text.startswith(name), f"{name} {args}: message names the tool", text)
    eq(d.model("Llasa-8B")["idle_timeout_seconds"], 300, "bad calls changed nothing")
    r = call("update_gpu_timeout", {"timeout_seconds": "300"})
    check("'timeout_seconds'" in r["result"]["content"][0]["text"],
          "message names the tool's argument", r)

    # --- JSON-RPC errors ---
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "nope", "arguments": {}}}, sid)
    eq((s, b["error"]["code"]), (200, -32602), "unknown tool: -32602")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {}}, sid)
    eq(b["error"]["code"], -32602, "tools/call without name: -32602")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 10, "method": "resources/list"}, sid)
    eq(b["error"]["code"], -32601, "unknown method: -32601")
    s, _, b = rpc(d, None, sid, raw=b'{"jsonrpc": "2.0", "id": 1, "method": ')
    eq((s, b["error"]["code"], b["id"]), (400, -32700, None), "parse error: 400, -32700, id null")
    s, _, b = rpc(d, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], sid)
    eq((s, b["error"]["code"]), (400, -32600), "batch: 400 -32600")
    s, _, b = rpc(d, {"jsonrpc": "1.0", "id": 1, "method": "ping"}, sid)
    eq(b["error"]["code"], -32600, "wrong jsonrpc: -32600")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": None, "method": "ping"}, sid)
    eq(b["error"]["code"], -32600, "null id: -32600")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "result": {}}, sid)
    eq(s, 202, "a response from the client: 202")

    # --- Streamable HTTP rules ---
    s, h, _ = d.request("GET", "/mcp", headers={"Accept": "text/event-stream"})
    eq(s, 405, "GET /mcp: 405")
    eq(h.get("allow"), "POST, DELETE", "GET /mcp: Allow")
    s, _, _ = d.request("PUT", "/mcp", raw=b"{}")
    eq(s, 405, "PUT /mcp: 405")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
    eq(s, 400, "no session header: 400")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, "no-such-session")
    eq(s, 404, "unknown session: 404")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid, "1999-01-01")
    eq(s, 400, "unsupported MCP-Protocol-Version: 400")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid,
                  headers={"Content-Type": "text/plain"})
    eq(s, 415, "wrong content type: 415")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid,
                  headers={"Accept": "text/html"})
    eq(s, 406, "Accept without JSON: 406")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid,
                  headers={"Origin": "http://evil.example"})
    eq(s, 403, "foreign Origin: 403")
    check(b["error"]["code"] == -32000, "403 body is a JSON-RPC error", b)
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid,
                  headers={"Host": "evil.example:80"})
    eq(s, 403, "foreign Host: 403")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid,
                  headers={"Origin": f"http://localhost:{d.port}"})
    eq(s, 200, "loopback Origin: 200")

    # --- session lifecycle: id on initialize, DELETE ends it, then 404 ---
    s, sid2, _ = init(d)
    s, _, _ = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid2)
    eq(s, 200, "new session works")
    s, _, _ = d.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid2})
    eq(s, 200, "DELETE ends the session")
    s, _, b = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid2)
    eq(s, 404, "ended session: 404")
    eq(b["error"]["code"], -32001, "ended session: -32001")
    s, _, _ = d.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid2})
    eq(s, 404, "DELETE of an ended session: 404")
    s, _, _ = d.request("DELETE", "/mcp")
    eq(s, 400, "DELETE without a session: 400")
    s, _, _ = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid)
    eq(s, 200, "other sessions live on")

    # --- stdio: vramctl mcp forwards lines, one answer per request line ---
    lines = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "claude-ai", "version": "0.1.0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "update_gpu_timeout", "arguments": {"timeout_seconds": 300}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "run_model", "arguments": {"model": "XCodec2"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "update_gpu_timeout", "arguments": {"timeout_seconds": -5}}},
        {"jsonrpc": "2.0", "id": 5, "method": "prompts/list"},
        {"jsonrpc": "2.0", "id": 6, "method": "ping"},
    ]
    text = "\n".join(json.dumps(m, ensure_ascii=False) for m in lines) + "\r\n\n{oops\n"
    def sessions():
        for line in d.get("/metrics")[2].splitlines():
            if line.startswith("vram_mcp_sessions "):
                return int(line.split()[1])

    sessions_before = sessions()
    r = subprocess.run([VRAMCTL, "--url", d.url, "mcp"], input=text, capture_output=True,
                       text=True, timeout=60, env=clean_env())
    eq(r.returncode, 0, "vramctl mcp exits 0 when stdin closes")
    out = [json.loads(l) for l in r.stdout.splitlines()]
    eq(len(out), 8, "one line per request (none for the notification), plus the parse error")
    by_id = {m.get("id"): m for m in out}
    eq(by_id[0]["result"]["protocolVersion"], "2025-06-18", "stdio initialize")
    eq(len(by_id[1]["result"]["tools"]), 11, "stdio tools/list")
    eq(by_id[2]["result"]["isError"], False, "stdio update_gpu_timeout")
    check("checksum" in by_id[3]["result"]["structuredContent"], "stdio run_model", by_id[3])
    eq(by_id[4]["result"]["isError"], True, "stdio bad argument: isError")
    eq(by_id[5]["error"]["code"], -32601, "stdio unknown method")
    eq(by_id[6]["result"], {}, "stdio ping")
    eq(by_id[None]["error"]["code"], -32700, "stdio parse error with id null")
    check("vramctl mcp" in r.stderr, "logs go to stderr", r.stderr)
    eq(sessions(), sessions_before, "the stdio session was ended with DELETE at EOF")

    # stdio with vramd gone: JSON-RPC errors with the request's id, still line by line
    r = subprocess.run([VRAMCTL, "--url", "http://127.0.0.1:1", "mcp"],
                       input=json.dumps(lines[0]) + "\n", capture_output=True, text=True,
                       timeout=30, env=clean_env())
    eq(r.returncode, 0, "stdio without vramd still exits 0 at EOF")
    o = json.loads(r.stdout.splitlines()[0])
    eq(o["id"], 0, "error carries the request id")
    check("cannot reach vramd" in o["error"]["message"], "error explains", o)

finish()
