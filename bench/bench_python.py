#!/usr/bin/python3
"""bench_python.py - gpu_manager on a torch module: adoption, offload and restore next to memcpy and to plain torch; hot get_model.

usage: PYTHONPATH=python /usr/bin/python3 bench/bench_python.py [--size-mib N] [--rounds N]

Host backend (no GPU): a 1 GiB float32 module; adoption (get_model's first
load), force_offload and the restoring get_model, each against memcpy of
the same bytes (ctypes.memmove into pre-faulted memory; target >= 0.8x) and
against the plain-torch equivalent (copy_ into preallocated tensors); hot
get_model on a resident model (median of many calls, target < 5 us).
CUDA (torch sees a GPU and libvram runs the cuda backend): the same module
against .to('cpu') / .to('cuda') + empty_cache, and against copy_ to and from
a pinned host copy. Prints one line per figure and the ratios of one run.
"""
import argparse
import ctypes
import gc
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), "python"))

ap = argparse.ArgumentParser()
ap.add_argument("--size-mib", type=int, default=1024)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--hot-iters", type=int, default=20000)
args = ap.parse_args()

import torch  # noqa: E402

cuda = torch.cuda.is_available() and os.environ.get("VRAM_BACKEND", "auto") in ("auto", "cuda")
os.environ.setdefault("VRAM_LOG_LEVEL", "warn")
if not cuda:
    os.environ["VRAM_BACKEND"] = "host"
    os.environ.setdefault("VRAM_HOST_MEMORY", "%dM" % (args.size_mib * 2 + 64))

import gpu_manager  # noqa: E402

MiB = 1 << 20
LAYER = 4096 * 4096 * 4  # one 64 MiB Linear weight
nlayers = max(1, args.size_mib * MiB // LAYER)
nbytes = nlayers * LAYER
torch.set_num_threads(os.cpu_count() or 1)


def build(device):
    m = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096, bias=False, device="meta")
                              for _ in range(nlayers)])
    m = m.to_empty(device=device)
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.fill_(float(i) * 0.5 + 1.0)
    return m


def best(fn, rounds=args.rounds, setup=None):
    ts = []
    for _ in range(rounds):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def gbps(sec):
    return nbytes / sec / 1e9


def line(what, sec, base=None, basename=None):
    s = "%-44s %8.3f s %7.2f GB/s" % (what, sec, gbps(sec))
    if base:
        s += "   %.2fx %s" % (base / sec, basename)
    print(s, flush=True)


def host_bench():
    print("== host backend: %d MiB module (%d x Linear(4096, 4096) float32), %d cores"
          % (nbytes // MiB, nlayers, os.cpu_count()))
    # memcpy of the same bytes into pre-faulted memory
    import numpy as np
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.zeros(nbytes, dtype=np.uint8)
    t_memcpy = best(lambda: ctypes.memmove(dst.ctypes.data, src.ctypes.data, nbytes))
    line("memcpy (ctypes.memmove)", t_memcpy)
    t_np = best(lambda: np.copyto(dst, src))
    line("numpy copyto", t_np)
    del dst
    gc.collect()
    # the same into memory never touched before (what a first load writes
    # into: on some VMs the first write to a page costs far more than the copy)
    fresh = {}

    def new_dst():
        fresh.pop("d", None)
        gc.collect()
        fresh["d"] = np.empty(nbytes, dtype=np.uint8)
    t_fresh = best(lambda: ctypes.memmove(fresh["d"].ctypes.data, src.ctypes.data, nbytes),
                   setup=new_dst)
    line("memcpy into fresh memory", t_fresh)
    del src, fresh
    gc.collect()

    # plain torch: copy_ into preallocated tensors (backup <- params, params <- backup)
    m = build("cpu")
    params = list(m.parameters())
    backup = [torch.empty_like(p) for p in params]
    for b in backup:
        b.zero_()

    def t_off():
        with torch.no_grad():
            for b, p in zip(backup, params):
                b.copy_(p)

    def t_on():
        with torch.no_grad():
            for b, p in zip(backup, params):
                p.copy_(b)
    t_torch_off = best(t_off)
    t_torch_on = best(t_on)
    line("plain torch offload (copy_ to preallocated)", t_torch_off)
    line("plain torch restore (copy_ from preallocated)", t_torch_on)
    del backup, params
    gc.collect()

    mgr = gpu_manager.GPUManager()
    mm = mgr.register_model("bench")
    # adoption: the first get_model, from the module built above
    t0 = time.perf_counter()
    model = mm.get_model(load_func=lambda: m)
    t_adopt = time.perf_counter() - t0
    del m
    gc.collect()
    line("adopt (first get_model)", t_adopt, t_memcpy, "of memcpy")
    print("%-44s %.2fx of memcpy into fresh memory" % ("", t_fresh / t_adopt))
    print("%-44s %.2fx of plain torch copy_" % ("", t_torch_off / t_adopt))

    ptr0 = next(model.parameters()).data_ptr()
    offs, ons = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        mm.force_offload()
        offs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mm.get_model()
        ons.append(time.perf_counter() - t0)
    t_off, t_on = min(offs), min(ons)
    line("force_offload", t_off, t_memcpy, "of memcpy")
    print("%-44s %.2fx of plain torch copy_" % ("", t_torch_off / t_off))
    line("get_model after offload (restore)", t_on, t_memcpy, "of memcpy")
    print("%-44s %.2fx of plain torch copy_" % ("", t_torch_on / t_on))
    assert next(model.parameters()).data_ptr() == ptr0

    hot(mm)
    st = mm.get_status()
    print("libvram's own figures: last offload %.2f GB/s, last restore %.2f GB/s"
          % (st["last_offload_gbps"], st["last_restore_gbps"]))
    print()
    print("ratios: adopt %.2fx of memcpy (%.2fx of memcpy into fresh memory), offload %.2fx, "
          "restore %.2fx of memcpy (target >= 0.8x); %.2fx / %.2fx of plain torch offload / "
          "restore" % (t_memcpy / t_adopt, t_fresh / t_adopt, t_memcpy / t_off, t_memcpy / t_on,
                       t_torch_off / t_off, t_torch_on / t_on))
    mgr.close()


def hot(mm):
    n = args.hot_iters
    for _ in range(1000):
        mm.get_model()
    samples = []
    batch = 100
    for _ in range(n // batch):
        t0 = time.perf_counter()
        for _ in range(batch):
            mm.get_model()
        samples.append((time.perf_counter() - t0) / batch)
    med = statistics.median(samples) * 1e6
    print("%-44s %8.2f us (median of %d batches of %d; target < 5 us)"
          % ("hot get_model (resident)", med, len(samples), batch))
    return med


def cuda_bench():
    dev = torch.device("cuda", 0)
    print("== cuda backend: %d MiB module on %s" % (nbytes // MiB, torch.cuda.get_device_name(0)))

    def sync():
        torch.cuda.synchronize(dev)

    # plain torch: .to('cpu') / .to('cuda') + empty_cache
    m = build(dev)
    sync()
    state = {"m": m}

    def to_cpu():
        state["m"] = state["m"].to("cpu")
        torch.cuda.empty_cache()

    def to_gpu():
        state["m"] = state["m"].to(dev)
        sync()
    t_tocpu = best(to_cpu, setup=lambda: (state.__setitem__("m", state["m"].to(dev)), sync()))
    t_togpu = best(to_gpu, setup=lambda: (state.__setitem__("m", state["m"].to("cpu")),
                                          torch.cuda.empty_cache()))
    line("torch .to('cpu') + empty_cache", t_tocpu)
    line("torch .to('cuda')", t_togpu)
    m = state["m"].to(dev)
    del state
    # pinned copy_ baseline
    params = list(m.parameters())
    pinned = [torch.empty(p.shape, dtype=p.dtype, pin_memory=True) for p in params]

    def p_off():
        with torch.no_grad():
            for b, p in zip(pinned, params):
                b.copy_(p, non_blocking=True)
        sync()

    def p_on():
        with torch.no_grad():
            for b, p in zip(pinned, params):
                p.copy_(b, non_blocking=True)
        sync()
    t_poff, t_pon = best(p_off), best(p_on)
    line("pinned copy_ device -> host", t_poff)
    line("pinned copy_ host -> device", t_pon)
    del pinned, params
    mgr = gpu_manager.GPUManager()
    mm = mgr.register_model("bench")
    free0 = torch.cuda.mem_get_info(dev)[0]
    t0 = time.perf_counter()
    model = mm.get_model(load_func=lambda: m)
    t_adopt = time.perf_counter() - t0
    del m
    line("adopt (first get_model, from cuda)", t_adopt)
    offs, ons = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        mm.force_offload()
        offs.append(time.perf_counter() - t0)
        freed = torch.cuda.mem_get_info(dev)[0]
        t0 = time.perf_counter()
        mm.get_model()
        ons.append(time.perf_counter() - t0)
    t_off, t_on = min(offs), min(ons)
    line("force_offload", t_off, t_tocpu, "of .to('cpu')")
    print("%-44s %.2fx of pinned copy_" % ("", t_poff / t_off))
    line("get_model after offload (restore)", t_on, t_togpu, "of .to('cuda')")
    print("%-44s %.2fx of pinned copy_" % ("", t_pon / t_on))
    print("device memory free after offload: %.2f GiB more than before adoption"
          % ((freed - free0) / float(1 << 30)))
    x = torch.ones(1, 4096, device=dev)
    with torch.no_grad():
        model(x)
    hot(mm)
    print()
    print("ratios: offload %.2fx of .to('cpu'), %.2fx of pinned; restore %.2fx of .to('cuda'), "
          "%.2fx of pinned" % (t_tocpu / t_off, t_poff / t_off, t_togpu / t_on, t_pon / t_on))
    mgr.close()


if __name__ == "__main__":
    t0 = time.time()
    if cuda and gpu_manager.GPUManager().backend == "cuda":
        cuda_bench()
    else:
        host_bench()
    print("(%.0f s)" % (time.time() - t0))
