"""The seed's Python API over libvram: GPUManager, ModelManager, get_global_manager, serve."""
import contextlib
import ctypes
import os
import sys
import threading

from . import _lib
from ._lib import lib
from .errors import (Busy, InvalidArgument, InvalidState, LoadError, NotSupported, StaleModule,
                     VramError, WeightsMismatch)

__all__ = ["GPUManager", "ModelManager", "StatusDict", "Server", "DeviceBuffer",
           "get_global_manager", "serve"]

_ELOAD = -15

# ---- the load callback: one trampoline for every model, keyed by load_user ----
_registry = {}
_registry_lock = threading.Lock()
_next_key = [1]


def _load_trampoline(model_ptr, user):
    mm = _registry.get(user or 0)
    if mm is None:
        return _lib.set_error(_ELOAD, "no Python model behind this load callback")
    try:
        mm._run_load(model_ptr)
        return 0
    except BaseException as e:  # noqa: B902 - every exception must stay in Python
        mm._record_load_exc(e)
        return _lib.set_error(_ELOAD, "%s: load_func raised %s: %s"
                              % (mm.name, type(e).__name__, e))


_LOAD_CB = _lib.LOAD_FN(_load_trampoline)


def _graph_capture_here():
    """True while this thread captures a CUDA graph (torch.cuda.graph). The
    driver API cannot see a capture on a non-blocking stream - PyTorch's -
    and the wait before a backup or an unmap would invalidate it, so the
    Python layer asks torch before it offloads or releases."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
    except Exception:  # a torch without CUDA or without the query: no capture
        return False


def _refuse_in_capture(what, name):
    if _graph_capture_here():
        raise Busy("%s('%s'): cannot offload model memory while a CUDA graph is being captured "
                   "in this thread; offload after capture ends (the model stays on the GPU)"
                   % (what, name))


def _torch_module_type():
    torch = sys.modules.get("torch")
    return torch.nn.Module if torch is not None else None


class DeviceBuffer(object):
    """The model of a load_func that returned plain bytes (anything with the
    buffer protocol: bytes, bytearray, memoryview, a numpy array): its device
    address and size; read() copies it back. For code without torch."""

    def __init__(self, manager, ptr, nbytes):
        self._manager = manager
        self.ptr = ptr
        self.nbytes = nbytes

    def read(self):
        out = (ctypes.c_uint8 * self.nbytes)()
        with self._manager.use():
            _lib.check(lib.vram_model_download(self._manager._ptr, out, self.ptr, self.nbytes),
                       self._manager.name)
        return bytes(out)

    def __repr__(self):
        return "<DeviceBuffer %s: %d bytes at 0x%x>" % (self._manager.name, self.nbytes, self.ptr)


class ModelManager(object):
    """One registered model (the seed's per-model manager): get_model,
    force_offload, release, use, timeouts and status."""

    def __init__(self, owner, name, weights=None, idle_timeout=None, release_timeout=None,
                 immediate_offload=False, device=None):
        self._owner = owner
        self.name = name
        self._lock = threading.RLock()  # module bookkeeping
        self._tls = threading.local()   # per thread: stack of calls into the module, its lease
        self._load_func = None
        self._load_exc = None           # (thread ident, exception) of the last failed load_func
        self._module = None             # the model object handed out by get_model
        self._slots = None              # its tensors in the range (torch)
        self._base = None               # device address of the range
        self._gen = 0                   # bumps when another module object becomes the model
        self._hooks = []
        self._device_index = 0 if device is None or device < 0 else int(device)
        self._weights = None
        self._opts = dict(idle_timeout=idle_timeout, release_timeout=release_timeout,
                          immediate_offload=immediate_offload, device=device)
        with _registry_lock:
            self._key = _next_key[0]
            _next_key[0] += 1
            _registry[self._key] = self
        self._ptr = None
        self._register(weights)

    # ---- registration ----
    def _register(self, weights):
        o = _lib.ModelOpts()
        lib.vram_model_opts_init(ctypes.byref(o))
        src = None
        if weights is not None:
            src = os.fspath(weights).encode()
            o.source = src
        else:
            o.load = _LOAD_CB
            o.load_user = self._key
        opts = self._opts
        if opts["idle_timeout"] is not None:
            o.idle_timeout = float(opts["idle_timeout"])
        if opts["release_timeout"] is not None:
            o.release_timeout = float(opts["release_timeout"])
        o.immediate_offload = 1 if opts["immediate_offload"] else 0
        if opts["device"] is not None:
            o.device = int(opts["device"])
        p = ctypes.c_void_p()
        _lib.check(lib.vram_manager_register(self._owner._m, self.name.encode(), ctypes.byref(o),
                                             ctypes.byref(p)), "register_model('%s')" % self.name)
        self._ptr = p.value
        self._weights = os.fspath(weights) if weights is not None else None

    def _use_weights(self, weights):
        """get_model(weights=PATH) on a model registered without: registers
        it again with that source, while nothing is loaded."""
        path = os.fspath(weights)
        if self._weights == path:
            return
        with self._lock:
            if self._weights == path:
                return
            if self._module is not None or self.state != "unloaded":
                raise InvalidState("%s: already loaded%s; weights=%r can only be given before "
                                   "the first load (or after release())"
                                   % (self.name, " from %r" % self._weights if self._weights
                                      else "", path))
            _lib.check(lib.vram_manager_unregister(self._owner._m, self.name.encode()),
                       self.name)
            self._ptr = None
            self._register(path)

    # ---- the load, in the C callback (GIL re-taken by ctypes) ----
    def _record_load_exc(self, e):
        self._load_exc = (threading.get_ident(), e)

    def _run_load(self, model_ptr):
        self._load_exc = None
        load_func = self._load_func
        if load_func is None:
            raise InvalidArgument("%s: the first get_model() needs load_func" % self.name)
        obj = load_func()
        if obj is None:
            raise InvalidArgument("%s: load_func returned None" % self.name)
        Module = _torch_module_type()
        if Module is not None and isinstance(obj, Module):
            self._adopt(model_ptr, obj)
            return
        try:
            mv = memoryview(obj).cast("B")
        except TypeError:
            raise InvalidArgument("%s: load_func returned %s: return a torch.nn.Module or "
                                  "bytes-like data" % (self.name, type(obj).__name__))
        n = mv.nbytes
        p = ctypes.c_void_p()
        _lib.check(lib.vram_model_alloc(model_ptr, max(n, 1), ctypes.byref(p)), self.name)
        src = (ctypes.c_uint8 * n).from_buffer_copy(mv) if mv.readonly else \
            (ctypes.c_uint8 * n).from_buffer(mv)
        _lib.check(lib.vram_model_upload(model_ptr, p, src, n), self.name)
        with self._lock:
            self._module = DeviceBuffer(self, p.value, n)
            self._base = p.value

    def _torch_device(self):
        import torch
        if self._owner.backend == "cuda":
            return torch.device("cuda", self._device_index)
        return torch.device("cpu")

    def _adopt(self, model_ptr, module):
        from . import _torch
        if module is self._module:
            raise InvalidState("%s: load_func returned the module vram already holds, whose "
                               "weights were released; build a new module in load_func"
                               % self.name)

        def alloc(total):
            p = ctypes.c_void_p()
            _lib.check(lib.vram_model_alloc(model_ptr, total, ctypes.byref(p)), self.name)
            return p.value

        with self._lock:
            old = self._module if _torch_module_type() is not None and \
                isinstance(self._module, _torch_module_type()) else None
        bound, base, slots = _torch.adopt(module, alloc, self._torch_device(), target=old)
        with self._lock:
            if bound is not self._module:
                self._set_module(bound)
            self._base, self._slots = base, slots

    def _set_module(self, module):
        """Makes module the model; installs the lease hooks on every submodule.
        Lock held."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._gen += 1
        self._module = module
        from . import _torch
        gen = self._gen
        pre = lambda mod, args: self._pre_hook(gen, mod)  # noqa: E731
        post = lambda mod, args, out: self._post_hook(mod)  # noqa: E731
        for mod in module.modules():
            self._hooks.append(mod.register_forward_pre_hook(pre))
            if _torch.HAS_ALWAYS_CALL:
                self._hooks.append(mod.register_forward_hook(post, always_call=True))
            else:
                self._hooks.append(mod.register_forward_hook(post))
                self._wrap_forward(mod)

    def _wrap_forward(self, mod):
        """torch < 2.1 runs no forward hook when forward raises: an instance
        forward unwinds this call's lease on the way out."""
        if getattr(mod.forward, "_vram_wrapped", None) is self:
            return
        orig = mod.forward
        tls = self._tls

        def forward(*args, **kwargs):
            try:
                return orig(*args, **kwargs)
            except BaseException:
                st = getattr(tls, "stack", None)
                if st and st[-1] is mod:
                    self._pop(st)
                raise
        forward._vram_wrapped = self
        forward.__wrapped__ = orig
        mod.forward = forward

    # ---- leases ----
    def _acquire(self):
        ptr = self._ptr
        if ptr is None:
            raise StaleModule("%s: the model was unregistered or its manager closed"
                              % self.name)
        lease = ctypes.c_void_p()
        rc = lib.vram_model_acquire(ptr, ctypes.byref(lease))
        if rc < 0:
            err = _lib.make_error(rc, self.name)
            rec = self._load_exc
            if rc == _ELOAD and rec is not None:
                ident, exc = rec
                if ident == threading.get_ident():
                    self._load_exc = None
                    raise exc  # load_func's own exception, with its traceback
                # a thread that waited for another thread's failed load
                raise LoadError(str(err.message)) from exc
            raise err
        try:
            self._after_acquire(lease.value)
        except BaseException:
            lib.vram_lease_end(lease.value)
            raise
        return lease.value

    def _after_acquire(self, lease):
        """Source-loaded models: binds the skeleton on the first load, and
        rebinds when a reload put the range at another address."""
        if self._weights is None:
            return
        ptr = lib.vram_lease_ptr(lease)
        if self._module is not None and ptr == self._base:
            return
        with self._lock:
            if self._module is None:
                self._bind_source(lease, ptr)
            elif ptr != self._base:
                from . import _torch
                _torch.rebind(self._slots, ptr, self._torch_device())
                self._base = ptr

    def _bind_source(self, lease, ptr):
        from . import _torch
        load_func = self._load_func
        if load_func is None:
            raise InvalidArgument("%s: get_model(weights=...) needs load_func to build the "
                                  "module skeleton" % self.name)
        skeleton = load_func()
        Module = _torch_module_type()
        if Module is None or not isinstance(skeleton, Module):
            raise InvalidArgument("%s: with weights=, load_func must return a torch.nn.Module "
                                  "skeleton (on 'meta' or the CPU)" % self.name)
        tensors = {}
        ti = _lib.TensorInfo()
        for i in range(lib.vram_model_tensor_count(self._ptr)):
            _lib.check(lib.vram_model_tensor(self._ptr, i, ctypes.byref(ti)), self.name)
            tensors[_lib.text(ti.name)] = (_lib.text(ti.dtype), tuple(ti.shape[:ti.ndim]),
                                           ti.offset, ti.bytes)
        try:
            slots = _torch.bind_checkpoint(skeleton, tensors, ptr, self._torch_device(),
                                           self.name)
        except WeightsMismatch:
            # frees the loaded bytes once the leases of this attempt end
            lib.vram_model_release(self._ptr, _lib.DEFER)
            raise
        self._slots = slots
        self._base = ptr
        self._set_module(skeleton)

    def _end(self, lease, sync=True):
        if sync and self._slots is not None and self._owner.backend == "cuda":
            import torch
            torch.cuda.current_stream(self._torch_device()).synchronize()
        lib.vram_lease_end(lease)

    def _pre_hook(self, gen, mod):
        tls = self._tls
        try:
            st = tls.stack
        except AttributeError:
            st = tls.stack = []
        if not st:
            if gen != self._gen:
                raise StaleModule("%s: this module was replaced by a newer one after a release "
                                  "and reload; call get_model() again" % self.name)
            tls.lease = self._acquire()
        st.append(mod)

    def _post_hook(self, mod):
        st = getattr(self._tls, "stack", None)
        if st and st[-1] is mod:
            self._pop(st)

    def _pop(self, st):
        st.pop()
        if not st:
            lease, self._tls.lease = self._tls.lease, None
            self._end(lease)

    def _in_use_here(self):
        return bool(getattr(self._tls, "stack", None))

    # ---- the seed's API ----
    def get_model(self, load_func=None, model_name=None, weights=None):
        """Step 1 of the seed's flow: loads on first use (load_func()),
        restores after an offload, returns the resident model at once.

        load_func() returns a torch.nn.Module (its weights are adopted into
        vram) or bytes-like data. With weights=PATH (a .safetensors file, a
        model.safetensors.index.json or a directory of shards) vram streams
        the weights itself and load_func() only builds the module skeleton
        (on 'meta' or the CPU), whose tensors are bound by name.
        model_name is accepted for the seed's signature; the registered name
        is the model's.
        """
        if weights is not None:
            self._use_weights(weights)
        if load_func is not None:
            self._load_func = load_func
        lease = self._acquire()
        module = self._module
        self._end(lease, sync=False)
        return module

    @contextlib.contextmanager
    def use(self, load_func=None, weights=None):
        """with manager.use() as model: holds a lease for the block, so that
        nothing offloads the model under code that touches its tensors
        outside module calls."""
        if weights is not None:
            self._use_weights(weights)
        if load_func is not None:
            self._load_func = load_func
        tls = self._tls
        try:
            st = tls.stack
        except AttributeError:
            st = tls.stack = []
        marker = object()
        if not st:
            tls.lease = self._acquire()
        st.append(marker)
        try:
            yield self._module
        finally:
            if st and st[-1] is marker:
                self._pop(st)

    def _flags(self, wait):
        if wait is None:
            return _lib.DEFER
        if wait:
            if self._in_use_here():
                raise Busy("%s: this thread holds a lease (inside a call or use()); "
                           "force_offload(wait=True) would wait for itself" % self.name)
            return _lib.WAIT
        return _lib.NOWAIT

    def force_offload(self, wait=None):
        """Step 3: copies the model to host memory and frees its device
        memory, keeping its addresses. wait=None (default): at once when no
        call is running, else when the last one ends (never blocks);
        True: blocks until running calls end; False: raises Busy if in use.
        Returns True when done now, False when deferred."""
        _refuse_in_capture("force_offload", self.name)
        rc = _lib.check(lib.vram_model_offload(self._ptr, self._flags(wait)),
                        "force_offload('%s')" % self.name)
        return rc != _lib.DEFERRED

    offload = force_offload

    def release(self, wait=None):
        """Frees device memory and host copy; the next get_model loads again
        (into the same module object when its structure is unchanged)."""
        _refuse_in_capture("release", self.name)
        rc = _lib.check(lib.vram_model_release(self._ptr, self._flags(wait)),
                        "release('%s')" % self.name)
        return rc != _lib.DEFERRED

    def update_timeout(self, new_timeout):
        _lib.check(lib.vram_model_set_idle_timeout(self._ptr, float(new_timeout)), self.name)

    set_idle_timeout = update_timeout

    def set_release_timeout(self, seconds):
        _lib.check(lib.vram_model_set_release_timeout(self._ptr, float(seconds)), self.name)

    def set_immediate_offload(self, on=True):
        _lib.check(lib.vram_model_set_immediate_offload(self._ptr, 1 if on else 0), self.name)

    def start_monitor(self):
        """The seed's troubleshooting call: makes sure the idle monitor runs
        (libvram's thread runs from the start; this is then a no-op)."""
        return self._owner.start_monitor()

    def is_monitor_running(self):
        return self._owner.monitor_running

    @property
    def state(self):
        return _lib.text(lib.vram_state_name(lib.vram_model_state(self._ptr)))

    @property
    def location(self):
        return _lib.text(lib.vram_state_location(lib.vram_model_state(self._ptr)))

    def is_on_gpu(self):
        return self.state == "gpu"

    @property
    def model(self):
        """The model object (None before the first load); using it restores."""
        return self._module

    def info(self):
        mi = _lib.ModelInfo()
        _lib.check(lib.vram_model_get_info(self._ptr, ctypes.byref(mi), ctypes.sizeof(mi)),
                   self.name)
        return mi

    def get_status(self):
        """This model's entry of get_all_status()."""
        return self._owner._status_entry(self.info(), self._owner._devices_raw(),
                                         self._owner._info_raw())

    status = get_status

    def checksum(self):
        out = ctypes.c_uint64()
        _lib.check(lib.vram_model_checksum(self._ptr, ctypes.byref(out)), self.name)
        return out.value

    def __repr__(self):
        return "<ModelManager %s: %s>" % (self.name, self.state)


class StatusDict(dict):
    """get_all_status(): a dict keyed by model name (what GET /api/gpu/status
    returns). status['monitor_running'] also works, as the seed's
    troubleshooting line reads it: keys that are not a model's fall back to
    the manager-wide values in .manager (monitor_running, backend, devices,
    gpu_memory, ...), which iteration, len() and json.dumps() never show."""

    def __init__(self, models, manager_fields):
        super().__init__(models)
        self.manager = manager_fields

    def __missing__(self, key):
        if key in self.manager:
            return self.manager[key]
        raise KeyError(key)

    def get(self, key, default=None):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return self.manager.get(key, default)


class Server(object):
    """An embedded server (libvram-server) of a manager: .port, .url, .stop()."""

    def __init__(self, manager, handle, slib, host, keep):
        self._manager = manager
        self._h = handle
        self._slib = slib
        self._keep = keep
        self.host = host
        self.port = slib.vram_server_port(handle)

    @property
    def url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d" % (host, self.port)

    def stop(self, grace=5.0):
        """Stops serving; returns the number of requests still running after
        grace seconds (0 normally)."""
        h, self._h = self._h, None
        if not h:
            return 0
        with self._manager._lock:
            if self in self._manager._servers:
                self._manager._servers.remove(self)
        return self._slib.vram_server_stop(h, float(grace))

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<Server %s%s>" % (self.url, "" if self._h else " (stopped)")


class GPUManager(object):
    """A libvram manager (the seed's global GPU manager): models by name in
    .managers, timeouts, status, the idle monitor, an embedded server."""

    def __init__(self, idle_timeout=None, config=None, env_file=None, _handle=None):
        self._lock = threading.RLock()
        self.managers = {}
        self._servers = []
        self._ticker = None
        self._ticker_stop = threading.Event()
        if _handle is not None:
            self._m, self._owned = _handle, False
        else:
            cfg = ctypes.create_string_buffer(_lib.CONFIG_BYTES)
            err = ctypes.create_string_buffer(512)
            lib.vram_config_init(cfg)
            rc = lib.vram_config_load(cfg, os.fsencode(env_file) if env_file else None, err,
                                      len(err))
            if rc < 0:
                raise _lib.error_for(rc, _lib.text(err.value), "ECONFIG")
            items = dict(config or {})
            if idle_timeout is not None:
                items["GPU_IDLE_TIMEOUT"] = idle_timeout
            for k, v in items.items():
                if isinstance(v, bool):
                    v = int(v)
                rc = lib.vram_config_set(cfg, str(k).encode(), str(v).encode(), err, len(err))
                if rc < 0:
                    raise _lib.error_for(rc, _lib.text(err.value), "ECONFIG")
            m = ctypes.c_void_p()
            _lib.check(lib.vram_manager_create(cfg, ctypes.byref(m)), "manager")
            self._m, self._owned = m.value, True
        self.backend = _lib.text(lib.vram_manager_backend(self._m))

    # ---- models ----
    def register_model(self, model_name, weights=None, idle_timeout=None, release_timeout=None,
                       immediate_offload=False, device=None):
        """Registers a model (nothing is loaded) and returns its ModelManager;
        the one already registered under that name when there is one.
        weights=PATH: the model's weights come from a safetensors file, index
        or directory, loaded by vram (see ModelManager.get_model)."""
        with self._lock:
            mm = self.managers.get(model_name)
            if mm is None:
                mm = ModelManager(self, model_name, weights=weights, idle_timeout=idle_timeout,
                                  release_timeout=release_timeout,
                                  immediate_offload=immediate_offload, device=device)
                self.managers[model_name] = mm
            elif weights is not None:
                mm._use_weights(weights)
            return mm

    def __getitem__(self, name):
        return self.managers[name]

    def unregister_model(self, model_name):
        with self._lock:
            mm = self.managers.get(model_name)
            if mm is None:
                raise _lib.error_for(-5, "no such model: %s" % model_name, "ENOENT")
            _lib.check(lib.vram_manager_unregister(self._m, model_name.encode()), model_name)
            del self.managers[model_name]
            with _registry_lock:
                _registry.pop(mm._key, None)
            mm._ptr = None

    def update_all_timeout(self, new_timeout):
        """Sets every model's idle timeout (seconds; 0 = never)."""
        _lib.check(lib.vram_manager_set_idle_timeout(self._m, float(new_timeout)),
                   "update_all_timeout")

    def update_all_release_timeout(self, seconds):
        _lib.check(lib.vram_manager_set_release_timeout(self._m, float(seconds)),
                   "update_all_release_timeout")

    def offload_all(self, wait=None):
        flags = _lib.DEFER if wait is None else (_lib.WAIT if wait else _lib.NOWAIT)
        _lib.check(lib.vram_manager_offload_all(self._m, flags), "offload_all")

    def release_all(self, wait=None):
        flags = _lib.DEFER if wait is None else (_lib.WAIT if wait else _lib.NOWAIT)
        _lib.check(lib.vram_manager_release_all(self._m, flags), "release_all")

    # ---- monitor ----
    @property
    def monitor_running(self):
        return bool(lib.vram_manager_monitor_running(self._m)) or self._ticker is not None

    def start_monitor(self):
        """Makes sure idle models are offloaded: libvram's monitor thread runs
        from the start; for a manager made without it (VRAM config
        no_monitor_thread) a Python thread ticks it. Returns True."""
        if lib.vram_manager_monitor_running(self._m):
            return True
        with self._lock:
            if self._ticker is None:
                def tick():
                    while not self._ticker_stop.wait(0.25):
                        lib.vram_manager_tick(self._m)
                self._ticker = threading.Thread(target=tick, name="vram-monitor", daemon=True)
                self._ticker.start()
        return True

    # ---- status ----
    def _info_raw(self):
        mi = _lib.ManagerInfo()
        _lib.check(lib.vram_manager_get_info(self._m, ctypes.byref(mi), ctypes.sizeof(mi)))
        return mi

    def _devices_raw(self):
        size = ctypes.sizeof(_lib.DeviceStatus)
        n = 4
        while True:
            arr = (_lib.DeviceStatus * n)()
            got = _lib.check(lib.vram_manager_devices(self._m, arr, n, size), "devices")
            if got <= n:
                return list(arr[:got])
            n = got

    def _models_raw(self):
        size = ctypes.sizeof(_lib.ModelInfo)
        n = max(4, len(self.managers) + 4)
        while True:
            arr = (_lib.ModelInfo * n)()
            got = _lib.check(lib.vram_manager_models(self._m, arr, n, size), "status")
            if got <= n:
                return list(arr[:got])
            n = got

    @staticmethod
    def _gb(b):
        return round(b / float(1 << 30), 3)

    def _gpu_memory(self, devs):
        return {"GPU_%d" % d.index: {"allocated_gb": self._gb(d.used_by_models_bytes),
                                     "reserved_gb": self._gb(d.charged_bytes),
                                     "total_gb": self._gb(d.total_bytes),
                                     "budget_gb": self._gb(d.budget_bytes)} for d in devs}

    def _status_entry(self, mi, devs, info):
        st = mi.state
        e = {
            "model_name": _lib.text(mi.name),
            "location": _lib.text(lib.vram_state_location(st)),
            "idle_time_seconds": round(mi.idle_seconds, 3),
            "idle_timeout_seconds": mi.idle_timeout,
            "monitor_running": bool(info.monitor_running) or self._ticker is not None,
            "gpu_memory": self._gpu_memory(devs),
            "state": _lib.text(lib.vram_state_name(st)),
            "release_timeout_seconds": mi.release_timeout,
            "immediate_offload": bool(mi.immediate_offload),
            "device": mi.device,
            "backend": _lib.text(info.backend),
            "source": _lib.text(mi.source) or None,
            "bytes": mi.bytes, "tensors": mi.tensors, "leases": mi.leases,
        }
        if info.backend_error:  # a latched sticky CUDA error, as in the HTTP status
            e["backend_error"] = _lib.text(info.backend_error)
        for k in ("loads", "offloads", "restores", "releases", "evictions", "failures"):
            e[k] = getattr(mi, k)
        for k in ("load", "offload", "restore"):
            e["last_%s_seconds" % k] = getattr(mi, "last_%s_seconds" % k)
            e["last_%s_gbps" % k] = round(getattr(mi, "last_%s_gbps" % k), 3)
        for k in ("load", "offload", "restore"):
            e["%s_seconds_total" % k] = getattr(mi, "%s_seconds_total" % k)
        if st == _lib.STATE_LOADING and mi.progress_total:
            e["load_progress"] = {"done_bytes": mi.progress_done,
                                  "total_bytes": mi.progress_total,
                                  "fraction": round(mi.progress_done / mi.progress_total, 3)}
        else:
            e["load_progress"] = None
        e["last_error"] = _lib.text(mi.last_error) or None
        return e

    def get_all_status(self):
        """The seed's status: {model name: {model_name, location,
        idle_time_seconds, idle_timeout_seconds, monitor_running, gpu_memory,
        state, bytes, leases, counters, ...}} as a StatusDict, where
        status['monitor_running'] works too."""
        info = self._info_raw()
        devs = self._devices_raw()
        models = {}
        for mi in self._models_raw():
            e = self._status_entry(mi, devs, info)
            models[e["model_name"]] = e
        fields = {"monitor_running": bool(info.monitor_running) or self._ticker is not None,
                  "backend": _lib.text(info.backend), "gpu_memory": self._gpu_memory(devs),
                  "devices": self.devices(devs), "idle_timeout_seconds": info.idle_timeout,
                  "release_timeout_seconds": info.release_timeout,
                  "host_used_bytes": info.host_used_bytes,
                  "host_budget_bytes": info.host_budget_bytes}
        return StatusDict(models, fields)

    def devices(self, _raw=None):
        """Every device: index, name, uuid, total/free/used_by_models/charged/budget bytes."""
        out = []
        for d in (_raw if _raw is not None else self._devices_raw()):
            out.append({"index": d.index, "name": _lib.text(d.name), "uuid": _lib.text(d.uuid),
                        "total_bytes": d.total_bytes, "free_bytes": d.free_bytes,
                        "used_by_models_bytes": d.used_by_models_bytes,
                        "charged_bytes": d.charged_bytes, "budget_bytes": d.budget_bytes})
        return out

    def info(self):
        i = self._info_raw()
        return {"backend": _lib.text(i.backend), "devices": i.devices, "models": i.models,
                "monitor_running": bool(i.monitor_running), "idle_timeout": i.idle_timeout,
                "release_timeout": i.release_timeout, "host_budget_bytes": i.host_budget_bytes,
                "host_used_bytes": i.host_used_bytes}

    # ---- server ----
    def serve(self, port=7861, host="127.0.0.1", token=None, allowed_hosts=None, threads=0):
        """Starts the embeddable server (the seed's HTTP API, /api/v1,
        /metrics, /mcp) in this process over this manager. port=0 takes any
        free port. Returns a Server (.port, .url, .stop())."""
        slib = _lib.server_lib()
        if not hasattr(slib, "vram_server_start"):
            raise NotSupported("this libvram-server has no vram_server_start")
        o = _lib.ServerOpts()
        slib.vram_server_opts_init(ctypes.byref(o))
        keep = []
        if host is not None:
            keep.append(host.encode())
            o.bind = keep[-1]
        o.port = int(port)
        if token:
            keep.append(token.encode())
            o.token = keep[-1]
        if allowed_hosts:
            if not isinstance(allowed_hosts, str):
                allowed_hosts = ",".join(allowed_hosts)
            keep.append(allowed_hosts.encode())
            o.allowed_hosts = keep[-1]
        o.threads = int(threads)
        h = ctypes.c_void_p()
        _lib.check(slib.vram_server_start(self._m, ctypes.byref(o), ctypes.byref(h)), "serve")
        srv = Server(self, h.value, slib, host or "127.0.0.1", keep)
        with self._lock:
            self._servers.append(srv)
        return srv

    def close(self):
        """Stops this manager's servers; destroys a manager made with
        GPUManager() (releasing every model). The global one lives until exit."""
        for s in list(self._servers):
            s.stop()
        if self._ticker is not None:
            self._ticker_stop.set()
            self._ticker.join()
            self._ticker = None
        if self._owned and self._m:
            m, self._m = self._m, None
            for mm in self.managers.values():
                mm._ptr = None  # its module's calls now raise StaleModule
            lib.vram_manager_destroy(m)
            with _registry_lock:
                for mm in self.managers.values():
                    _registry.pop(mm._key, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<GPUManager %s: %d models>" % (self.backend, len(self.managers))


_global = None
_global_lock = threading.Lock()


def get_global_manager(idle_timeout=None):
    """The process-wide manager (created on first call from the environment
    and .env; idle_timeout, when given, overrides GPU_IDLE_TIMEOUT on that
    first call, as libvram's vram_global_manager does)."""
    global _global
    with _global_lock:
        if _global is None:
            h = lib.vram_global_manager(-1.0 if idle_timeout is None else float(idle_timeout))
            if not h:
                raise VramError("cannot create the global manager: %s"
                                % (_lib.last_error() or "see the log"))
            _global = GPUManager(_handle=h)
        return _global


def serve(port=7861, host="127.0.0.1", token=None, manager=None, allowed_hosts=None,
          threads=0):
    """Serves the global manager (or manager) over HTTP/MCP in this process;
    see GPUManager.serve."""
    m = manager if manager is not None else get_global_manager()
    return m.serve(port=port, host=host, token=token, allowed_hosts=allowed_hosts,
                   threads=threads)
