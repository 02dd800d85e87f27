/* checksum.c - vramctl checksum-synthetic, test-only (not in --help): synthetic:SIZE:SEED's sum. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "vram.h"
#include "vramctl.h"

/* Prints the checksum that vramd's run reports for a model of source
 * synthetic:SIZE:SEED, as 0x%016x; tests/integration/vramtest.py's
 * expected_checksum() holds vramd's answers to it. */
int cmd_checksum_synthetic(int argc, char **argv)
{
    uint64_t size = 0, seed = 0;
    if (argc < 1 || argc > 2 || vram_parse_size(argv[0], &size) < 0)
        die(EXIT_USAGE, "usage: vramctl checksum-synthetic SIZE [SEED]");
    if (argc == 2) seed = strtoull(argv[1], NULL, 0);
    size_t chunk = 8u << 20;
    unsigned char *b = malloc(chunk);
    if (!b) die(EXIT_FAILED, "out of memory");
    uint64_t sum = 0;
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = (size_t)(size - off < chunk ? size - off : chunk);
        vram_synthetic_fill(seed, off, b, n);
        sum = vram_checksum_update(sum, b, n, off);
    }
    sum = vram_checksum_finish(sum, size);
    free(b);
    printf("0x%016" PRIx64 "\n", sum);
    return 0;
}
