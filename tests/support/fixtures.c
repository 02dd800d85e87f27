/* fixtures.c - the shared unit-test fixtures of fixtures.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fixtures.h"

vram_manager *fx_host_manager(uint64_t host_memory)
{
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = host_memory;
    cfg.host_devices = 1;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.no_monitor_thread = 1;
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), 0);
    return m;
}

vram_model *fx_add(vram_manager *m, const char *name, const char *spec)
{
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    vram_model *model = NULL;
    assert_int_equal(vram_manager_register(m, name, &o, &model), 0);
    return model;
}
