#!/usr/bin/python3
"""bench_http_transfer.py - offload and restore of a model through vramd's HTTP API, next to memcpy of the same bytes in the same run.

usage: bench/bench_http_transfer.py [--build DIR] [--size SIZE] [--rounds N]

Starts vramd (host backend) on a free port with one synthetic model of SIZE
(default 1G), loads it once, then times POST /api/v1/models/m/offload and
POST /api/v1/models/m/load (a restore) N times: the wall-clock time of each
request as a client sees it, and the transfer's own seconds from the answer.
The baseline is a memcpy of the same bytes into touched memory (ctypes.memmove),
measured in the same run. Prints medians and their ratios to memcpy
(target >= 0.8x each way).
"""
import argparse
import ctypes
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(here), "tests", "integration"))

ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(os.path.dirname(here), "build"))
ap.add_argument("--size", default="1G")
ap.add_argument("--rounds", type=int, default=5)
args = ap.parse_args()
os.environ.setdefault("VRAMD", os.path.join(args.build, "vramd"))
os.environ.setdefault("VRAMCTL", os.path.join(args.build, "vramctl"))

from vramtest import Vramd  # noqa: E402

units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
size = int(args.size[:-1]) * units[args.size[-1]] if args.size[-1] in units else int(args.size)


def memcpy_seconds():
    src = (ctypes.c_uint8 * size)()
    dst = (ctypes.c_uint8 * size)()
    ctypes.memset(src, 1, size)
    ctypes.memset(dst, 0, size)  # touched: the copy measures bandwidth, not page faults
    ts = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        ctypes.memmove(dst, src, size)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    t_memcpy = memcpy_seconds()
    host_memory = "%dM" % (size // (1 << 20) + 64)
    # no test poison: a benchmark measures what users run
    with Vramd(models=["m=synthetic:%s:1" % args.size], host_memory=host_memory,
               env={"VRAM_HOST_POISON": "0"}) as d:
        st, _, r = d.post("/api/v1/models/m/load")
        if st != 200:
            sys.exit("load failed: %s %s" % (st, r))
        wall = {"offload": [], "restore": []}
        own = {"offload": [], "restore": []}
        for _ in range(args.rounds):
            for what, path in (("offload", "/api/v1/models/m/offload"),
                               ("restore", "/api/v1/models/m/load")):
                t0 = time.perf_counter()
                st, _, r = d.post(path)
                wall[what].append(time.perf_counter() - t0)
                if st != 200:
                    sys.exit("%s failed: %s %s" % (what, st, r))
                own[what].append(r.get("seconds") or wall[what][-1])
    gb = size / 1e9
    print("size %.2f GB, %d rounds, medians (host backend, over HTTP)" % (gb, args.rounds))
    print("  %-34s %7.2f GB/s   1.00x" % ("memcpy into touched memory", gb / t_memcpy))
    for what in ("offload", "restore"):
        w = statistics.median(wall[what])
        o = statistics.median(own[what])
        print("  %-34s %7.2f GB/s   %.2fx   (transfer alone %.2f GB/s, %.2fx; target >= 0.80x)"
              % ("HTTP " + what + " (client wall clock)", gb / w, t_memcpy / w, gb / o,
                 t_memcpy / o))


if __name__ == "__main__":
    main()
