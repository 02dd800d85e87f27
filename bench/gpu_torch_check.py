#!/usr/bin/env python3
"""gpu_torch_check.py - the CUDA backend inside a real PyTorch 2.x process (part of scripts/gpu-check).

Checks, writing key=value lines to --out (and stdout):
  address stability: a module adopted into vram keeps every parameter's
    data_ptr() over several offload/restore cycles, half of the restores
    from another thread, and computes the same output each time;
  the offload race of issue 10 defect 1: kernels queued on a side stream
    (not the one the lease's end synchronizes) are still running when
    force_offload(wait=True) unmaps the weights; vram must wait for them
    (cuCtxSynchronize) - torch.cuda.synchronize() afterwards must not raise
    CUDA_ERROR_ILLEGAL_ADDRESS, and the backup must be intact.
Exit 0 passed, 1 failed, 77 skipped (no torch, no CUDA: the dry run says so).
Run with PYTHONPATH pointing at python/ and VRAM_LIBRARY at libvram.so.0.
"""
import argparse
import contextlib
import sys
import threading

out_lines = []


def say(key, value):
    line = "%s=%s" % (key, value)
    print(line, flush=True)
    out_lines.append(line)


def write(path):
    if path:
        with open(path, "w") as f:
            f.write("\n".join(out_lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--cycles", type=int, default=6)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--smoke-host", action="store_true",
                    help="the cycle check on the host backend and the CPU (no GPU): tests this script")
    a = ap.parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means skip
        say("torch_skipped", "no torch (%s)" % e)
        write(a.out)
        return 77
    if not torch.cuda.is_available() and not a.smoke_host:
        say("torch_skipped", "torch %s sees no CUDA device (needs a GPU; not run on the double)"
            % torch.__version__)
        write(a.out)
        return 77
    import gpu_manager
    say("torch_version", torch.__version__)
    dev = "cpu" if a.smoke_host else "cuda"
    mgr = gpu_manager.GPUManager(config={"VRAM_BACKEND": "host" if a.smoke_host else "cuda",
                                         "GPU_IDLE_TIMEOUT": "0"})
    failed = 0
    try:
        failed += check_cycles(torch, mgr, a.cycles, a.dim, dev)
        failed += check_offload_race(torch, mgr, a.dim, dev)
    except Exception as e:  # noqa: BLE001 - report, then fail
        say("torch_exception", repr(e))
        failed += 1
    finally:
        mgr.close()
    say("torch_ok", int(failed == 0))
    write(a.out)
    return 0 if failed == 0 else 1


def build(torch, dim, dev="cuda"):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.GELU(), torch.nn.Linear(dim, dim))
    return m.half().cuda() if dev == "cuda" else m


def check_cycles(torch, mgr, cycles, dim, dev):
    mm = mgr.register_model("torch-cycles")
    model = mm.get_model(load_func=lambda: build(torch, dim, dev))
    x = torch.randn(64, dim, device=dev, dtype=torch.float16 if dev == "cuda" else torch.float32)
    ptrs = [p.data_ptr() for p in model.parameters()]
    with torch.no_grad():
        ref = model(x).float().cpu()
    stable, same = 1, 1
    for i in range(cycles):
        mm.force_offload(wait=True)
        box = {}

        def restore():
            box["m"] = mm.get_model()
        if i % 2:
            t = threading.Thread(target=restore)
            t.start()
            t.join()
        else:
            restore()
        m = box["m"]
        stable &= int([p.data_ptr() for p in m.parameters()] == ptrs)
        with torch.no_grad():
            same &= int(torch.equal(m(x).float().cpu(), ref))
    say("torch_address_stable", stable)
    say("torch_output_same_after_cycles", same)
    mm.release(wait=True)
    mgr.unregister_model("torch-cycles")
    return int(not (stable and same))


def check_offload_race(torch, mgr, dim, dev):
    mm = mgr.register_model("torch-race")
    model = mm.get_model(load_func=lambda: build(torch, dim, dev))
    cuda = dev == "cuda"
    x = torch.randn(4096 if cuda else 16, dim, device=dev,
                    dtype=torch.float16 if cuda else torch.float32)
    before = mm.checksum()
    side = torch.cuda.Stream() if cuda else None
    with torch.no_grad():
        with mm.use() as m:
            if cuda:
                side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
                for _ in range(1000 if cuda else 3):  # about a second of queued kernels
                    y = m(x)
    # the lease has ended; the side stream still runs
    mm.force_offload(wait=True)
    err = ""
    try:
        if cuda:
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - the failure this check looks for
        err = repr(e)
    say("torch_race_sync_error", err or "none")
    ok = not err
    if ok:
        after = mm.checksum()
        say("torch_race_backup_intact", int(after == before))
        ok = after == before
        del y
    mm.release(wait=True)
    mgr.unregister_model("torch-race")
    return int(not ok)


if __name__ == "__main__":
    sys.exit(main())
