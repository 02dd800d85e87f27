# test_layout.py - the package's mirrored C structs match the library's (vram_struct_size), and the package finds the library it was pointed at.
import ctypes
import os

import gpu_manager
from gpu_manager import _lib


def test_struct_sizes_match_the_library():
    for cname, cls in (("vram_model_info", _lib.ModelInfo), ("vram_device_status", _lib.DeviceStatus),
                       ("vram_manager_info", _lib.ManagerInfo), ("vram_model_opts", _lib.ModelOpts),
                       ("vram_tensor_info", _lib.TensorInfo)):
        assert _lib.lib.vram_struct_size(cname.encode()) == ctypes.sizeof(cls), cname
    assert 0 < _lib.lib.vram_struct_size(b"vram_config") <= _lib.CONFIG_BYTES
    assert _lib.lib.vram_struct_size(b"no_such_struct") == 0


def test_the_library_named_by_the_environment_is_used():
    want = os.environ.get("VRAM_LIBRARY")
    if want:  # CTest sets it to the build's libvram.so
        assert os.path.realpath(gpu_manager.library_path) == os.path.realpath(want)
