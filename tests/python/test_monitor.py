# test_monitor.py - the idle monitor offloads an idle module (never one in a call),
# immediate offload, timeouts at run time.
import time

import torch
import torch.nn as nn

import gpu_manager
from conftest import build_tiny, inputs, reference, unique, used_bytes, wait_for


def test_idle_monitor_offloads_an_idle_module(manager):
    mm = manager.register_model(unique("idle"), idle_timeout=0.2)
    x = inputs()
    model = mm.get_model(lambda: build_tiny(0))
    with torch.no_grad():
        model(x)
    assert manager.get_all_status()["monitor_running"] is True
    assert wait_for(lambda: manager.get_all_status()[mm.name]["location"] == "CPU")
    assert used_bytes(manager) == 0
    with torch.no_grad():
        assert torch.equal(model(x), reference(0, x))  # called while offloaded: restored
    assert wait_for(lambda: mm.location == "CPU")
    st = mm.get_status()
    assert st["offloads"] >= 2 and st["restores"] >= 1


class Slow(nn.Module):
    def __init__(self, mm):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.mm = [mm]
        self.seen = []

    def forward(self, x):
        y = self.lin(x)
        time.sleep(0.6)  # several idle timeouts long
        self.seen.append((self.mm[0].state, self.mm[0].get_status()["leases"]))
        return self.lin(y)


def test_monitor_never_offloads_mid_call(manager):
    mm = manager.register_model(unique("slow"), idle_timeout=0.1)
    model = mm.get_model(lambda: Slow(mm))
    for _ in range(3):
        with torch.no_grad():
            model(torch.ones(1, 4))
    assert model.seen == [("gpu", 1)] * 3
    assert wait_for(lambda: mm.location == "CPU")


def test_update_all_timeout_reaches_a_resident_model(manager):
    mm = manager.register_model(unique("late"))
    model = mm.get_model(lambda: build_tiny(0))
    with torch.no_grad():
        model(inputs())
    assert mm.get_status()["idle_timeout_seconds"] == 600
    manager.update_all_timeout(new_timeout=0.2)
    assert mm.get_status()["idle_timeout_seconds"] == 0.2
    assert wait_for(lambda: mm.location == "CPU")


def test_immediate_offload(manager):
    mm = manager.register_model(unique("imm"), immediate_offload=True)
    model = mm.get_model(lambda: build_tiny(0))
    assert mm.location == "CPU"  # get_model's own lease ended
    with torch.no_grad():
        out = model(inputs())
    assert mm.location == "CPU" and used_bytes(manager) == 0
    assert torch.equal(out, reference(0))


def test_start_monitor_without_a_monitor_thread():
    # a manager whose monitor thread is off: start_monitor() ticks it from Python
    with gpu_manager.GPUManager(config={"VRAM_HOST_MEMORY": "64M"}) as m:
        assert m.start_monitor() is True
        assert m.get_all_status()["monitor_running"] is True
