/* checksum.c - the documented checksum of a model's bytes and the synthetic source's bytes. */
#include <string.h>

#include "base/base.h"

uint64_t vram__checksum_partial(const void *data, size_t n, uint64_t first_word)
{
    const unsigned char *p = data;
    uint64_t sum = 0, idx = first_word;
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++, idx++) {
        uint64_t w;
        memcpy(&w, p + i * 8, 8); /* little-endian hosts only (x86-64, arm64) */
        sum += vram__mix64(w + idx * VRAM_GOLDEN);
    }
    size_t tail = n % 8;
    if (tail) {
        uint64_t w = 0;
        memcpy(&w, p + words * 8, tail);
        sum += vram__mix64(w + idx * VRAM_GOLDEN);
    }
    return sum;
}

uint64_t vram__checksum_final(uint64_t total_bytes)
{
    return vram__mix64(total_bytes ^ 0x5a5a5a5a5a5a5a5aULL);
}

uint64_t vram_checksum(const void *data, size_t bytes)
{
    return vram__checksum_partial(data, bytes, 0) + vram__checksum_final(bytes);
}

/* ---- synthetic bytes ---- */

void vram_synthetic_fill(uint64_t seed, uint64_t offset, void *dst, size_t n)
{
    unsigned char *out = dst;
    uint64_t key = vram__mix64(seed + 0x1234567ULL);
    uint64_t word = offset / 8;
    size_t skip = (size_t)(offset % 8);
    while (n > 0) {
        uint64_t v = vram__mix64(key ^ (word * VRAM_GOLDEN));
        unsigned char b[8];
        memcpy(b, &v, 8);
        size_t take = 8 - skip;
        if (take > n) take = n;
        if (take == 8) {
            memcpy(out, b, 8);
        } else {
            memcpy(out, b + skip, take);
        }
        out += take;
        n -= take;
        skip = 0;
        word++;
    }
}
