/* fault.c - the fault-injection decorator: a backend that forwards to another and fails the calls tests arm. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/base.h"

/*
 * Each operation that can fail has a countdown: vram__backend_inject sets
 * it to n, each call of the operation decrements it (compare-and-swap, so
 * that of many threads exactly one sees it reach 0) and the call that takes
 * it from 1 to 0 fails with the armed error without reaching the inner
 * backend. `armed` counts the armed countdowns so that an unarmed decorator
 * costs one atomic load per call.
 */

enum {
    OP_RESERVE,
    OP_MAP,
    OP_UNMAP,
    OP_HOST_ALLOC,
    OP_TO_HOST,
    OP_TO_DEVICE,
    OP_CHECKSUM,
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
    "reserve", "map", "unmap", "host_alloc", "to_host", "to_device", "checksum",
};

typedef struct fault_op {
    int countdown; /* atomic: calls left until the failing one; 0 = not armed */
    int n;         /* atomic: the n it was armed with, for the message */
    int err;       /* atomic: the error it fails with */
    int fired;     /* atomic: injected failures that hit, since the decorator was made */
} fault_op;

typedef struct fault_ctx {
    vram_backend *inner; /* owned */
    int armed;           /* atomic: countdowns > 0 */
    fault_op ops[OP_COUNT];
} fault_ctx;

static const struct vram_backend_iface fault_iface;

/* Counts one call of op; returns the injected error (message set) when this
 * is the call that was asked to fail, else 0. */
static int fault_check(vram_backend *b, int op)
{
    fault_ctx *c = b->ctx;
    if (__atomic_load_n(&c->armed, __ATOMIC_ACQUIRE) == 0) return 0;
    fault_op *o = &c->ops[op];
    int left = __atomic_load_n(&o->countdown, __ATOMIC_ACQUIRE);
    while (left > 0) {
        if (__atomic_compare_exchange_n(&o->countdown, &left, left - 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            if (left != 1) return 0;
            __atomic_fetch_sub(&c->armed, 1, __ATOMIC_RELEASE);
            __atomic_fetch_add(&o->fired, 1, __ATOMIC_RELEASE);
            return vram__errorf(__atomic_load_n(&o->err, __ATOMIC_ACQUIRE),
                                "injected failure: %s #%d", op_names[op],
                                __atomic_load_n(&o->n, __ATOMIC_ACQUIRE));
        }
    }
    return 0;
}

static int op_index(const char *what)
{
    for (int i = 0; what && i < OP_COUNT; i++)
        if (strcmp(what, op_names[i]) == 0) return i;
    return -1;
}

int vram__backend_inject(vram_backend *b, const char *what, int n, int err)
{
    /* map_piece sits inside the host backend's map: hand it down */
    if (b && b->iface == &fault_iface && what && strcmp(what, "map_piece") == 0)
        return vram__backend_host_fail_piece(((fault_ctx *)b->ctx)->inner, n, err);
    if (!b || b->iface != &fault_iface)
        return vram__errorf(VRAM_ENOTSUP, "fault injection: backend %s is not a fault decorator "
                                          "(set vram_config.fault_injection)",
                            b && b->name ? b->name : "(null)");
    int op = op_index(what);
    if (op < 0)
        return vram__errorf(VRAM_EINVAL, "fault injection: unknown operation '%s'",
                            what ? what : "(null)");
    fault_ctx *c = b->ctx;
    fault_op *o = &c->ops[op];
    if (n < 0) n = 0;
    if (err >= 0) err = VRAM_EBACKEND; /* a failure must be a negative code */
    __atomic_store_n(&o->n, n, __ATOMIC_RELEASE);
    __atomic_store_n(&o->err, err, __ATOMIC_RELEASE);
    int was = __atomic_exchange_n(&o->countdown, n, __ATOMIC_ACQ_REL);
    __atomic_fetch_add(&c->armed, (n > 0) - (was > 0), __ATOMIC_RELEASE);
    return 0;
}

int vram__backend_fault_fired(vram_backend *b, const char *what)
{
    if (!b || b->iface != &fault_iface) return 0;
    if (what && strcmp(what, "map_piece") == 0)
        return vram__backend_host_piece_fired(((fault_ctx *)b->ctx)->inner);
    int op = op_index(what);
    if (op < 0) return 0;
    return __atomic_load_n(&((fault_ctx *)b->ctx)->ops[op].fired, __ATOMIC_ACQUIRE);
}

/* ---- forwarding entries ---- */

#define INNER(b) (((fault_ctx *)(b)->ctx)->inner)

static int fault_device_count(vram_backend *b)
{
    return vram__backend_device_count(INNER(b));
}

static int fault_device_info(vram_backend *b, int dev, vram_dev_info *out)
{
    return vram__backend_device_info(INNER(b), dev, out);
}

static int fault_reserve(vram_backend *b, int dev, size_t bytes, vram_buf *buf)
{
    int rc = fault_check(b, OP_RESERVE);
    return rc ? rc : vram__backend_reserve(INNER(b), dev, bytes, buf);
}

static int fault_map(vram_backend *b, vram_buf *buf)
{
    int rc = fault_check(b, OP_MAP);
    return rc ? rc : vram__backend_map(INNER(b), buf);
}

static int fault_unmap(vram_backend *b, vram_buf *buf)
{
    int rc = fault_check(b, OP_UNMAP);
    return rc ? rc : vram__backend_unmap(INNER(b), buf);
}

static void fault_unreserve(vram_backend *b, vram_buf *buf)
{
    vram__backend_unreserve(INNER(b), buf);
}

static int fault_host_alloc(vram_backend *b, size_t bytes, void **out)
{
    int rc = fault_check(b, OP_HOST_ALLOC);
    if (rc && out) *out = NULL;
    return rc ? rc : vram__backend_host_alloc(INNER(b), bytes, out);
}

static void fault_host_free(vram_backend *b, void *p, size_t bytes)
{
    vram__backend_host_free(INNER(b), p, bytes);
}

static int fault_to_host(vram_backend *b, const vram_buf *buf, size_t off, void *dst, size_t n)
{
    int rc = fault_check(b, OP_TO_HOST);
    return rc ? rc : vram__backend_to_host(INNER(b), buf, off, dst, n);
}

static int fault_to_device(vram_backend *b, const vram_buf *buf, size_t off, const void *src,
                           size_t n)
{
    int rc = fault_check(b, OP_TO_DEVICE);
    return rc ? rc : vram__backend_to_device(INNER(b), buf, off, src, n);
}

/* The inner backend's checksum, or the wrapper's host default over the
 * inner backend when it has none (its copies are then not counted). */
static int fault_checksum(vram_backend *b, const vram_buf *buf, size_t off, size_t n,
                          uint64_t *sum)
{
    int rc = fault_check(b, OP_CHECKSUM);
    return rc ? rc : vram__backend_checksum(INNER(b), buf, off, n, sum);
}

static int fault_health(vram_backend *b, char *msg, size_t len)
{
    return vram__backend_health(INNER(b), msg, len);
}

static void *fault_host_ptr(vram_backend *b, const vram_buf *buf, size_t off, size_t n)
{
    return vram__backend_host_ptr(INNER(b), buf, off, n);
}

static void fault_destroy(vram_backend *b)
{
    if (!b) return;
    fault_ctx *c = b->ctx;
    vram__backend_destroy(c->inner);
    free(c);
    free(b);
}

static const struct vram_backend_iface fault_iface = {
    .device_count = fault_device_count,
    .device_info = fault_device_info,
    .reserve = fault_reserve,
    .map = fault_map,
    .unmap = fault_unmap,
    .unreserve = fault_unreserve,
    .host_alloc = fault_host_alloc,
    .host_free = fault_host_free,
    .to_host = fault_to_host,
    .to_device = fault_to_device,
    .checksum = fault_checksum,
    .destroy = fault_destroy,
    .host_ptr = fault_host_ptr,
    .health = fault_health,
};

int vram__backend_fault_wrap(vram_backend *inner, vram_backend **out)
{
    if (!out) return vram__errorf(VRAM_EINVAL, "fault decorator: out is NULL");
    *out = NULL;
    if (!inner) return vram__errorf(VRAM_EINVAL, "fault decorator: inner backend is NULL");
    fault_ctx *c = calloc(1, sizeof *c);
    vram_backend *b = calloc(1, sizeof *b);
    if (!c || !b) {
        free(c);
        free(b);
        vram__backend_destroy(inner);
        return vram__errorf(VRAM_EHOSTMEM, "fault decorator: out of host memory");
    }
    c->inner = inner;
    b->version = VRAM_BACKEND_VERSION;
    b->name = inner->name; /* the device is still the inner one ("host", "cuda") */
    b->iface = &fault_iface;
    b->ctx = c;
    *out = b;
    return 0;
}
