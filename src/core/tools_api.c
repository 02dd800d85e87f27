/* tools_api.c - vram.h's "For tools" section: flags, option help, GPU pick, checksum in pieces. */
#include "backend/nvml.h"
#include "base/base.h"
#include "core/config.h"

int vram_config_set_flag(vram_config *cfg, const char *flag, const char *value, char *err,
                         size_t errlen)
{
    return vram__config_set_flag(cfg, flag, value, err, errlen);
}

void vram_config_print_help(void *file)
{
    vram__config_print_help(file);
}

int vram_gpu_pick(char *uuid_out, size_t len, int *index_out, char *why, size_t whylen)
{
    return vram__nvml_pick(uuid_out, len, index_out, why, whylen);
}

uint64_t vram_checksum_update(uint64_t sum, const void *data, size_t bytes, uint64_t offset)
{
    return sum + vram__checksum_partial(data, bytes, offset / 8);
}

uint64_t vram_checksum_finish(uint64_t sum, uint64_t total_bytes)
{
    return sum + vram__checksum_final(total_bytes);
}
