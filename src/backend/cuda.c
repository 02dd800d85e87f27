/* cuda.c - placeholder until the CUDA backend lands: reports that no driver is available. */
#include "backend/backend.h"
#include "core/internal.h"

int vram__backend_cuda_create(const vram_config *cfg, vram_backend **out)
{
    (void)cfg;
    *out = NULL;
    return vram__errorf(VRAM_ENODEV, "CUDA backend not built in yet");
}
