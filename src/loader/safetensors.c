/* safetensors.c - placeholder until the safetensors loader lands: refuses every path. */
#include "core/internal.h"
#include "loader/source.h"

int vram__safetensors_open(const char *path, vram_source **out)
{
    *out = NULL;
    return vram__errorf(VRAM_ENOTSUP, "%s: unknown model source (expected synthetic:SIZE[:SEED])", path);
}
