"""Adoption of torch.nn.Module weights into vram memory (imported only when torch is used).

A module's parameters and buffers are laid out in one vram range (256-byte
aligned offsets), copied there, and each tensor is pointed at a zero-copy view
of its slice (``param.data = view``, ``module._buffers[name] = view``). From
then on libvram offloads and restores the bytes at the same addresses, so the
same module object, the same tensors and the same data_ptr() stay valid.
"""
import ctypes
import threading

import torch

from . import _lib
from .errors import InvalidArgument, WeightsMismatch

ALIGN = 256

TORCH_VERSION = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]
                      if x.isdigit())
HAS_ALWAYS_CALL = TORCH_VERSION >= (2, 1)  # register_forward_hook(always_call=True)

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool, "C64": torch.complex64,
}
for _st, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
                   ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):  # torch 2.1+ / 2.3+
        _ST_DTYPES[_st] = getattr(torch, _attr)
_DTYPE_ST = {v: k for k, v in _ST_DTYPES.items()}


def st_dtype(name):
    return _ST_DTYPES.get(name)


def dtype_name(dt):
    return _DTYPE_ST.get(dt, str(dt).replace("torch.", ""))


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


# ---- the tensors of a module ----

class Slot(object):
    """One distinct tensor (deduplicated by storage) and every place it is used."""
    __slots__ = ("tensor", "names", "refs", "dtype", "shape", "stride", "nbytes", "offset",
                 "persistent", "kind")

    def __init__(self, tensor, kind):
        self.tensor = tensor
        self.kind = kind  # "param" or "buffer"
        self.names = []
        self.refs = []  # (module, attribute name)
        self.dtype = tensor.dtype
        self.shape = tuple(tensor.shape)
        self.stride = tuple(tensor.stride())
        self.nbytes = extent_bytes(tensor)
        self.offset = 0
        self.persistent = True


def extent_bytes(t):
    """Bytes from the tensor's first element to its last (its strides kept)."""
    if t.numel() == 0:
        return 0
    if any(s < 0 for s in t.stride()):
        raise InvalidArgument("tensor with negative strides cannot be adopted")
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size()


def _key(t):
    if t.device.type == "meta" or t.data_ptr() == 0:
        return ("id", id(t))
    return (t.device.type, t.device.index, t.data_ptr(), extent_bytes(t), t.dtype,
            tuple(t.shape), tuple(t.stride()))


def collect(module):
    """The module's parameters and buffers as a list of Slots, in module order;
    tied tensors (the same storage under several names) are one Slot."""
    slots, by_key = [], {}
    for mname, mod in module.named_modules():
        prefix = mname + "." if mname else ""
        nonpersistent = getattr(mod, "_non_persistent_buffers_set", set())
        for kind, table in (("param", mod._parameters), ("buffer", mod._buffers)):
            for attr, t in table.items():
                if t is None:
                    continue
                k = _key(t)
                s = by_key.get(k)
                if s is None:
                    s = by_key[k] = Slot(t, kind)
                    s.persistent = not (kind == "buffer" and attr in nonpersistent)
                    slots.append(s)
                s.names.append(prefix + attr)
                s.refs.append((mod, kind, attr))
    return slots


def layout(slots):
    """Assigns 256-byte aligned offsets; returns the total size."""
    off = 0
    for s in slots:
        s.offset = off
        off += _align(s.nbytes)
    return max(off, ALIGN)


def signature(slots):
    return [(tuple(s.names), s.dtype, s.shape, s.stride) for s in slots]


# ---- views of vram memory ----

class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                            ("deleter", _DELETER)]

kDLCPU, kDLCUDA = 1, 2
_live = {}  # address of a DLManagedTensor -> what keeps it alive until torch's deleter runs
_live_lock = threading.Lock()


@_DELETER
def _dl_deleter(p):
    with _live_lock:
        _live.pop(ctypes.cast(p, ctypes.c_void_p).value, None)


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _dlpack_bytes(addr, nbytes, device_type, device_id):
    """A uint8 tensor over [addr, addr+nbytes) through a legacy DLPack capsule
    (torch 1.10+ accepts it; the versioned struct is refused by 1.13)."""
    shape = (ctypes.c_int64 * 1)(nbytes)
    strides = (ctypes.c_int64 * 1)(1)
    mt = DLManagedTensor()
    mt.dl_tensor.data = addr
    mt.dl_tensor.device = DLDevice(device_type, device_id)
    mt.dl_tensor.ndim = 1
    mt.dl_tensor.dtype = DLDataType(1, 8, 1)  # uint8
    mt.dl_tensor.shape = shape
    mt.dl_tensor.strides = strides
    mt.dl_tensor.byte_offset = 0
    mt.manager_ctx = None
    mt.deleter = _dl_deleter
    with _live_lock:
        _live[ctypes.addressof(mt)] = (mt, shape, strides)
    cap = _PyCapsule_New(ctypes.addressof(mt), b"dltensor", None)
    return torch.utils.dlpack.from_dlpack(cap)


def raw_view(addr, nbytes, device):
    """A uint8 tensor at a vram device address: on the host backend, where
    device memory is host memory, torch.frombuffer over a ctypes array; on
    CUDA, a kDLCUDA DLPack capsule."""
    if device.type == "cpu":
        arr = (ctypes.c_uint8 * nbytes).from_address(addr)
        return torch.frombuffer(arr, dtype=torch.uint8)
    return _dlpack_bytes(addr, nbytes, kDLCUDA, device.index or 0)


def typed_view(addr, nbytes, dtype, shape, stride, device):
    """A tensor of dtype/shape/stride over the nbytes at addr, sharing the memory."""
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    t = raw_view(addr, nbytes, device)
    if dtype != torch.uint8:
        t = t.view(dtype)
    contiguous = stride == tuple(torch.empty(shape, device="meta").stride())
    return t.view(shape) if contiguous else t.as_strided(shape, stride)


def _assign(slot, view):
    """Points every use of the slot at view, keeping Parameter objects."""
    done = {}
    for mod, kind, attr in slot.refs:
        if kind == "param":
            p = mod._parameters[attr]
            if id(p) in done:
                mod._parameters[attr] = done[id(p)]
                continue
            if p.device.type == "meta" and view.device.type != "meta":
                # torch 1.13 refuses .data = across meta and a real device: a
                # skeleton's meta Parameter is replaced (once, so ties stay)
                newp = torch.nn.Parameter(view, requires_grad=p.requires_grad)
                mod._parameters[attr] = newp
                done[id(p)] = newp
                done[id(newp)] = newp
            else:
                p.data = view
                done[id(p)] = p
        else:
            mod._buffers[attr] = view


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


# ---- adoption ----

def adopt(module, alloc, device, target=None):
    """Moves the weights of module into vram memory.

    alloc(total) -> device address (vram_model_alloc inside the load).
    target: an older module of the same structure to point at the new memory
    instead of module (a reload after release keeps the caller's object).
    Returns (module actually bound, base address, slots).
    """
    slots = collect(module)
    for s in slots:
        if s.tensor.device.type == "meta":
            raise InvalidArgument("tensor '%s' is on the meta device: load_func must return "
                                  "a module with weights (or pass weights=PATH)" % s.names[0])
    bind_to = slots
    if target is not None:
        tslots = collect(target)
        if signature(tslots) != signature(slots):
            target = None  # structure changed: the new module is the model now
        else:
            bind_to = tslots
    total = layout(slots)
    for s, t in zip(slots, bind_to):
        t.offset = s.offset

    on_cuda = any(s.tensor.device.type == "cuda" for s in slots)
    if on_cuda:
        # Stage through the host first so that the originals are freed before
        # vram maps the range: peak device memory stays near the model's size.
        staged = []
        for s in slots:
            staged.append(s.tensor.detach().to("cpu"))
            if s.tensor.device.type == "cuda":
                _assign(s, staged[-1])
                s.tensor = staged[-1]
        del staged
        torch.cuda.empty_cache()

    base = alloc(total)
    views = []
    for s in slots:
        v = typed_view(base + s.offset, s.nbytes, s.dtype, s.shape, s.stride, device)
        with torch.no_grad():
            v.copy_(s.tensor.detach())
        views.append(v)
    synchronize(device)
    for s, t, v in zip(slots, bind_to, views):
        _assign(t, v)
        if s is not t:
            s.tensor = None  # the new module's own copy goes with it
        t.tensor = v
    bound = target if target is not None else module
    if on_cuda or device.type == "cuda":
        torch.cuda.empty_cache()
    return bound, base, bind_to


def rebind(slots, base, device):
    """Points the slots at the same offsets from a new base address (a model
    loaded again from its source at another address)."""
    for s in slots:
        v = typed_view(base + s.offset, s.nbytes, s.dtype, s.shape, s.stride, device)
        _assign(s, v)
        s.tensor = v


def bind_checkpoint(module, tensors, base, device, model_name):
    """Binds a skeleton's parameters and persistent buffers by name to the
    tensors vram loaded from a safetensors source.

    tensors: {name: (dtype string, shape tuple, offset, bytes)}. Returns slots.
    """
    slots = collect(module)
    used = set()
    plan = []
    for s in slots:
        if not s.persistent:
            continue
        found = [n for n in s.names if n in tensors]
        if not found:
            raise WeightsMismatch("%s: tensor '%s' (%s %s) is missing from the checkpoint"
                                  % (model_name, s.names[0], dtype_name(s.dtype), list(s.shape)))
        for n in found:
            used.add(n)
        name = found[0]
        dt, shape, offset, nbytes = tensors[name]
        tdt = st_dtype(dt)
        if tuple(shape) != s.shape:
            raise WeightsMismatch("%s: tensor '%s' has shape %s in the checkpoint, %s in the "
                                  "module" % (model_name, name, list(shape), list(s.shape)))
        if tdt != s.dtype:
            raise WeightsMismatch("%s: tensor '%s' has dtype %s in the checkpoint, %s in the "
                                  "module" % (model_name, name, dt, dtype_name(s.dtype)))
        plan.append((s, offset, nbytes))
    extra = sorted(set(tensors) - used)
    if extra:
        raise WeightsMismatch("%s: tensor '%s' of the checkpoint is not in the module%s"
                              % (model_name, extra[0], " (and %d more)" % (len(extra) - 1)
                                 if len(extra) > 1 else ""))
    for s in slots:
        if not s.persistent and s.tensor.device.type == "meta":
            raise WeightsMismatch("%s: non-persistent buffer '%s' is on the meta device; build "
                                  "it on the CPU (it is not in checkpoints)"
                                  % (model_name, s.names[0]))
    bound = []
    for s, offset, nbytes in plan:
        s.offset = offset
        s.nbytes = nbytes
        s.stride = tuple(torch.empty(s.shape, device="meta").stride())
        v = typed_view(base + offset, nbytes, s.dtype, s.shape, s.stride, device)
        _assign(s, v)
        s.tensor = v
        bound.append(s)
    for s in slots:  # non-persistent buffers stay torch's, on the model's device
        if not s.persistent and s.tensor.device != device:
            v = s.tensor.to(device)
            _assign(s, v)
            s.tensor = v
    return bound
