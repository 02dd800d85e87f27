# conftest.py - shared models, a safetensors writer and manager fixtures of the gpu_manager tests.
import json
import math
import os
import struct
import threading
import time

import torch  # a missing torch fails the suite (it must not skip)
import torch.nn as nn
import torch.nn.functional as F

import pytest

import gpu_manager

torch.set_num_threads(2)

# Small emulated devices unless the environment says otherwise (CTest sets these).
os.environ.setdefault("VRAM_BACKEND", "host")
os.environ.setdefault("VRAM_HOST_MEMORY", "256M")
os.environ.setdefault("VRAM_LOG_LEVEL", "warn")


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.view(b, t, self.heads, -1).transpose(1, 2)
        k = k.view(b, t, self.heads, -1).transpose(1, 2)
        v = v.view(b, t, self.heads, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(~mask[:t, :t], float("-inf")).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Half16Linear(nn.Module):
    """Weights stored in float16 or bfloat16, computed in float32 (CPU torch
    1.13 has few half kernels)."""

    def __init__(self, d_in, d_out, dtype):
        super().__init__()
        self.weight = nn.Parameter((torch.randn(d_out, d_in) / math.sqrt(d_in)).to(dtype))
        self.bias = nn.Parameter(torch.zeros(d_out, dtype=dtype))

    def forward(self, x):
        return F.linear(x, self.weight.float(), self.bias.float())


class Block(nn.Module):
    def __init__(self, d, heads, dtype):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.up = Half16Linear(d, 4 * d, dtype)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        x = x + self.attn(self.ln1(x), mask)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class TinyLM(nn.Module):
    """A small transformer: token embedding tied to the output head, layer
    norms, float32 / float16 / bfloat16 parameters, a bool mask buffer, an
    int64 counter buffer and a non-persistent float buffer."""

    def __init__(self, vocab=61, d=32, heads=4, layers=2, seq=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
        self.blocks = nn.ModuleList(
            [Block(d, heads, torch.float16 if i % 2 == 0 else torch.bfloat16)
             for i in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("token_bias", torch.arange(vocab, dtype=torch.int32) % 3)
        self.register_buffer("temperature", torch.tensor(1.0), persistent=False)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.embed(ids) + self.pos[:t]
        for b in self.blocks:
            x = b(x, self.mask)
        logits = self.head(self.norm(x)) / self.temperature
        return logits + self.token_bias.float() * 1e-3

    def encode(self, ids):
        return self.norm(self.embed(ids))

    def decode(self, h):
        return self.head(h).argmax(-1)

    def generate(self, ids, steps=4):
        for _ in range(steps):
            nxt = self(ids)[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
        return ids


_rng_lock = threading.Lock()  # torch's default generator is process-wide


def build_tiny(seed=0, **kw):
    with _rng_lock:
        torch.manual_seed(seed)
        return TinyLM(**kw).eval()


def inputs(seed=1, batch=2, t=8, vocab=61):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, t), generator=g)


def reference(seed=0, x=None, **kw):
    m = build_tiny(seed, **kw)
    with torch.no_grad():
        return m(inputs() if x is None else x)


# ---- a tiny safetensors writer (8-byte little-endian header length, JSON, data) ----
_ST = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
       torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
       torch.bool: "BOOL", torch.float64: "F64"}


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = tensor_bytes(t.reshape(-1))
        header[name] = {"dtype": _ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return path


def unique_state(module):
    """state_dict without the second name of tied tensors (what
    safetensors' save_model writes)."""
    out, seen = {}, set()
    for k, v in module.state_dict().items():
        key = (v.data_ptr(), v.dtype, tuple(v.shape))
        if key in seen:
            continue
        seen.add(key)
        out[k] = v
    return out


def wait_for(pred, timeout=120.0, step=0.05):
    """Polls pred until it is true; a generous deadline, never an upper bound
    on how fast something must happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


_count = [0]


def unique(name):
    _count[0] += 1
    return "%s-%d-%d" % (name, os.getpid(), _count[0])


@pytest.fixture
def manager():
    """A private manager on a small emulated device."""
    m = gpu_manager.GPUManager(config={"VRAM_BACKEND": "host", "VRAM_HOST_MEMORY": "128M",
                                       "VRAM_EVICT_WAIT": "5"})
    yield m
    m.close()


def used_bytes(m):
    return sum(d["used_by_models_bytes"] for d in m.devices())
