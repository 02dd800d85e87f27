# test_serve.py - gpu_manager.serve(): libvram-server in this process answers the
# seed's GET /api/gpu/status with this process's models.
import json
import urllib.error
import urllib.request

import pytest
import torch

import gpu_manager
from conftest import build_tiny, inputs, unique


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read().decode())


def post(url, body, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers=dict({"Content-Type": "application/json"},
                                              **(headers or {})))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        return e.code, None


def test_serve_status_and_offload(manager):
    mm = manager.register_model(unique("served"))
    model = mm.get_model(lambda: build_tiny(0))
    with torch.no_grad():
        model(inputs())
    srv = manager.serve(port=0, host="127.0.0.1", token="s3cret")
    try:
        assert srv.port > 0
        code, status = get(srv.url + "/api/gpu/status")
        assert code == 200
        s = status[mm.name]
        assert s["model_name"] == mm.name and s["location"] == "GPU"
        assert s["monitor_running"] is True and "GPU_0" in s["gpu_memory"]
        # state changes need the token
        code, _ = post(srv.url + "/api/gpu/offload", {"model": mm.name})
        assert code == 401
        code, _ = post(srv.url + "/api/gpu/offload", {"model": mm.name},
                       {"Authorization": "Bearer s3cret"})
        assert code == 200
        assert mm.location == "CPU"
        _, status = get(srv.url + "/api/gpu/status")
        assert status[mm.name]["location"] == "CPU"
        with torch.no_grad():
            model(inputs())  # the process's own call restores it
        assert mm.location == "GPU"
    finally:
        assert srv.stop() == 0
    with pytest.raises(OSError):
        get(srv.url + "/api/gpu/status")


def test_serve_global_manager_and_taken_port():
    g = gpu_manager.get_global_manager()
    name = unique("global-served")
    g.register_model(name)
    with gpu_manager.serve(port=0) as srv:
        _, status = get(srv.url + "/api/gpu/status")
        assert status[name]["location"] == "未加载"
        with pytest.raises(gpu_manager.VramError) as ei:
            gpu_manager.serve(port=srv.port)
        assert ei.value.name == "EIO" and str(srv.port) in str(ei.value)
