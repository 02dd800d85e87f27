/* vram.h - the public C API of libvram, a GPU memory manager for large models. */
#ifndef VRAM_H
#define VRAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(VRAM_BUILDING) && defined(__GNUC__)
#define VRAM_API __attribute__((visibility("default")))
#else
#define VRAM_API
#endif

#define VRAM_VERSION "0.1.0"

/* ------------------------------------------------------------------------ */
/* Errors: 0 is success, every failure a negative VRAM_E* code.              */
/* One table yields the enum, vram_strerror() and vram_err_name().          */
/* ------------------------------------------------------------------------ */
#define VRAM_ERRNO_MAP(XX)                                                      \
    XX(EINVAL, -1, "invalid argument")                                          \
    XX(ENOMEM, -2, "out of device memory")                                      \
    XX(EHOSTMEM, -3, "out of host memory")                                      \
    XX(EBUSY, -4, "model is in use")                                            \
    XX(ENOENT, -5, "no such model")                                             \
    XX(EEXIST, -6, "model already exists")                                      \
    XX(ESTATE, -7, "operation not valid in the model's state")                  \
    XX(EIO, -8, "input/output error")                                           \
    XX(EFORMAT, -9, "malformed model file")                                     \
    XX(EBACKEND, -10, "device backend error")                                   \
    XX(ETIMEDOUT, -11, "timed out")                                             \
    XX(ECANCELED, -12, "canceled")                                              \
    XX(ENOTSUP, -13, "not supported")                                           \
    XX(ECONFIG, -14, "invalid configuration")                                   \
    XX(ELOAD, -15, "model load function failed")                                \
    XX(ENODEV, -16, "no such device")

enum {
#define VRAM_ERR_ENUM_(name, val, msg) VRAM_##name = (val),
    VRAM_OK = 0,
    VRAM_ERRNO_MAP(VRAM_ERR_ENUM_)
#undef VRAM_ERR_ENUM_
};

/* A static description of err ("out of device memory"); never NULL. */
VRAM_API const char *vram_strerror(int err);
/* The code's name without prefix ("ENOMEM"); "UNKNOWN" for foreign values. */
VRAM_API const char *vram_err_name(int err);

/* The calling thread's detailed message for its last failed call (like
 * dlerror, but never reset by a success): "Llasa-8B: needs 16.0 GiB on
 * device 0, 2.0 GiB free; held by XCodec2 (1.5 GiB, leased)". "" when this
 * thread has had no failure. Valid until the thread's next failing call. */
VRAM_API const char *vram_last_error(void);

/* Records a detailed message for the calling thread and returns err, so
 * that a load callback (or an embedder's own layer) can say why it failed:
 * `return vram_set_error(VRAM_ELOAD, "checkpoint %s: %s", path, why);`.
 * A load callback's message becomes the model's last_error. */
VRAM_API int vram_set_error(int err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The largest number of seconds any timeout or wait accepts (10 years of
 * 365 days); every surface checks against this one value. */
#define VRAM_SECONDS_MAX 315360000.0
/* Longest model name, in bytes. */
#define VRAM_NAME_MAX 128

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */
/* ------------------------------------------------------------------------ */
typedef struct vram_manager vram_manager; /* registry, budgets, idle monitor */
typedef struct vram_model vram_model;     /* one named model, owned by its manager */
typedef struct vram_lease vram_lease;     /* proof that a model is on the device */

/* ------------------------------------------------------------------------ */
/* Configuration. One table of options (see vram_options_print); every      */
/* option has a default, an environment variable and a parser. Flags,       */
/* environment and .env all go through vram_config_set().                   */
/* ------------------------------------------------------------------------ */
typedef enum vram_backend_kind {
    VRAM_BACKEND_AUTO = 0, /* cuda when a driver and a device exist, else host */
    VRAM_BACKEND_HOST = 1, /* device memory emulated in host RAM */
    VRAM_BACKEND_CUDA = 2
} vram_backend_kind;

typedef enum vram_log_level {
    VRAM_LOG_ERROR = 0,
    VRAM_LOG_WARN = 1,
    VRAM_LOG_INFO = 2,
    VRAM_LOG_DEBUG = 3
} vram_log_level;

/* A size that is either absolute bytes or a fraction of a capacity. */
typedef struct vram_size_spec {
    uint64_t bytes;  /* used when percent == 0 */
    double percent;  /* 0 < percent <= 100: that share of the capacity */
} vram_size_spec;

#define VRAM_STR_MAX 256

typedef struct vram_config {
    vram_backend_kind backend;   /* VRAM_BACKEND */
    double idle_timeout;         /* GPU_IDLE_TIMEOUT, seconds, default 600; 0 = never */
    double release_timeout;      /* VRAM_RELEASE_TIMEOUT, seconds, default 0 = never */
    vram_size_spec gpu_budget;   /* VRAM_GPU_BUDGET, default 100% of each device; 0 = all */
    vram_size_spec host_budget;  /* VRAM_HOST_BUDGET, default 0 = unlimited */
    uint64_t host_memory;        /* VRAM_HOST_MEMORY: emulated capacity per host device */
    int host_devices;            /* VRAM_HOST_DEVICES: emulated device count */
    double evict_wait;           /* VRAM_EVICT_WAIT: seconds an acquire waits for memory */
    vram_log_level log_level;    /* VRAM_LOG_LEVEL: error|warn|info|debug */
    uint64_t chunk_bytes;        /* VRAM_CHUNK: transfer chunk size */
    char visible_devices[VRAM_STR_MAX]; /* CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES */
    char cuda_library[VRAM_STR_MAX];    /* VRAM_CUDA_LIBRARY, default libcuda.so.1 */
    /* daemon and CLI options share the table */
    int port;                    /* VRAM_PORT, default 7861 */
    char bind[VRAM_STR_MAX];     /* VRAM_BIND, default 127.0.0.1 */
    char token[VRAM_STR_MAX];    /* VRAM_TOKEN (or the first line of VRAM_TOKEN_FILE), default
                                    empty = no auth */
    char url[VRAM_STR_MAX];      /* VRAM_URL, default http://127.0.0.1:7861 */
    /* Tests: a clock in seconds (monotonic) replacing the real one, the
     * monitor thread switched off (then vram_manager_tick drives it), and
     * the backend wrapped in the fault-injection decorator (internal
     * vram__backend_inject arms failures; costs one atomic load per call). */
    double (*clock)(void *user);
    void *clock_user;
    int no_monitor_thread;
    int fault_injection;
    char allowed_hosts[VRAM_STR_MAX]; /* VRAM_ALLOWED_HOSTS, default empty (at the end: added later) */
    /* The node (fields added later, at the end): */
    char node_socket[VRAM_STR_MAX]; /* VRAM_NODE_SOCKET, default /run/vram/node.sock; "off" =
                                       none. vramd listens there; every other manager joins
                                       it when it exists */
    char node_name[VRAM_STR_MAX];   /* VRAM_NODE_NAME: how this process is named in the node's
                                       view, default "" = the program's name */
    char host_shared[VRAM_STR_MAX]; /* VRAM_HOST_SHARED: "" = this process's own emulated
                                       devices; NAME = emulated devices shared by every
                                       process that names them (the host backend's stand-in
                                       for one GPU shared by several processes) */
} vram_config;

/* Fills cfg with the built-in defaults. */
VRAM_API void vram_config_init(vram_config *cfg);

/* Sets one option by its variable name ("GPU_IDLE_TIMEOUT", "VRAM_GPU_BUDGET")
 * from text. Returns VRAM_ECONFIG for an unknown name or a bad value and then
 * writes "VRAM_GPU_BUDGET: '12X' is not a size (use bytes with K/M/G/T, e.g.
 * 8G, or a percentage, e.g. 80%)" into err
 * (errlen bytes); cfg is unchanged on failure. */
VRAM_API int vram_config_set(vram_config *cfg, const char *name, const char *value,
                             char *err, size_t errlen);

/* Reads every option from the environment, then from the .env file at path
 * (NULL: "./.env"; a missing file is fine) for variables the environment
 * does not set. Returns VRAM_ECONFIG naming the variable and value on the
 * first bad one. */
VRAM_API int vram_config_load(vram_config *cfg, const char *env_path, char *err,
                              size_t errlen);

/* Writes one line per option: name, value, source, help. */
VRAM_API void vram_options_print(const vram_config *cfg, void *file /* FILE* */);

/* Parses "64M", "1.5G", "4096" (bytes, K/M/G/T powers of 1024). */
VRAM_API int vram_parse_size(const char *text, uint64_t *out);

/* Parses a duration as every timeout option reads it: "600", "90s", "10m",
 * "1.5h" (seconds >= 0, at most VRAM_SECONDS_MAX). Returns 0, or
 * VRAM_EINVAL with why in err ("'-5' is negative (use seconds >= 0, e.g.
 * 600, 90s, 10m or 1h)"); *out is unchanged on failure. The CLI, vramd's
 * --model options and the HTTP API all use it. */
VRAM_API int vram_parse_seconds(const char *text, double *out, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Logging: one line per event to stderr, or to a callback.                 */
/* ------------------------------------------------------------------------ */
typedef void (*vram_log_fn)(vram_log_level level, const char *line, void *user);
VRAM_API void vram_set_log_level(vram_log_level level);
VRAM_API void vram_set_log_callback(vram_log_fn fn, void *user); /* NULL: stderr */
/* Adds a listener that sees every line of level <= max_level besides (not
 * instead of) stderr or the callback, whatever vram_set_log_level says: for
 * an event log such as the dashboard's (libvram-server uses one). fn runs
 * with the log's lock held: it must be quick and must not log. Returns an
 * id > 0 for vram_log_unlisten, VRAM_EINVAL for a NULL fn, or VRAM_EHOSTMEM
 * when 8 listeners are there already. */
VRAM_API int vram_log_listen(vram_log_fn fn, void *user, vram_log_level max_level);
/* Removes a listener; once this returns, fn is not running and not called
 * again. An unknown id does nothing. */
VRAM_API void vram_log_unlisten(int id);
/* True when lines of this level are written (skip costly formatting). */
VRAM_API int vram_log_enabled(vram_log_level level);
/* Writes one event line through vram's log (timestamp and level added,
 * newlines folded), for embedders that want one log. */
VRAM_API void vram_log(vram_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ------------------------------------------------------------------------ */
/* Manager                                                                   */
/* ------------------------------------------------------------------------ */

/* Creates a manager over the backend cfg selects (NULL cfg: defaults plus
 * environment and .env). Starts the idle monitor thread. On failure *out is
 * NULL and nothing is left allocated. */
VRAM_API int vram_manager_create(const vram_config *cfg, vram_manager **out);

/* Releases every model (waiting for leases to end), stops the monitor and
 * frees everything. NULL does nothing. */
VRAM_API void vram_manager_destroy(vram_manager *m);

/* The process-wide manager (the seed's get_global_manager(idle_timeout)),
 * created on first call from the environment and .env; idle_timeout >= 0
 * overrides GPU_IDLE_TIMEOUT on that first call. NULL when creation fails
 * (the reason is logged). Destroyed at exit. */
VRAM_API vram_manager *vram_global_manager(double idle_timeout);

/* Name of the backend in use: "host" or "cuda". */
VRAM_API const char *vram_manager_backend(const vram_manager *m);

/* Sets the idle timeout of every model (the seed's update_all_timeout).
 * seconds >= 0 and finite, else VRAM_EINVAL; 0 = never offload on idle. */
VRAM_API int vram_manager_set_idle_timeout(vram_manager *m, double seconds);
/* Sets the release timeout of every model; 0 = never. */
VRAM_API int vram_manager_set_release_timeout(vram_manager *m, double seconds);

/* Offloads / releases every model. Models under a lease follow flags as
 * vram_model_offload does. Returns the first error, after trying all. */
VRAM_API int vram_manager_offload_all(vram_manager *m, unsigned flags);
VRAM_API int vram_manager_release_all(vram_manager *m, unsigned flags);

/* The status of every model as structs: vram_manager_models() below; as
 * the seed's JSON: vram_manager_status_json() in vram_server.h. */

/* True while the idle monitor thread runs. */
VRAM_API int vram_manager_monitor_running(vram_manager *m);
/* Runs the idle monitor's due work now, in the caller (tests with a fake
 * clock, or a manager made with no_monitor_thread). Returns how many models
 * it offloaded or released. */
VRAM_API int vram_manager_tick(vram_manager *m);
/* Wakes the monitor thread so that it recomputes its next deadline (after a
 * fake clock moved). */
VRAM_API void vram_manager_wake(vram_manager *m);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

/* The load step of a model: allocate device memory with vram_model_alloc
 * and fill it (vram_model_upload, or the device pointer directly on a
 * device the caller can write). Return 0, or a negative code; the manager
 * then frees whatever was allocated. Called without any manager lock held,
 * at most once at a time per model. */
typedef int (*vram_load_fn)(vram_model *model, void *user);

typedef struct vram_model_opts {
    const char *source;       /* "synthetic:SIZE[:SEED]", a .safetensors file, index or dir; or NULL */
    vram_load_fn load;        /* used when source is NULL */
    void *load_user;
    double idle_timeout;      /* seconds; < 0: the manager's */
    double release_timeout;   /* seconds; < 0: the manager's; 0 = never */
    int immediate_offload;    /* offload when the last lease ends */
    int device;               /* device index; < 0: device 0 */
} vram_model_opts;

/* Fills opts with defaults (no source, manager timeouts, device 0). */
VRAM_API void vram_model_opts_init(vram_model_opts *opts);

/* Registers a model under a unique name (1-128 printable characters).
 * Nothing is loaded. The model lives until the manager is destroyed or
 * vram_manager_unregister. VRAM_EEXIST for a taken name. */
VRAM_API int vram_manager_register(vram_manager *m, const char *name,
                                   const vram_model_opts *opts, vram_model **out);
/* Looks a model up by name; NULL when unknown. */
VRAM_API vram_model *vram_manager_find(vram_manager *m, const char *name);
/* Releases and forgets a model. VRAM_EBUSY under a lease. */
VRAM_API int vram_manager_unregister(vram_manager *m, const char *name);

VRAM_API const char *vram_model_name(const vram_model *model);

/* Inside a load function only: reserves and maps bytes of device memory in
 * this model and returns its device address. Addresses stay the same across
 * offload and restore. VRAM_ENOMEM when the device is full and nothing can
 * be evicted. */
VRAM_API int vram_model_alloc(vram_model *model, size_t bytes, void **dev_ptr);
/* Copies host bytes to / from a model's device memory (any backend). */
VRAM_API int vram_model_upload(vram_model *model, void *dev_ptr, const void *src,
                               size_t bytes);
VRAM_API int vram_model_download(vram_model *model, void *dst, const void *dev_ptr,
                                 size_t bytes);

/* Makes the model resident and returns a lease (the seed's get_model): the
 * first call loads, a call while offloaded restores, a call while on the
 * device only counts a lease. Concurrent callers share one load. Waits up to
 * VRAM_EVICT_WAIT for device memory, then VRAM_ENOMEM. On failure *out is
 * NULL and the model keeps its bytes (on the CPU after a failed restore,
 * unloaded after a failed load, with the reason in last_error). While an
 * offload or release asked for under a lease (VRAM_WAIT or VRAM_DEFER) is
 * pending, a new acquire does not overtake it: it waits for the last lease
 * to carry it out, then restores or loads. A thread that holds a lease on
 * the model and acquires it again while such work is pending waits for
 * itself: end your lease first. */
VRAM_API int vram_model_acquire(vram_model *model, vram_lease **out);

/* Ends a lease. The last lease to end of a model with immediate_offload,
 * or with an offload or release deferred to it, does that work in this
 * thread before returning. NULL does nothing. */
VRAM_API void vram_lease_end(vram_lease *lease);

/* The device address of the model's first allocation (its whole range for a
 * source-loaded model), valid while the lease lives. */
VRAM_API void *vram_lease_ptr(const vram_lease *lease);
VRAM_API vram_model *vram_lease_model(const vram_lease *lease);

/* Flags for offload and release. */
enum {
    VRAM_WAIT = 0,         /* under a lease: wait for the last lease to end, then act */
    VRAM_NOWAIT = 1u << 0, /* under a lease: fail with VRAM_EBUSY */
    VRAM_DEFER = 1u << 1   /* under a lease: leave it to the last lease's end; returns VRAM_DEFERRED */
};
#define VRAM_DEFERRED 1 /* positive: the work was handed to the last lease */

/* Copies the model to its host backup and frees its device memory, keeping
 * its addresses (the seed's force_offload). Nothing to do (already on the
 * CPU, or unloaded) is success. On failure the model stays on the device. */
VRAM_API int vram_model_offload(vram_model *model, unsigned flags);
/* Frees device memory and host backup; the next acquire loads again. */
VRAM_API int vram_model_release(vram_model *model, unsigned flags);

/* Per-model timeouts; seconds >= 0 and finite, else VRAM_EINVAL. */
VRAM_API int vram_model_set_idle_timeout(vram_model *model, double seconds);
VRAM_API int vram_model_set_release_timeout(vram_model *model, double seconds);
VRAM_API int vram_model_set_immediate_offload(vram_model *model, int on);

/* Model states (DESIGN.md's lifecycle). */
typedef enum vram_state {
    VRAM_STATE_UNLOADED = 0,
    VRAM_STATE_LOADING,
    VRAM_STATE_GPU,
    VRAM_STATE_OFFLOADING,
    VRAM_STATE_CPU,
    VRAM_STATE_RESTORING,
    VRAM_STATE_RELEASING
} vram_state;
VRAM_API vram_state vram_model_state(vram_model *model);
VRAM_API const char *vram_state_name(vram_state s); /* "unloaded", "gpu", ... */
/* The seed's location: "GPU", "CPU" or "未加载". */
VRAM_API const char *vram_state_location(vram_state s);
/* Bytes of the model (sum of its allocations), 0 when never loaded. */
VRAM_API uint64_t vram_model_bytes(vram_model *model);

/* Checksum of the model's bytes as they are now (on the device or in its
 * backup), computed on the device where the backend can. Takes a lease
 * when the model is on the device; does not load an unloaded model
 * (VRAM_ESTATE). */
VRAM_API int vram_model_checksum(vram_model *model, uint64_t *out);

/* The checksum function itself, over a host buffer: the same value the
 * device computes. The definition (all arithmetic modulo 2^64):
 *
 *   mix64(x):  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9;
 *              x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31
 *   G = 0x9e3779b97f4a7c15
 *   W_i = the i-th 8-byte little-endian word of the n bytes, i = 0 ..
 *         ceil(n/8) - 1, the last one zero-padded
 *   vram_checksum = sum_i mix64(W_i + i * G) + mix64(n ^ 0x5a5a5a5a5a5a5a5a)
 *
 * (so vram_checksum(NULL, 0) = mix64(0x5a5a5a5a5a5a5a5a)). Golden values,
 * computed from this text alone: tests/golden/golden.json. */
VRAM_API uint64_t vram_checksum(const void *data, size_t bytes);

/* Bytes of the synthetic source "synthetic:SIZE[:SEED]" at [offset, offset+n):
 * deterministic, any range computable on its own. The byte at offset o is
 * byte o % 8 (little-endian) of mix64(key ^ (o / 8) * G), with
 * key = mix64(seed + 0x1234567) and mix64, G as for vram_checksum. */
VRAM_API void vram_synthetic_fill(uint64_t seed, uint64_t offset, void *dst, size_t n);

/* ------------------------------------------------------------------------ */
/* Status as data. Each call takes one consistent snapshot under the        */
/* manager's lock. The structs grow only at their end: a caller passes      */
/* sizeof of the struct it was compiled with as `size`, and the library     */
/* fills that many bytes (so an older embedder keeps working with a newer   */
/* library, and a newer field reads as 0 from an older one). JSON for HTTP, */
/* MCP and the CLI is built from these in the server layer (vram_server.h). */
/* ------------------------------------------------------------------------ */
typedef struct vram_model_info {
    char name[VRAM_NAME_MAX + 8];
    vram_state state;            /* vram_state_name() / vram_state_location() */
    int device;                  /* device index */
    int leases;                  /* live leases */
    int immediate_offload;       /* offload at the end of the last lease */
    uint64_t bytes;              /* size of the model (its source's before the first load) */
    uint64_t tensors;            /* entries of its tensor table */
    double idle_seconds;         /* since the end of the last use, 0 while leased or unloaded */
    double idle_timeout;         /* effective, seconds; 0 = never */
    double release_timeout;      /* effective, seconds; 0 = never */
    uint64_t loads, offloads, restores, releases, evictions, failures;
    double last_load_seconds, last_offload_seconds, last_restore_seconds;
    double last_load_gbps, last_offload_gbps, last_restore_gbps; /* 1e9 bytes/s */
    double load_seconds_total, offload_seconds_total, restore_seconds_total;
    uint64_t progress_done;      /* bytes of a load in flight, */
    uint64_t progress_total;     /* of this many (both 0 unless loading) */
    char source[VRAM_STR_MAX];   /* "" for a callback model; valid UTF-8 */
    char last_error[512];        /* "" when none; valid UTF-8 */
} vram_model_info;

typedef struct vram_device_status {
    int index;
    char name[128];              /* "NVIDIA H200", "host-emulated device 0" */
    char uuid[64];               /* "GPU-..." on CUDA, "" when unknown */
    uint64_t total_bytes;        /* device memory */
    uint64_t free_bytes;         /* free now, as the device reports (every user) */
    uint64_t used_by_models_bytes; /* mapped by this manager's models */
    uint64_t charged_bytes;      /* counted against the budget (mapped or about to be) */
    uint64_t budget_bytes;       /* this manager's budget on the device */
} vram_device_status;

typedef struct vram_manager_info {
    char backend[16];            /* "host", "cuda" */
    int devices;
    int models;
    int monitor_running;
    double idle_timeout;         /* the manager's defaults, seconds */
    double release_timeout;
    uint64_t host_budget_bytes;  /* 0 = unlimited */
    uint64_t host_used_bytes;    /* bytes of host backups */
    char backend_error[512];     /* "" while the backend works; else why it cannot (a sticky
                                    CUDA error: every later call fails, restart the process) */
} vram_manager_info;

/* sizeof of a public struct as this library was built, by its name
 * ("vram_model_info", "vram_device_status", "vram_manager_info",
 * "vram_model_opts", "vram_tensor_info", "vram_config"); 0 for an unknown
 * name. For language bindings that mirror the structs (ctypes, cffi): they
 * check their layout against it at import (libuv's uv_handle_size idea). */
VRAM_API size_t vram_struct_size(const char *name);

/* One model's status. VRAM_EINVAL for a NULL argument or a size of 0. */
VRAM_API int vram_model_get_info(vram_model *model, vram_model_info *out, size_t size);
/* Every model's status in registration order, in one snapshot: fills up to
 * cap entries of out (each `size` bytes apart) and returns how many models
 * there are (more than cap means the array was too small), or a negative
 * code. out may be NULL with cap 0 to count. */
VRAM_API int vram_manager_models(vram_manager *m, vram_model_info *out, size_t cap,
                                 size_t size);
/* Every device's status, with the backend's live free figure; as above. */
VRAM_API int vram_manager_devices(vram_manager *m, vram_device_status *out, size_t cap,
                                  size_t size);
VRAM_API int vram_manager_get_info(vram_manager *m, vram_manager_info *out, size_t size);

/* ------------------------------------------------------------------------ */
/* Tensors of a model loaded from a safetensors source. The table is fixed  */
/* once the model is loaded and device addresses survive offload/restore.   */
/* ------------------------------------------------------------------------ */
#define VRAM_MAX_DIMS 8
typedef struct vram_tensor_info {
    const char *name;   /* valid while the model stays loaded */
    const char *dtype;  /* "F32", "BF16", "F8_E4M3", ... */
    int ndim;
    int64_t shape[VRAM_MAX_DIMS];
    uint64_t offset;    /* from the start of the model's range */
    uint64_t bytes;
    void *dev_ptr;      /* device address */
} vram_tensor_info;

/* Number of tensors (0 for a synthetic or callback model, or not loaded). */
VRAM_API size_t vram_model_tensor_count(vram_model *model);
/* The i-th tensor, in file order; VRAM_EINVAL out of range. */
VRAM_API int vram_model_tensor(vram_model *model, size_t i, vram_tensor_info *out);
/* A tensor by name; VRAM_ENOENT when absent. */
VRAM_API int vram_model_find_tensor(vram_model *model, const char *name,
                                    vram_tensor_info *out);

/* Progress of a load in flight: bytes done and total (both 0 when idle). */
VRAM_API void vram_model_load_progress(vram_model *model, uint64_t *done,
                                       uint64_t *total);

/* ------------------------------------------------------------------------ */
/* For tools: what vramd and vramctl need beyond the embedding API above:   */
/* the option table's command-line flags, the GPU picker, the checksum in   */
/* pieces. Stable like the rest, but of little use to an embedder.          */
/* ------------------------------------------------------------------------ */

/* Sets the option whose command-line flag is flag ("--port", "--gpu-budget",
 * "--url") from value, as vram_config_set does for its variable; the message
 * in err (errlen bytes) names the flag. With value NULL a flag written
 * "--port=7000" is split at the '='. Returns 0, or VRAM_ECONFIG for an
 * unknown flag or a bad value; cfg is unchanged on failure. */
VRAM_API int vram_config_set_flag(vram_config *cfg, const char *flag, const char *value,
                                  char *err, size_t errlen);

/* Where the value of option name (a variable, "VRAM_PORT") in cfg came
 * from: "default", "set", "flag", "env" or ".env"; NULL for an unknown
 * name. vramctl finds vramd's port this way, as vramd found it. */
VRAM_API const char *vram_config_source(const vram_config *cfg, const char *name);

/* 1 when flag ("--port", or "--port=7000") is an option of the table. */
VRAM_API int vram_config_has_flag(const char *flag);

/* Looks for variables in the .env file at path (NULL: "./.env") that the
 * table does not know although they look like its own (VRAM_* and GPU_*
 * names, or any name within two edits of a known one): such a line is
 * ignored by vram_config_load, as the seed's other keys are. Writes one
 * warning line per such variable into out (len bytes), naming the nearest
 * known variable (".env:3: VRAM_GPU_BUGDET is not a vram variable and is
 * ignored (did you mean VRAM_GPU_BUDGET?)"), and returns how many. A
 * missing file gives 0. */
VRAM_API int vram_config_env_warnings(const char *path, char *out, size_t len);

/* Writes one --help line per option of the table to file (a FILE*; NULL:
 * stdout): "  --gpu-budget SIZE|PCT   VRAM_GPU_BUDGET, default 100%: help". */
VRAM_API void vram_config_print_help(void *file /* FILE* */);

/* Picks the idlest GPU as NVML reports it: the most free memory, free
 * memory within 256 MiB of the most counting as a tie; among ties the
 * lowest utilization, then the most free memory, then the lowest index (a
 * device that cannot report utilization, MIG, ranks last). NVML is $VRAM_NVML_LIBRARY, else libnvidia-ml.so.1, loaded, used
 * and shut down within the call; the CUDA driver is not touched and the
 * environment is left alone. On success writes the device's UUID
 * ("GPU-...") into uuid_out (len bytes), its NVML index into *index_out
 * (when not NULL; NVML counts by PCI bus, which may differ from CUDA's
 * order: pin by UUID) and one line telling why into why (whylen bytes),
 * and returns 0. Without NVML or without a device returns VRAM_ENODEV with
 * the reason in why, and makes no guess. */
VRAM_API int vram_gpu_pick(char *uuid_out, size_t len, int *index_out, char *why,
                           size_t whylen);

/* vram_checksum in pieces, for data that never sits in one buffer: start
 * with sum = 0, add each piece with vram_checksum_update (offset = where
 * the piece starts in the whole, a multiple of 8; so every piece but the
 * last is a multiple of 8 bytes long), then vram_checksum_finish with the
 * whole length. vram_checksum(p, n) equals
 * vram_checksum_finish(vram_checksum_update(0, p, n, 0), n). Pieces may be
 * added in any order (the sum is commutative). An offset that is not a
 * multiple of 8 gives a meaningless sum. */
VRAM_API uint64_t vram_checksum_update(uint64_t sum, const void *data, size_t bytes,
                                       uint64_t offset);
VRAM_API uint64_t vram_checksum_finish(uint64_t sum, uint64_t total_bytes);

#ifdef __cplusplus
}
#endif
#endif /* VRAM_H */
