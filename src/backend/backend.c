/* backend.c - choosing a backend: cuda when a driver and a device exist (auto), else the host emulation. */
#include "backend/backend.h"
#include "base/base.h"

int vram__backend_open(const vram_config *cfg, vram_backend **out)
{
    *out = NULL;
    switch (cfg->backend) {
    case VRAM_BACKEND_HOST:
        return vram__backend_host_create(cfg, out);
    case VRAM_BACKEND_CUDA:
        return vram__backend_cuda_create(cfg, out);
    case VRAM_BACKEND_AUTO:
    default: {
        int rc = vram__backend_cuda_create(cfg, out);
        if (rc == 0) {
            vram__log(VRAM_LOG_INFO, "backend=cuda devices=%d (auto: driver and device found)",
                      (*out)->device_count(*out));
            return 0;
        }
        vram__log(VRAM_LOG_INFO, "backend=host (auto: no CUDA device: %s)", vram__last_error());
        rc = vram__backend_host_create(cfg, out);
        return rc;
    }
    }
}
