/* fixtures.h - what several unit tests build the same way: a small host-backend manager without a monitor thread, a synthetic model. */
#ifndef VRAM_TEST_FIXTURES_H
#define VRAM_TEST_FIXTURES_H

#include <stdint.h>

#include "vram.h"

/* A manager on one emulated host device of host_memory bytes, no monitor
 * thread, no wait for memory, errors-only logging. Fails the test on error. */
vram_manager *fx_host_manager(uint64_t host_memory);

/* Registers name with source spec ("synthetic:4M:1"); fails the test on error. */
vram_model *fx_add(vram_manager *m, const char *name, const char *spec);

#endif /* VRAM_TEST_FIXTURES_H */
