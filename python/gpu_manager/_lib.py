"""ctypes bindings of libvram (include/vram.h) and libvram-server (include/vram_server.h).

Every CDLL call releases the GIL for its duration (transfers, waits for a
load in another thread); the load callback, a CFUNCTYPE, takes it back.
"""
import ctypes
import os
import threading

from .errors import error_for

__all__ = ["lib", "server_lib", "check", "last_error", "library_path"]

_here = os.path.dirname(os.path.abspath(__file__))


def _config_libdir():
    try:
        from . import _install  # written by `cmake --install` (cmake/modules/40-python.cmake)
        return getattr(_install, "LIBDIR", None)
    except ImportError:
        return None


def _candidates(env, names):
    v = os.environ.get(env)
    if v:
        return [v]  # an explicit choice is the only one tried
    out = []
    libdir = _config_libdir()
    if libdir:
        out += [os.path.join(libdir, n) for n in names]
    # a source checkout: python/gpu_manager -> <repo>/build
    repo = os.path.dirname(os.path.dirname(_here))
    for b in ("build", "build-release"):
        out += [os.path.join(repo, b, n) for n in names]
    out += list(names)  # the dynamic linker's own search (ld.so.cache, LD_LIBRARY_PATH)
    return out


def _load(env, names):
    errors = []
    for path in _candidates(env, names):
        if os.sep in path and not os.path.exists(path):
            errors.append("%s: no such file" % path)
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append(str(e))
    raise ImportError("gpu_manager: cannot load %s (set %s to its path): %s"
                      % (names[0], env, "; ".join(errors)))


# ---- structs (grow only at their end; sizeof is passed to the library) ----
VRAM_NAME_MAX = 128
VRAM_STR_MAX = 256
VRAM_MAX_DIMS = 8


class ModelInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * (VRAM_NAME_MAX + 8)),
        ("state", ctypes.c_int),
        ("device", ctypes.c_int),
        ("leases", ctypes.c_int),
        ("immediate_offload", ctypes.c_int),
        ("bytes", ctypes.c_uint64),
        ("tensors", ctypes.c_uint64),
        ("idle_seconds", ctypes.c_double),
        ("idle_timeout", ctypes.c_double),
        ("release_timeout", ctypes.c_double),
        ("loads", ctypes.c_uint64), ("offloads", ctypes.c_uint64),
        ("restores", ctypes.c_uint64), ("releases", ctypes.c_uint64),
        ("evictions", ctypes.c_uint64), ("failures", ctypes.c_uint64),
        ("last_load_seconds", ctypes.c_double), ("last_offload_seconds", ctypes.c_double),
        ("last_restore_seconds", ctypes.c_double),
        ("last_load_gbps", ctypes.c_double), ("last_offload_gbps", ctypes.c_double),
        ("last_restore_gbps", ctypes.c_double),
        ("load_seconds_total", ctypes.c_double), ("offload_seconds_total", ctypes.c_double),
        ("restore_seconds_total", ctypes.c_double),
        ("progress_done", ctypes.c_uint64), ("progress_total", ctypes.c_uint64),
        ("source", ctypes.c_char * VRAM_STR_MAX),
        ("last_error", ctypes.c_char * 512),
    ]


class DeviceStatus(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_int),
        ("name", ctypes.c_char * 128),
        ("uuid", ctypes.c_char * 64),
        ("total_bytes", ctypes.c_uint64),
        ("free_bytes", ctypes.c_uint64),
        ("used_by_models_bytes", ctypes.c_uint64),
        ("charged_bytes", ctypes.c_uint64),
        ("budget_bytes", ctypes.c_uint64),
    ]


class ManagerInfo(ctypes.Structure):
    _fields_ = [
        ("backend", ctypes.c_char * 16),
        ("devices", ctypes.c_int),
        ("models", ctypes.c_int),
        ("monitor_running", ctypes.c_int),
        ("idle_timeout", ctypes.c_double),
        ("release_timeout", ctypes.c_double),
        ("host_budget_bytes", ctypes.c_uint64),
        ("host_used_bytes", ctypes.c_uint64),
        ("backend_error", ctypes.c_char * 512),
    ]


LOAD_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class ModelOpts(ctypes.Structure):
    _fields_ = [
        ("source", ctypes.c_char_p),
        ("load", LOAD_FN),
        ("load_user", ctypes.c_void_p),
        ("idle_timeout", ctypes.c_double),
        ("release_timeout", ctypes.c_double),
        ("immediate_offload", ctypes.c_int),
        ("device", ctypes.c_int),
    ]


class TensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_char_p),
        ("ndim", ctypes.c_int),
        ("shape", ctypes.c_int64 * VRAM_MAX_DIMS),
        ("offset", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("dev_ptr", ctypes.c_void_p),
    ]


class ServerOpts(ctypes.Structure):
    _fields_ = [
        ("bind", ctypes.c_char_p),
        ("port", ctypes.c_int),
        ("token", ctypes.c_char_p),
        ("allowed_hosts", ctypes.c_char_p),
        ("threads", ctypes.c_int),
        ("request_timeout", ctypes.c_double),
        ("max_connections", ctypes.c_int),
        ("max_per_client", ctypes.c_int),
    ]


# vram_config is passed as an opaque buffer filled by vram_config_init and
# changed only through vram_config_set, so its layout never matters here.
CONFIG_BYTES = 16384

# flags and states
WAIT, NOWAIT, DEFER = 0, 1, 2
DEFERRED = 1
STATE_NAMES = ["unloaded", "loading", "gpu", "offloading", "cpu", "restoring", "releasing"]
STATE_UNLOADED, STATE_LOADING, STATE_GPU, STATE_OFFLOADING, STATE_CPU, STATE_RESTORING, \
    STATE_RELEASING = range(7)

lib, library_path = _load("VRAM_LIBRARY", ["libvram.so.0", "libvram.so"])

_P = ctypes.c_void_p
_protos = {
    "vram_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    "vram_err_name": (ctypes.c_char_p, [ctypes.c_int]),
    "vram_last_error": (ctypes.c_char_p, []),
    "vram_config_init": (None, [_P]),
    "vram_config_set": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.c_size_t]),
    "vram_config_load": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "vram_manager_create": (ctypes.c_int, [_P, ctypes.POINTER(_P)]),
    "vram_manager_destroy": (None, [_P]),
    "vram_global_manager": (_P, [ctypes.c_double]),
    "vram_manager_backend": (ctypes.c_char_p, [_P]),
    "vram_manager_set_idle_timeout": (ctypes.c_int, [_P, ctypes.c_double]),
    "vram_manager_set_release_timeout": (ctypes.c_int, [_P, ctypes.c_double]),
    "vram_manager_offload_all": (ctypes.c_int, [_P, ctypes.c_uint]),
    "vram_manager_release_all": (ctypes.c_int, [_P, ctypes.c_uint]),
    "vram_manager_monitor_running": (ctypes.c_int, [_P]),
    "vram_manager_tick": (ctypes.c_int, [_P]),
    "vram_manager_wake": (None, [_P]),
    "vram_model_opts_init": (None, [ctypes.POINTER(ModelOpts)]),
    "vram_manager_register": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(ModelOpts),
                                             ctypes.POINTER(_P)]),
    "vram_manager_find": (_P, [_P, ctypes.c_char_p]),
    "vram_manager_unregister": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "vram_model_name": (ctypes.c_char_p, [_P]),
    "vram_model_alloc": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(_P)]),
    "vram_model_upload": (ctypes.c_int, [_P, _P, _P, ctypes.c_size_t]),
    "vram_model_download": (ctypes.c_int, [_P, _P, _P, ctypes.c_size_t]),
    "vram_model_acquire": (ctypes.c_int, [_P, ctypes.POINTER(_P)]),
    "vram_lease_end": (None, [_P]),
    "vram_lease_ptr": (_P, [_P]),
    "vram_model_offload": (ctypes.c_int, [_P, ctypes.c_uint]),
    "vram_model_release": (ctypes.c_int, [_P, ctypes.c_uint]),
    "vram_model_set_idle_timeout": (ctypes.c_int, [_P, ctypes.c_double]),
    "vram_model_set_release_timeout": (ctypes.c_int, [_P, ctypes.c_double]),
    "vram_model_set_immediate_offload": (ctypes.c_int, [_P, ctypes.c_int]),
    "vram_model_state": (ctypes.c_int, [_P]),
    "vram_state_name": (ctypes.c_char_p, [ctypes.c_int]),
    "vram_state_location": (ctypes.c_char_p, [ctypes.c_int]),
    "vram_model_bytes": (ctypes.c_uint64, [_P]),
    "vram_model_checksum": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint64)]),
    "vram_checksum": (ctypes.c_uint64, [_P, ctypes.c_size_t]),
    "vram_model_get_info": (ctypes.c_int, [_P, ctypes.POINTER(ModelInfo), ctypes.c_size_t]),
    "vram_manager_models": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_size_t]),
    "vram_manager_devices": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_size_t]),
    "vram_manager_get_info": (ctypes.c_int, [_P, ctypes.POINTER(ManagerInfo), ctypes.c_size_t]),
    "vram_model_tensor_count": (ctypes.c_size_t, [_P]),
    "vram_model_tensor": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(TensorInfo)]),
    "vram_model_find_tensor": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(TensorInfo)]),
}
for _name, (_res, _args) in _protos.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args

# The mirrored structs must match the library's (vram_struct_size); a
# mismatch would corrupt memory, so it stops the import with the reason.
def _check_layouts():
    f = getattr(lib, "vram_struct_size", None)
    if f is None:
        return
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_char_p]
    for cname, cls in (("vram_model_info", ModelInfo), ("vram_device_status", DeviceStatus),
                       ("vram_manager_info", ManagerInfo), ("vram_model_opts", ModelOpts),
                       ("vram_tensor_info", TensorInfo)):
        want = f(cname.encode())
        if want != ctypes.sizeof(cls):
            raise ImportError("gpu_manager: %s is %d bytes in %s but %d in this package: "
                              "the library and the package are from different versions"
                              % (cname, want, library_path, ctypes.sizeof(cls)))
    if f(b"vram_config") > CONFIG_BYTES:
        raise ImportError("gpu_manager: vram_config is larger than the %d bytes reserved for it"
                          % CONFIG_BYTES)


_check_layouts()
# vram_set_error is variadic: called as vram_set_error(code, "%s", text), no argtypes.
lib.vram_set_error.restype = ctypes.c_int

_server_lock = threading.Lock()
_server = None


def server_lib():
    """libvram-server, loaded on first use (only serve() needs it)."""
    global _server
    with _server_lock:
        if _server is None:
            s, _path = _load("VRAM_SERVER_LIBRARY", ["libvram-server.so.0", "libvram-server.so"])
            for name, res, args in (
                ("vram_server_opts_init", None, [ctypes.POINTER(ServerOpts)]),
                ("vram_server_start", ctypes.c_int, [_P, ctypes.POINTER(ServerOpts),
                                                     ctypes.POINTER(_P)]),
                ("vram_server_port", ctypes.c_int, [_P]),
                ("vram_server_stop", ctypes.c_int, [_P, ctypes.c_double]),
                ("vram_manager_status_json", _P, [_P]),
                ("vram_model_status_json", _P, [_P, ctypes.c_char_p]),
                ("vram_manager_devices_json", _P, [_P]),
            ):
                try:
                    f = getattr(s, name)
                except AttributeError:
                    continue  # an older libvram-server: serve() says so when it needs it
                f.restype = res
                f.argtypes = args
            _server = s
        return _server


def text(b):
    return b.decode("utf-8", "replace") if b else ""


def last_error():
    return text(lib.vram_last_error())


def err_name(code):
    return text(lib.vram_err_name(code))


def make_error(code, what=None):
    """The exception for a failed call, with vram_last_error()'s detail."""
    msg = last_error() or text(lib.vram_strerror(code))
    if what:
        msg = "%s: %s" % (what, msg)
    return error_for(code, msg, err_name(code))


def check(rc, what=None):
    if rc < 0:
        raise make_error(rc, what)
    return rc


def set_error(code, message):
    """vram_set_error(code, "%s", message) for the calling thread."""
    data = message.encode("utf-8", "replace")[:4000]
    return lib.vram_set_error(ctypes.c_int(code), ctypes.c_char_p(b"%s"), ctypes.c_char_p(data))
