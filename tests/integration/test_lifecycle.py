# test_lifecycle.py - lazy load, idle timeout seen to offload, release timeout, immediate offload after run, checksums stable across many cycles.
import time

from vramtest import Vramd, check, eq, expected_checksum, finish

with Vramd(models=["idle=synthetic:16M:3,idle_timeout=1,release_timeout=2",
                   "imm=synthetic:12M:5,immediate_offload=1",
                   "cyc=synthetic:24M:11"], host_memory="256M") as d:
    eq(d.model("idle")["location"], "未加载", "lazy: nothing loaded at start")

    # idle timeout of 1 s: GPU -> CPU without any request, then release after 2 s more
    s, _, b = d.post("/api/v1/models/idle/load")
    eq((s, b["location"]), (200, "GPU"), "loaded onto the GPU")
    t0 = time.time()
    on_cpu = d.wait_for(lambda: d.model("idle")["location"] == "CPU", timeout=20)
    took = time.time() - t0
    check(on_cpu, "idle model offloaded by the monitor", d.model("idle"))
    # not before its timeout (no upper bound: a loaded machine may be slow)
    check(took >= 0.7, "offloaded no sooner than about 1 s after its last use", f"{took:.2f} s")
    eq(d.model("idle")["offloads"], 1, "one offload counted")
    released = d.wait_for(lambda: d.model("idle")["location"] == "未加载", timeout=20)
    check(released, "CPU copy released after release_timeout", d.model("idle"))

    # an idle timeout changed at run time applies
    d.post("/api/gpu/timeout", {"timeout": 1, "model": "cyc"})
    d.post("/api/v1/models/cyc/load")
    check(d.wait_for(lambda: d.model("cyc")["location"] == "CPU", timeout=20),
          "run-time idle timeout of 1 s offloads", d.model("cyc"))
    d.post("/api/gpu/timeout", {"timeout": 0, "model": "cyc"})
    d.post("/api/v1/models/cyc/load")
    # a witness with a 1 s timeout, loaded after cyc: once the monitor has
    # offloaded it, it has passed the time a 1 s timeout would have taken cyc
    d.post("/api/v1/models/idle/load")
    check(d.wait_for(lambda: d.model("idle")["location"] == "CPU", timeout=20),
          "the witness with a 1 s timeout is offloaded", d.model("idle"))
    eq(d.model("cyc")["location"], "GPU", "timeout 0 = never offload on idle (the monitor has "
       "run past the witness's deadline, and cyc was idle longer)")

    # immediate offload: the end of run offloads at once
    want_imm = expected_checksum("12M", 5)
    for i in range(3):
        s, _, r = d.post("/api/v1/models/imm/run")
        eq(s, 200, f"run {i}")
        eq(r["checksum"], want_imm, f"run {i} checksum")
        eq(r["steps"]["end_lease"]["offloaded"], True, f"run {i} offloaded at its end")
        eq(d.model("imm")["location"], "CPU", f"run {i}: on the CPU right after")
    eq(r["steps"]["acquire"]["action"], "restored", "later runs restore")

    # many offload/restore/release cycles: the bytes never change
    want = expected_checksum("24M", 11)
    seen = set()
    for i in range(24):
        s, _, r = d.post("/api/v1/models/cyc/run")
        eq(s, 200, f"cycle {i} run")
        seen.add(r["checksum"])
        step = i % 4
        if step == 0:
            d.post("/api/v1/models/cyc/offload")
        elif step == 1:
            d.post("/api/gpu/offload")
        elif step == 2:
            d.post("/api/v1/models/cyc/release")
        # step 3: stays on the GPU
    eq(seen, {want}, "one checksum across 24 cycles, equal to the synthetic bytes'")
    st = d.model("cyc")
    check(st["restores"] >= 10 and st["loads"] >= 6, "cycles really offloaded, restored and reloaded",
          {k: st[k] for k in ("loads", "offloads", "restores", "releases")})

    # offload/restore seconds and GB/s of the last transfers are reported
    check(st["last_restore_seconds"] > 0 and st["last_restore_gbps"] > 0, "restore timing", st)
    check(st["last_offload_seconds"] > 0 and st["last_offload_gbps"] > 0, "offload timing", st)

finish()
