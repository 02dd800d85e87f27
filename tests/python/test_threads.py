# test_threads.py - many threads on one model: one load shared, concurrent
# forwards against concurrent offloads, bit-exact results.
import threading

import torch

from conftest import build_tiny, inputs, reference, unique, used_bytes


def run_threads(n, target):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_get_model_loads_once(manager):
    mm = manager.register_model(unique("shared"))
    loads = []
    gate = threading.Barrier(8)

    def load():
        loads.append(threading.get_ident())
        return build_tiny(0)

    got = [None] * 8

    def worker(i):
        gate.wait()
        got[i] = mm.get_model(load_func=load, model_name=mm.name)

    run_threads(8, worker)
    assert len(loads) == 1
    assert all(g is got[0] for g in got)
    assert mm.get_status()["loads"] == 1


def test_concurrent_forward_and_offload(manager):
    mm = manager.register_model(unique("busy"))
    xs = [inputs(seed=s) for s in range(4)]
    want = [reference(0, x) for x in xs]
    stop = threading.Event()
    model = mm.get_model(lambda: build_tiny(0))
    torch.set_num_threads(1)

    def offloader():
        while not stop.is_set():
            mm.force_offload()  # deferred while calls run, at once between them

    off = threading.Thread(target=offloader)
    off.start()
    try:
        def worker(i):
            for k in range(30):
                m = mm.get_model(lambda: build_tiny(0))
                assert m is model
                with torch.no_grad():
                    out = m(xs[(i + k) % 4])
                assert torch.equal(out, want[(i + k) % 4])
        run_threads(4, worker)
    finally:
        stop.set()
        off.join()
        torch.set_num_threads(2)
    mm.force_offload(wait=True)
    assert mm.state == "cpu" and used_bytes(manager) == 0
    st = mm.get_status()
    assert st["loads"] == 1 and st["leases"] == 0 and st["offloads"] >= 1


def test_threads_on_two_models(manager):
    a = manager.register_model(unique("a"))
    b = manager.register_model(unique("b"))
    x = inputs()

    def worker(i):
        mm, seed = (a, 0) if i % 2 else (b, 5)
        for _ in range(10):
            with mm.use(load_func=lambda: build_tiny(seed)) as m:
                with torch.no_grad():
                    assert torch.equal(m(x), reference(seed, x))
            mm.force_offload()

    run_threads(6, worker)
    assert a.get_status()["loads"] == 1 and b.get_status()["loads"] == 1


def test_concurrent_get_model_with_a_failing_load(manager):
    import pytest
    import gpu_manager
    mm = manager.register_model(unique("failing"))
    gate = threading.Barrier(6)
    seen = []

    def load():
        raise ValueError("no such checkpoint")

    def worker(i):
        gate.wait()
        try:
            mm.get_model(load_func=load)
        except ValueError as e:  # the thread that ran load_func: its own exception
            seen.append(("own", str(e)))
        except gpu_manager.LoadError as e:  # threads that waited for that load
            assert "no such checkpoint" in str(e)
            seen.append(("waited", str(e)))

    run_threads(6, worker)
    assert len(seen) == 6 and ("own", "no such checkpoint") in seen
    assert mm.state == "unloaded" and used_bytes(manager) == 0
    with pytest.raises(ValueError):
        mm.get_model(load_func=load)
