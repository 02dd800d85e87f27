# test_http_api.py - every HTTP endpoint of vramd answers with the documented shapes (host backend).
import re

from vramtest import Vramd, check, eq, expected_checksum, finish

MODELS = ["Llasa-8B=synthetic:64M", "XCodec2=synthetic:16M:7,immediate_offload=1",
          "idle=synthetic:8M,idle_timeout=30,release_timeout=60"]

with Vramd(models=MODELS, host_memory="256M") as d:
    # --- seed endpoints ---
    s, h, st = d.get("/api/gpu/status")
    eq(s, 200, "GET /api/gpu/status")
    check(h.get("content-type", "").startswith("application/json"), "status is JSON", h)
    eq(sorted(st), ["Llasa-8B", "XCodec2", "idle"], "status keys are the model names")
    m = st["Llasa-8B"]
    for f in ("model_name", "location", "idle_time_seconds", "idle_timeout_seconds",
              "monitor_running", "gpu_memory", "state", "bytes", "leases"):
        check(f in m, f"status has the seed's field {f}", m)
    eq(m["location"], "未加载", "an unused model is not loaded (lazy)")
    eq(m["monitor_running"], True, "monitor_running")
    check("GPU_0" in m["gpu_memory"] and "total_gb" in m["gpu_memory"]["GPU_0"],
          "gpu_memory has GPU_0.total_gb", m["gpu_memory"])
    eq(st["XCodec2"]["immediate_offload"], True, "model option immediate_offload")
    eq(st["idle"]["idle_timeout_seconds"], 30, "model option idle_timeout")
    eq(st["idle"]["release_timeout_seconds"], 60, "model option release_timeout")
    eq(st["Llasa-8B"]["idle_timeout_seconds"], 600, "default idle timeout")

    # --- /api/v1: load, show, run ---
    s, _, b = d.post("/api/v1/models/Llasa-8B/load")
    eq(s, 200, "load")
    eq(b["action"], "loaded", "first load loads")
    eq(b["bytes"], 64 << 20, "load bytes")
    check(b["seconds"] > 0 and b["gbps"] > 0, "load seconds and gbps", b)
    eq(b["location"], "GPU", "loaded model is on the GPU")
    s, _, b = d.post("/api/v1/models/Llasa-8B/load")
    eq(b["action"], "none", "second load does nothing")
    eq(b["bytes"], 0, "second load moves no bytes")

    s, _, one = d.get("/api/v1/models/Llasa-8B")
    eq(s, 200, "GET one model")
    eq(one["model_name"], "Llasa-8B", "one model's status")
    eq(one["location"], "GPU", "one model's location")

    s, _, lst = d.get("/api/v1/models")
    eq(s, 200, "GET /api/v1/models")
    eq([x["model_name"] for x in lst["models"]], ["Llasa-8B", "XCodec2", "idle"], "model list")

    s, _, r = d.post("/api/v1/models/XCodec2/run")
    eq(s, 200, "run")
    eq(r["checksum"], expected_checksum("16M", 7), "run checksum equals the synthetic bytes'")
    eq(r["steps"]["acquire"]["action"], "loaded", "run loads lazily")
    eq(r["steps"]["end_lease"]["offloaded"], True, "immediate offload at the end of run")
    s, _, r = d.post("/api/v1/models/XCodec2/run")
    eq((s, r["steps"]["acquire"]["action"]), (200, "restored"), "second run restores")
    eq(r["checksum"], expected_checksum("16M", 7), "checksum after a restore: every byte came back")
    eq(r["location"], "CPU", "run of an immediate_offload model leaves it on the CPU")
    for k in ("seconds", "bytes", "gbps", "total_seconds"):
        check(k in r, f"run answer has {k}", r)
    eq(r["bytes"], 2 * (16 << 20), "run moved the model in and out")
    eq(d.model("XCodec2")["location"], "CPU", "status agrees: CPU")
    s, _, r = d.post("/api/v1/models/XCodec2/run")
    eq(r["steps"]["acquire"]["action"], "restored", "second run restores")

    s, _, r = d.post("/api/v1/models/Llasa-8B/run")
    eq(r["steps"]["end_lease"]["offloaded"], False, "no immediate offload by default")
    eq(r["location"], "GPU", "stays on the GPU")
    eq(r["checksum"], expected_checksum("64M", 0), "Llasa checksum")

    # --- offload / release one ---
    s, _, b = d.post("/api/v1/models/Llasa-8B/offload")
    eq(s, 200, "offload one")
    eq(b["models"][0]["result"], "offloaded", "offload result")
    eq(b["bytes"], 64 << 20, "offload bytes")
    check(b["seconds"] > 0, "offload seconds", b)
    eq(d.model("Llasa-8B")["location"], "CPU", "offloaded to CPU")
    s, _, b = d.post("/api/v1/models/Llasa-8B/offload")
    eq(b["models"][0]["result"], "already on the CPU", "offload again")
    s, _, b = d.post("/api/v1/models/Llasa-8B/release")
    eq(s, 200, "release one")
    eq(b["models"][0]["result"], "released", "release result")
    eq(d.model("Llasa-8B")["location"], "未加载", "released")

    # --- seed POSTs with a model body ---
    d.post("/api/v1/models/Llasa-8B/load")
    s, _, b = d.post("/api/gpu/offload", {"model": "Llasa-8B"})
    eq(s, 200, "seed offload of one model")
    eq([x["model"] for x in b["models"]], ["Llasa-8B"], "only that model")
    eq(b["success"], True, "success field")
    s, _, b = d.post("/api/gpu/release", {"model": "XCodec2"})
    eq(s, 200, "seed release of one model")
    eq(d.model("XCodec2")["location"], "未加载", "XCodec2 released")
    eq(d.model("Llasa-8B")["location"], "CPU", "Llasa untouched by XCodec2's release")

    # --- seed POSTs for every model, with no body and with {} ---
    d.post("/api/v1/models/XCodec2/load")
    d.post("/api/v1/models/idle/load")
    s, _, b = d.request("POST", "/api/gpu/offload")
    eq(s, 200, "offload all (no body)")
    eq(sorted(x["model"] for x in b["models"]), ["Llasa-8B", "XCodec2", "idle"],
       "offload all lists every model")
    check(all(v["location"] in ("CPU", "未加载") for v in d.status().values()),
          "nothing on the GPU after offload all", d.status())
    s, _, b = d.post("/api/gpu/release", {})
    eq(s, 200, "release all ({})")
    check(all(v["location"] == "未加载" for v in d.status().values()),
          "nothing loaded after release all", d.status())

    # --- timeouts ---
    s, _, b = d.post("/api/gpu/timeout", {"timeout": 300})
    eq(s, 200, "seed timeout")
    eq(b["success"], True, "timeout success")
    check(all(v["idle_timeout_seconds"] == 300 for v in d.status().values()),
          "every model's idle timeout is 300", d.status())
    s, _, b = d.post("/api/gpu/timeout", {"timeout": 12.5, "model": "idle"})
    eq(s, 200, "timeout of one model")
    eq(d.model("idle")["idle_timeout_seconds"], 12.5, "one model's timeout")
    eq(d.model("Llasa-8B")["idle_timeout_seconds"], 300, "others unchanged")
    s, _, b = d.request("PATCH", "/api/v1/models/idle",
                        body={"idle_timeout": 40, "release_timeout": 90, "immediate_offload": True})
    eq(s, 200, "PATCH one model")
    st = d.model("idle")
    eq((st["idle_timeout_seconds"], st["release_timeout_seconds"], st["immediate_offload"]),
       (40, 90, True), "PATCH applied")
    eq(b["status"]["idle_timeout_seconds"], 40, "PATCH answers the new status")

    # --- devices, health, metrics, index ---
    s, _, b = d.get("/api/v1/devices")
    eq(s, 200, "devices")
    eq(len(b["devices"]), 1, "one emulated device")
    eq(b["devices"][0]["total_bytes"], 256 << 20, "device capacity = VRAM_HOST_MEMORY")
    s, _, b = d.get("/healthz")
    eq((s, b["status"], b["backend"], b["models"]), (200, "ok", "host", 3), "healthz")
    s, h, text = d.get("/metrics")
    eq(s, 200, "metrics")
    check(h.get("content-type", "").startswith("text/plain"), "metrics content type", h)
    for needle in ('vram_model_state{model="Llasa-8B",state="unloaded"} 1',
                   'vram_model_loads_total{model="Llasa-8B"} 2',
                   'vram_model_offloads_total{model="XCodec2"}',
                   'vram_model_restores_total{model="XCodec2"} 2\n',
                   'vram_model_evictions_total{model="idle"} 0',
                   'vram_model_device_bytes{model="Llasa-8B"} 0',
                   'vram_model_last_load_seconds{model="Llasa-8B"}',
                   'vram_device_total_bytes{device="0"',
                   'vram_http_requests_total{endpoint="/api/gpu/status",code="200"}',
                   'vram_http_requests_total{endpoint="/api/v1/models/{name}/run",code="200"} 4\n',
                   "vram_mcp_sessions 0"):
        check(needle in text, f"metrics has {needle}", "")
    # Prometheus text format: name, optional {label="value",...}, one space, a number
    metric_line = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
                             r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*\})? '
                             r'(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|[-+]Inf)')
    samples = 0
    for line in text.splitlines():
        if line and not line.startswith("#"):
            samples += 1
            check(metric_line.fullmatch(line) is not None, "metric line is 'name{labels} value'",
                  line)
    check(samples > 20, "metrics has samples", samples)
    s, _, b = d.get("/")
    eq(s, 200, "index")
    check(any(e["path"] == "/api/gpu/status" for e in b["endpoints"]), "index lists endpoints", b)
    s, h, _ = d.request("HEAD", "/api/gpu/status")
    eq(s, 200, "HEAD of status")

    # --- keep-alive: several requests on one connection ---
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    for i in range(5):
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        eq(r.status, 200, f"keep-alive request {i}")
        check((r.getheader("Connection") or "").lower() != "close", "connection kept alive",
              r.getheader("Connection"))
    c.close()

    # --- URL-encoded model names ---
    s, _, b = d.get("/api/v1/models/Llasa%2D8B")
    eq(s, 200, "percent-encoded model name")

    # --- a request log line per request at debug level ---
with Vramd("--log-level", "debug", models=["a=synthetic:4M"]) as d:
    d.get("/api/gpu/status")
    d.post("/api/gpu/offload")
    ok = d.wait_for(lambda: any("GET /api/gpu/status -> 200" in l for l in d.log) and
                    any("POST /api/gpu/offload -> 200" in l for l in d.log), timeout=5)
    check(ok, "debug log has one line per request", "\n".join(d.log[-5:]))
    check(any("INFO" in l and "listening on http://127.0.0.1:" in l and "backend host" in l
              for l in d.log), "startup line at info with URL and backend", d.log[:5])

finish()
