# test_node.py - a Python service (the package, real nn.Modules) and a C service share one emulated GPU through vramd: each frees memory for the other, least recently used first, and nothing is lost.
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import torch
import torch.nn as nn

import gpu_manager

VRAMD = os.environ.get("VRAMD")
MEMBER = os.environ.get("NODE_MEMBER")


class Node:
    def __init__(self):
        assert VRAMD and MEMBER, "CTest sets VRAMD and NODE_MEMBER"
        self.tmp = tempfile.mkdtemp(prefix="vram-pynode-")
        self.sock = os.path.join(self.tmp, "node.sock")
        self.share = "pynode-%d" % os.getpid()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VRAM_")}
        env.update(self.env("vramd"))
        self.vramd = subprocess.Popen([VRAMD, "--port", "0", "--node-socket", self.sock],
                                      stderr=subprocess.PIPE, text=True, env=env)
        self.log = []
        self.port = None
        got = threading.Event()

        def read():
            for line in self.vramd.stderr:
                self.log.append(line)
                m = re.search(r"listening on http://\S+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    got.set()
            got.set()
        threading.Thread(target=read, daemon=True).start()
        assert got.wait(30) and self.port, "".join(self.log)

    def env(self, name):
        return {"VRAM_NODE_SOCKET": self.sock, "VRAM_NODE_NAME": name,
                "VRAM_HOST_SHARED": self.share, "VRAM_HOST_MEMORY": "128M",
                "VRAM_BACKEND": "host", "VRAM_EVICT_WAIT": "1", "VRAM_LOG_LEVEL": "info"}

    def view(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/node" % self.port) as r:
            return json.load(r)

    def model(self, pid, name):
        for mb in self.view()["members"]:
            for mv in mb["models"] if mb["pid"] == pid else []:
                if mv["name"] == name:
                    return mv
        return None

    def wait(self, pred, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def close(self):
        self.vramd.terminate()
        self.vramd.wait(30)
        try:
            os.unlink("/dev/shm/vram-host-" + self.share)
        except OSError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_member(node):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VRAM_")}
    env.update(node.env("c-service"))
    p = subprocess.Popen([MEMBER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
    first = p.stdout.readline().split()
    assert first[:2] == ["ok", "ready"], first
    pid = int(first[2])

    def cmd(line):
        p.stdin.write(line + "\n")
        p.stdin.flush()
        return p.stdout.readline().strip()
    return p, pid, cmd


def build_mlp():
    torch.manual_seed(7)
    # about 48 MiB of float32 weights
    return nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 2048))


def test_python_and_c_services_share_one_gpu():
    node = Node()
    member = None
    try:
        g = gpu_manager.GPUManager(config=node.env("py-service"))
        tts = g.register_model("tts")
        module = tts.get_model(build_mlp)
        x = torch.randn(4, 2048)
        with torch.no_grad():
            want = module(x).clone()
        ptrs = [p.data_ptr() for p in module.parameters()]
        mypid = os.getpid()
        assert node.wait(lambda: (node.model(mypid, "tts") or {}).get("state") == "gpu"), \
            "the Python service's model appears in the node's view"

        # the C service needs 96M on the 128M device: its own models are
        # none, so vramd has the Python service offload its idle model
        member, cpid, cmd = start_member(node)
        assert cmd("register codec 96M") == "ok"
        assert cmd("acquire codec") == "ok", "the C service's acquire succeeds"
        assert tts.state == "cpu", "the Python service offloaded its idle model for it"
        assert any("node-evict model=tts owner=py-service" in l and "asker=c-service" in l
                   for l in node.log), "".join(node.log[-10:])

        # the Python service needs its model back while the C service holds
        # a lease: no eviction is possible, its acquire fails cleanly
        with pytest.raises(gpu_manager.errors.OutOfMemory):
            tts.get_model()
        assert tts.state == "cpu", "a failed restore leaves the model's bytes on the CPU"

        # the C service's lease ends: now the Python restore evicts the C model
        assert cmd("end codec") == "ok"
        assert node.wait(lambda: (node.model(cpid, "codec") or {}).get("leases") == 0)
        module = tts.get_model()
        assert tts.state == "gpu"
        assert cmd("state codec") == "ok cpu", "the C service offloaded its model for Python"
        assert [p.data_ptr() for p in module.parameters()] == ptrs, "addresses survive"
        with torch.no_grad():
            assert torch.equal(module(x), want), "outputs are bit-exact after the round trip"
    finally:
        if member:
            member.stdin.write("quit\n")
            member.stdin.flush()
            member.wait(30)
        try:
            g.close()
        except Exception:
            pass
        node.close()
