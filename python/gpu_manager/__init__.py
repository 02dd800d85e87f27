"""gpu_manager - the seed's Python API over libvram (ctypes; torch optional).

    from gpu_manager import get_global_manager
    gpu_manager = get_global_manager(idle_timeout=600)
    llasa_manager = gpu_manager.register_model("Llasa-8B")
    model = llasa_manager.get_model(load_func=load_llasa, model_name="Llasa-8B")
    result = model(inputs)
    llasa_manager.force_offload()

A torch.nn.Module returned by load_func has its parameters and buffers
adopted into one vram range: from then on offload and restore are libvram's,
at the same addresses (same module object, same data_ptr()). See README.md,
section "Python".
"""
from ._lib import library_path
from .errors import (AlreadyExists, BackendError, Busy, Canceled, ConfigError, FormatError,
                     InvalidArgument, InvalidState, IOError_, LoadError, NoDevice, NotFound,
                     NotSupported, OutOfHostMemory, OutOfMemory, StaleModule, Timeout,
                     VramError, WeightsMismatch)
from .manager import (DeviceBuffer, GPUManager, ModelManager, Server, StatusDict,
                      get_global_manager, serve)

__version__ = "0.1.0"

__all__ = [
    "get_global_manager", "serve", "GPUManager", "ModelManager", "StatusDict", "Server",
    "DeviceBuffer", "library_path",
    "VramError", "InvalidArgument", "OutOfMemory", "OutOfHostMemory", "Busy", "NotFound",
    "AlreadyExists", "InvalidState", "IOError_", "FormatError", "BackendError", "Timeout",
    "Canceled", "NotSupported", "ConfigError", "LoadError", "NoDevice", "WeightsMismatch",
    "StaleModule",
]
