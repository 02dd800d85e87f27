"""Exceptions of gpu_manager: one per libvram error code, under VramError."""

__all__ = [
    "VramError", "InvalidArgument", "OutOfMemory", "OutOfHostMemory", "Busy", "NotFound",
    "AlreadyExists", "InvalidState", "IOError_", "FormatError", "BackendError", "Timeout",
    "Canceled", "NotSupported", "ConfigError", "LoadError", "NoDevice", "WeightsMismatch",
    "StaleModule", "error_for",
]


class VramError(RuntimeError):
    """A failed libvram call.

    ``code`` is the negative VRAM_E* value, ``name`` its name without prefix
    ("ENOMEM"), ``message`` the detailed text (from vram_last_error() where
    libvram gave one).
    """

    code = 0
    name = "UNKNOWN"

    def __init__(self, message="", code=None, name=None):
        if code is not None:
            self.code = code
        if name is not None:
            self.name = name
        self.message = message
        super().__init__(message)

    def __str__(self):
        return "%s: %s" % (self.name, self.message) if self.message else self.name


class InvalidArgument(VramError, ValueError):
    code, name = -1, "EINVAL"


class OutOfMemory(VramError, MemoryError):
    """Not enough device memory, and nothing could be evicted in time."""
    code, name = -2, "ENOMEM"


class OutOfHostMemory(VramError, MemoryError):
    code, name = -3, "EHOSTMEM"


class Busy(VramError):
    """The model is in use (under a lease)."""
    code, name = -4, "EBUSY"


class NotFound(VramError, LookupError):
    code, name = -5, "ENOENT"


class AlreadyExists(VramError):
    code, name = -6, "EEXIST"


class InvalidState(VramError):
    code, name = -7, "ESTATE"


class IOError_(VramError, OSError):
    code, name = -8, "EIO"


class FormatError(VramError, ValueError):
    """A malformed model file."""
    code, name = -9, "EFORMAT"


class BackendError(VramError):
    code, name = -10, "EBACKEND"


class Timeout(VramError, TimeoutError):
    code, name = -11, "ETIMEDOUT"


class Canceled(VramError):
    code, name = -12, "ECANCELED"


class NotSupported(VramError, NotImplementedError):
    code, name = -13, "ENOTSUP"


class ConfigError(VramError, ValueError):
    code, name = -14, "ECONFIG"


class LoadError(VramError):
    """The load function failed (a Python load_func's own exception is re-raised
    as itself; this is for other failures of a load)."""
    code, name = -15, "ELOAD"


class NoDevice(VramError):
    code, name = -16, "ENODEV"


class WeightsMismatch(FormatError):
    """A checkpoint does not match the module skeleton (missing or extra
    tensor, shape or dtype); the message names the tensor."""


class StaleModule(InvalidState):
    """A module whose vram model was released and loaded again into another
    module object; call get_model() again."""


_BY_CODE = {c.code: c for c in (
    InvalidArgument, OutOfMemory, OutOfHostMemory, Busy, NotFound, AlreadyExists,
    InvalidState, IOError_, FormatError, BackendError, Timeout, Canceled, NotSupported,
    ConfigError, LoadError, NoDevice)}


def error_for(code, message, name=None):
    """The exception instance for a libvram error code."""
    cls = _BY_CODE.get(code, VramError)
    if cls is VramError:
        return VramError(message, code=code, name=name or "UNKNOWN")
    return cls(message)
