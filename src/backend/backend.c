/* backend.c - calling a backend through its interface table, and choosing one (auto: cuda, else host). */
#include "backend/backend.h"
#include "base/base.h"

/* ---- wrappers: the only callers of iface entries outside their file ---- */

int vram__backend_device_count(vram_backend *b)
{
    return b->iface->device_count(b);
}

int vram__backend_device_info(vram_backend *b, int dev, vram_dev_info *out)
{
    return b->iface->device_info(b, dev, out);
}

int vram__backend_reserve(vram_backend *b, int dev, size_t bytes, vram_buf *buf)
{
    return b->iface->reserve(b, dev, bytes, buf);
}

int vram__backend_map(vram_backend *b, vram_buf *buf)
{
    return b->iface->map(b, buf);
}

int vram__backend_unmap(vram_backend *b, vram_buf *buf)
{
    return b->iface->unmap(b, buf);
}

void vram__backend_unreserve(vram_backend *b, vram_buf *buf)
{
    b->iface->unreserve(b, buf);
}

int vram__backend_host_alloc(vram_backend *b, size_t bytes, void **out)
{
    return b->iface->host_alloc(b, bytes, out);
}

void vram__backend_host_free(vram_backend *b, void *p, size_t bytes)
{
    b->iface->host_free(b, p, bytes);
}

int vram__backend_to_host(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n)
{
    return b->iface->to_host(b, buf, off, dst, n);
}

int vram__backend_to_device(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                            size_t n)
{
    return b->iface->to_device(b, buf, off, src, n);
}

/* The default checksum: [off, off+n) downloaded in chunks into one staging
 * buffer and hashed on the host. */
#define CHECKSUM_STAGE ((size_t)16 << 20)

static int checksum_on_host(vram_backend *b, const vram_buf *buf, size_t off, size_t n,
                            uint64_t *sum)
{
    if (!sum) return vram__errorf(VRAM_EINVAL, "%s backend: checksum: sum is NULL", b->name);
    if (off % 8)
        return vram__errorf(VRAM_EINVAL, "%s backend: checksum: offset %zu is not a multiple of 8",
                            b->name, off);
    *sum = 0;
    if (n == 0) return vram__backend_to_host(b, buf, off, NULL, 0);
    size_t chunk = n < CHECKSUM_STAGE ? n : CHECKSUM_STAGE;
    void *stage = NULL;
    int rc = vram__backend_host_alloc(b, chunk, &stage);
    if (rc < 0) return rc;
    uint64_t s = 0;
    for (size_t done = 0; done < n && rc == 0; done += chunk) {
        size_t len = n - done < chunk ? n - done : chunk;
        rc = vram__backend_to_host(b, buf, off + done, stage, len);
        if (rc == 0) s += vram__checksum_partial(stage, len, (off + done) / 8);
    }
    vram__backend_host_free(b, stage, chunk);
    if (rc == 0) *sum = s;
    return rc;
}

int vram__backend_checksum(vram_backend *b, const vram_buf *buf, size_t off, size_t n,
                           uint64_t *sum)
{
    if (b->iface->checksum) return b->iface->checksum(b, buf, off, n, sum);
    return checksum_on_host(b, buf, off, n, sum);
}

int vram__backend_health(vram_backend *b, char *msg, size_t len)
{
    if (len) msg[0] = '\0';
    return b->iface->health ? b->iface->health(b, msg, len) : 0;
}

void *vram__backend_host_ptr(vram_backend *b, const vram_buf *buf, size_t off, size_t n)
{
    return b->iface->host_ptr ? b->iface->host_ptr(b, buf, off, n) : NULL;
}

void vram__backend_destroy(vram_backend *b)
{
    if (b) b->iface->destroy(b);
}

/* ---- opening ---- */

static int open_kind(const vram_backend_config *cfg, vram_backend **out)
{
    switch (cfg->kind) {
    case VRAM_BACKEND_HOST:
        return vram__backend_host_create(cfg, out);
    case VRAM_BACKEND_CUDA:
        return vram__backend_cuda_create(cfg, out);
    case VRAM_BACKEND_AUTO:
    default: {
        int rc = vram__backend_cuda_create(cfg, out);
        if (rc == 0) {
            vram__log(VRAM_LOG_INFO, "backend=cuda devices=%d (auto: driver and device found)",
                      vram__backend_device_count(*out));
            return 0;
        }
        vram__log(VRAM_LOG_INFO, "backend=host (auto: no CUDA device: %s)", vram__last_error());
        return vram__backend_host_create(cfg, out);
    }
    }
}

int vram__backend_open(const vram_backend_config *cfg, vram_backend **out)
{
    if (!out) return vram__errorf(VRAM_EINVAL, "backend: out is NULL");
    *out = NULL;
    if (!cfg) return vram__errorf(VRAM_EINVAL, "backend: cfg is NULL");
    vram_backend *b = NULL;
    int rc = open_kind(cfg, &b);
    if (rc < 0) return rc;
    if (!cfg->fault_injection) {
        *out = b;
        return 0;
    }
    rc = vram__backend_fault_wrap(b, out); /* destroys b on failure */
    if (rc == 0) vram__log(VRAM_LOG_INFO, "backend=%s wrapped for fault injection", b->name);
    return rc;
}
