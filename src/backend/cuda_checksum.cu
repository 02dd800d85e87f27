/* cuda_checksum.cu - the CUDA backend's checksum kernel (PTX made by scripts/gen-ptx). */

/*
 * Generated into src/backend/cuda_checksum_ptx.h (committed) by scripts/gen-ptx:
 *   nvcc -ptx -arch=compute_75 -o src/backend/cuda_checksum.ptx src/backend/cuda_checksum.cu
 * then the PTX ISA version line is lowered so that older drivers can JIT it
 * (see scripts/gen-ptx), checked with ptxas, and embedded as a C string.
 *
 * Contract (the same as cuda_driver.h's VRAM_CK_* and the host's
 * vram__checksum_partial in src/core/util.c): over the nbytes bytes at
 * words, each 8-byte little-endian word w at word index i (counted from the
 * start of the range, hence first_word + i) adds mix64(w + i * GOLDEN) to a
 * sum modulo 2^64; a last partial word is zero-padded. Thread t of the grid
 * takes word indices t, t + stride, ... (stride = gridDim.x * blockDim.x);
 * block b writes the sum of its threads to partials[b], the host adds those.
 * blockDim.x must be VRAM_CK_THREADS (256), a power of two.
 */

#define VRAM_CK_THREADS 256
#define VRAM_GOLDEN 0x9e3779b97f4a7c15ULL

/* splitmix64's finalizer, as vram__mix64 in src/core/internal.h. */
__device__ __forceinline__ unsigned long long ck_mix64(unsigned long long x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

extern "C" __global__ void vram_checksum_kernel(const unsigned long long *words,
                                                unsigned long long nbytes,
                                                unsigned long long first_word,
                                                unsigned long long *partials)
{
    __shared__ unsigned long long acc[VRAM_CK_THREADS];
    const unsigned long long nwords = nbytes >> 3;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long sum = 0;

    for (unsigned long long i = t; i < nwords; i += stride)
        sum += ck_mix64(words[i] + (first_word + i) * VRAM_GOLDEN);

    /* The tail word belongs to the thread whose stride class holds its index. */
    const unsigned tail = (unsigned)(nbytes & 7);
    if (tail != 0 && t == nwords % stride) {
        const unsigned char *p = (const unsigned char *)(words + nwords);
        unsigned long long w = 0;
        for (unsigned k = 0; k < tail; k++)
            w |= (unsigned long long)p[k] << (8 * k);
        sum += ck_mix64(w + (first_word + nwords) * VRAM_GOLDEN);
    }

    acc[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) acc[threadIdx.x] += acc[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = acc[0];
}
