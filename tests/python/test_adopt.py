# test_adopt.py - adoption of a module's weights into vram: same object, same
# addresses, bit-exact outputs over cycles, memory really freed, leases through
# hooks, load_func failures, errors.
import ctypes
import traceback

import pytest
import torch

import gpu_manager
from gpu_manager import _lib
from conftest import build_tiny, inputs, reference, unique, used_bytes, wait_for


def tensors_of(module):
    return [(n, t) for n, t in list(module.named_parameters()) + list(module.named_buffers())]


def test_adopt_cycles_bit_exact(manager):
    mm = manager.register_model(unique("tiny"))
    x = inputs()
    want = reference(seed=0, x=x)
    model = mm.get_model(load_func=lambda: build_tiny(0))
    info = mm.info()
    lo, hi = None, None
    ptrs = {n: t.data_ptr() for n, t in tensors_of(model)}
    dtypes = {n: t.dtype for n, t in tensors_of(model)}
    assert {torch.float32, torch.float16, torch.bfloat16, torch.bool, torch.int64,
            torch.int32} <= set(dtypes.values())
    # every persistent tensor lives in the one range the model allocated
    base = mm._base
    for n, t in tensors_of(model):
        if n == "temperature" or n.endswith("temperature"):
            continue
        assert base <= t.data_ptr() < base + info.bytes, n
        assert (t.data_ptr() - base) % 256 == 0, n
    assert model.head.weight is model.embed.weight
    assert info.bytes > 0 and used_bytes(manager) >= info.bytes

    for i in range(25):
        with torch.no_grad():
            got = model(x)
        assert torch.equal(got, want), "cycle %d" % i
        assert mm.force_offload() is True
        assert mm.location == "CPU"
        assert used_bytes(manager) == 0
        st = manager.get_all_status()[mm.name]
        assert st["gpu_memory"]["GPU_0"]["allocated_gb"] == 0
        again = mm.get_model(load_func=lambda: pytest.fail("loaded twice"))
        assert again is model
        assert {n: t.data_ptr() for n, t in tensors_of(model)} == ptrs
        assert {n: t.dtype for n, t in tensors_of(model)} == dtypes
        assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()
    st = mm.get_status()
    assert st["loads"] == 1 and st["offloads"] == 25 and st["restores"] == 25


def test_called_while_offloaded_restores(manager):
    mm = manager.register_model(unique("tiny"))
    x = inputs()
    want = reference(seed=0, x=x)
    model = mm.get_model(lambda: build_tiny(0))
    mm.force_offload()
    assert mm.state == "cpu"
    with torch.no_grad():
        assert torch.equal(model(x), want)  # the root call restores first
    assert mm.state == "gpu"
    assert mm.get_status()["leases"] == 0
    mm.force_offload()
    # a submodule called directly restores too
    h = torch.randn(2, 8, 32)
    with torch.no_grad():
        ln = model.norm(h)
    assert mm.state == "gpu"
    ref_norm = build_tiny(0).norm
    assert torch.equal(ln, ref_norm(h).detach())
    mm.force_offload()
    # methods other than forward go through the submodules they call
    with torch.no_grad():
        enc = model.encode(x)
    assert torch.equal(enc, build_tiny(0).encode(x).detach())


def test_use_holds_a_lease(manager):
    mm = manager.register_model(unique("tiny"))
    with mm.use(load_func=lambda: build_tiny(0)) as model:
        assert mm.get_status()["leases"] == 1
        w = model.embed.weight.sum().item()  # raw tensor use is safe inside use()
        assert mm.force_offload() is False  # deferred to the end of the lease
        assert mm.state == "gpu"
        with pytest.raises(gpu_manager.Busy):
            mm.force_offload(wait=True)  # would wait for itself
        with pytest.raises(gpu_manager.Busy):
            mm.force_offload(wait=False)
        with torch.no_grad():
            model(inputs())  # nested calls take no second lease
        assert mm.get_status()["leases"] == 1
        assert model.embed.weight.sum().item() == w
    assert mm.state == "cpu" and mm.get_status()["leases"] == 0


def test_forward_raising_ends_its_lease(manager):
    mm = manager.register_model(unique("tiny"))
    model = mm.get_model(lambda: build_tiny(0))
    bad = torch.full((1, 3), 1000, dtype=torch.long)
    for _ in range(3):
        with pytest.raises((IndexError, RuntimeError)):
            model(bad)
        assert mm.get_status()["leases"] == 0
    assert mm.force_offload(wait=True) is True
    assert mm.state == "cpu"


class Boom(Exception):
    pass


def test_load_func_raising(manager):
    mm = manager.register_model(unique("bad"))

    def load_broken():
        m = build_tiny(0)
        raise Boom("checkpoint is corrupt at byte 42")

    with pytest.raises(Boom) as ei:
        mm.get_model(load_func=load_broken)
    tb = "".join(traceback.format_tb(ei.value.__traceback__))
    assert "load_broken" in tb  # the original traceback reaches the caller
    st = mm.get_status()
    assert st["location"] == "未加载" and st["state"] == "unloaded"
    assert st["bytes"] == 0 and st["failures"] == 1
    assert "checkpoint is corrupt at byte 42" in st["last_error"]
    assert "Boom" in st["last_error"]
    assert used_bytes(manager) == 0
    # a later get_model with a working load_func loads
    x = inputs()
    model = mm.get_model(load_func=lambda: build_tiny(0))
    with torch.no_grad():
        assert torch.equal(model(x), reference(0, x))


def test_load_func_wrong_results(manager):
    mm = manager.register_model(unique("none"))
    with pytest.raises(gpu_manager.InvalidArgument):
        mm.get_model(load_func=lambda: None)
    with pytest.raises(gpu_manager.InvalidArgument):
        mm.get_model()  # no load_func for a first load
    meta = lambda: build_tiny(0).to("meta")  # noqa: E731
    with pytest.raises(gpu_manager.InvalidArgument, match="meta"):
        mm.get_model(load_func=meta)
    assert used_bytes(manager) == 0


def test_release_and_reload_keeps_the_module(manager):
    mm = manager.register_model(unique("tiny"))
    x = inputs()
    calls = []

    def load():
        calls.append(1)
        return build_tiny(0)

    model = mm.get_model(load)
    mm.release()
    assert mm.state == "unloaded" and used_bytes(manager) == 0
    with torch.no_grad():
        assert torch.equal(model(x), reference(0, x))  # the call loads again, into model
    assert len(calls) == 2
    assert mm.get_model() is model
    assert model.head.weight is model.embed.weight


def test_bytes_model_without_torch_objects(manager):
    mm = manager.register_model(unique("bytes"))
    data = bytes(range(256)) * 1000
    buf = mm.get_model(load_func=lambda: bytearray(data))
    assert isinstance(buf, gpu_manager.DeviceBuffer) and buf.nbytes == len(data)
    mm.force_offload()
    assert buf.read() == data
    assert mm.checksum() == _lib.lib.vram_checksum(data, len(data))


def test_errors_carry_code_name_and_detail():
    with gpu_manager.GPUManager(config={"VRAM_HOST_MEMORY": "4M", "VRAM_EVICT_WAIT": "0"}) as m:
        mm = m.register_model("big")
        with pytest.raises(gpu_manager.OutOfMemory) as ei:
            mm.get_model(load_func=lambda: bytes(16 << 20))
        e = ei.value
        assert isinstance(e, gpu_manager.VramError) and isinstance(e, MemoryError)
        assert e.code == -2 and e.name == "ENOMEM" and "big" in str(e)
        assert mm.state == "unloaded" and used_bytes(m) == 0
        with pytest.raises(gpu_manager.InvalidArgument) as ei:
            m.update_all_timeout(-1)
        assert ei.value.code == -1
        with pytest.raises(gpu_manager.NotFound):
            m.unregister_model("nope")
    with pytest.raises(gpu_manager.ConfigError, match="VRAM_HOST_MEMORY"):
        gpu_manager.GPUManager(config={"VRAM_HOST_MEMORY": "12X"})


def test_register_is_idempotent_and_status_dict(manager):
    a = manager.register_model("same")
    assert manager.register_model("same") is a
    st = manager.get_all_status()
    assert list(st) == ["same"]
    assert st["monitor_running"] is True and st.get("monitor_running") is True
    assert st["same"]["location"] == "未加载"
    import json
    assert "monitor_running" not in json.loads(json.dumps(st))
    with pytest.raises(KeyError):
        st["no such model"]


def test_module_of_a_closed_manager_raises():
    m = gpu_manager.GPUManager(config={"VRAM_HOST_MEMORY": "64M"})
    mm = m.register_model("short-lived")
    model = mm.get_model(lambda: build_tiny(0))
    m.close()
    with pytest.raises(gpu_manager.StaleModule):
        model(inputs())


def test_offload_refused_while_this_thread_captures_a_graph(manager, monkeypatch):
    # torch.cuda.graph captures on a non-blocking stream, which no driver
    # query shows: the Python layer asks torch and refuses, model kept
    mm = manager.register_model(unique("tiny"))
    x = inputs()
    want = reference(seed=0, x=x)
    model = mm.get_model(load_func=lambda: build_tiny(0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    for call in (mm.force_offload, mm.release):
        with pytest.raises(gpu_manager.Busy) as e:
            call()
        assert "while a CUDA graph is being captured in this thread" in str(e.value)
        assert mm.location == "GPU"
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert mm.force_offload() is True
    assert mm.location == "CPU"
    with torch.no_grad():
        assert torch.equal(mm.get_model(load_func=lambda: pytest.fail("loaded twice"))(x), want)
