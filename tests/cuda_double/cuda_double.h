/* cuda_double.h - the control API of the CUDA driver and NVML test doubles. */
#ifndef VRAM_CUDA_DOUBLE_H
#define VRAM_CUDA_DOUBLE_H

/*
 * libcuda_double.so implements the part of the CUDA driver API that libvram
 * uses, on host memory (see libcuda_double.c for the model). Environment,
 * read on first use and again after vram_double_configure(-1, 0):
 *   VRAM_DOUBLE_DEVICES       devices (default 1, 0-16)
 *   VRAM_DOUBLE_MEMORY        bytes per device, K/M/G suffixes (default 2G)
 *   VRAM_DOUBLE_GRANULARITY   allocation granularity (default 2M)
 *   VRAM_DOUBLE_FAIL          failures to inject: "FN:N:CODE[,...]" - the Nth
 *                             call of FN from now fails with CODE ("OOM",
 *                             "INVALID_VALUE", "NO_DEVICE", "UNSUPPORTED_PTX",
 *                             ..., a CUDA_ERROR_* name or a number); N "*"
 *                             fails every call
 *   VRAM_DOUBLE_LAZY          1: stream work runs only when synchronized
 *   VRAM_DOUBLE_VMM           0: devices report no virtual memory management
 *   VRAM_DOUBLE_PTX_ISA       newest PTX ISA the "JIT" accepts (default 9.0)
 *   VRAM_DOUBLE_QUIET         1: no line on stderr per API misuse
 *   CUDA_VISIBLE_DEVICES      honoured at the first cuInit, as the driver does
 *                             (indices and GPU-UUID prefixes)
 * Device i's UUID is GPU-d0b1e000-0000-4000-8000-<i as 12 hex digits>; the
 * NVML double uses the same ones.
 */

/* Counters of the double: what is alive now and what happened. */
typedef struct vram_double_stats {
    long reservations;           /* cuMemAddressReserve ranges alive */
    long allocations;            /* cuMemCreate handles alive (not yet destroyed) */
    long mappings;               /* cuMemMap mappings alive */
    long host_allocs;            /* cuMemHostAlloc blocks alive */
    long dev_allocs;             /* cuMemAlloc blocks alive */
    long streams;                /* streams alive */
    long modules;                /* modules loaded */
    long ctx_retained;           /* primary context references held, all devices */
    long violations;             /* API misuse seen (printed to stderr as it happens) */
    long async_copies;           /* cuMemcpy*Async calls accepted */
    long pageable_copies;        /* of those, with pageable host memory */
    long stream_syncs;           /* cuStreamSynchronize calls */
    long launches;               /* kernel launches accepted */
    long max_pending;            /* most operations ever queued on one stream at a sync */
    long host_registered;        /* cuMemHostRegister ranges alive */
    long pinned_alloc_bytes;     /* bytes ever pinned by cuMemHostAlloc (the slow path) */
    long pinned_register_bytes;  /* bytes ever pinned by cuMemHostRegister */
    long user_pending;           /* application work queued and not yet synchronized */
    long sticky_refusals;        /* calls refused with their context's sticky error */
    long capture_invalidations;  /* captures broken by a synchronizing call during capture */
    long pin_overlaps;           /* registrations that finished after a copy into the piece
                                    before them had started (flag "pin_gate") */
    unsigned long long used[16]; /* bytes allocated per physical device */
} vram_double_stats;

/* Control functions exported by libcuda_double.so (typedefs for dlsym). */
typedef int (*vram_double_configure_fn)(int devices, unsigned long long memory);
typedef int (*vram_double_set_fail_fn)(const char *spec);
typedef void (*vram_double_set_flag_fn)(const char *name, int value);
typedef long (*vram_double_calls_fn)(const char *fn);
typedef void (*vram_double_get_stats_fn)(vram_double_stats *out);
typedef int (*vram_double_ctx_depth_fn)(void);
typedef int (*vram_double_accessible_fn)(unsigned long long addr);
typedef int (*vram_double_user_work_fn)(unsigned long long addr, unsigned long long n);
typedef long (*vram_double_user_finish_fn)(void);
typedef int (*vram_double_set_sticky_fn)(int phys, int code);
typedef int (*vram_double_set_unusable_fn)(int phys, int code);
typedef int (*vram_double_access_fn)(unsigned long long addr, int phys);
typedef int (*vram_double_set_capture_fn)(int phys, int how);
typedef int (*vram_double_peer_work_fn)(int phys, unsigned long long addr, unsigned long long n);

/*
 * vram_double_configure(devices, memory): sets the device count and memory
 *   per device (devices < 0: read the environment again); only while nothing
 *   is alive (no context retained, no allocation): returns 0, or -1.
 *   Visibility (CUDA_VISIBLE_DEVICES) is read again at the next cuInit.
 * vram_double_set_fail(spec): replaces the injected failures (NULL or "":
 *   none); -1 for a malformed spec.
 * vram_double_set_flag(name, value): "lazy", "vmm", "quiet", "poison",
 *   "jit_ms" (cuModuleLoadData sleeps that long, as a PTX JIT takes time),
 *   "mig" (a mask of physical devices in MIG mode: cuDeviceGetUuid_v2 then
 *   gives the instance's UUID, cuDeviceGetUuid the GPU's), "peer" (default
 *   1: cuDeviceCanAccessPeer says 1 for every pair of distinct devices; 0:
 *   for none, and cuMemSetAccess granting a non-peer device is misuse
 *   answered CUDA_ERROR_INVALID_DEVICE), "pin_gate" (registering the range
 *   right after a registered one waits, at most 5 s, until a
 *   device-to-host copy into that one was queued, and counts pin_overlaps
 *   when it was: the order "copy of piece k started before registration of
 *   piece k+1 finished" made deterministic).
 * vram_double_calls(fn): calls of the named entry point so far.
 * vram_double_get_stats(out): the counters above.
 * vram_double_ctx_depth(): contexts pushed in the calling thread now.
 * vram_double_accessible(addr): 1 when addr is mapped and read/write, 0 when
 *   reserved without access, -1 when not a reserved device address.
 * vram_double_access(addr, phys): 1 when physical device phys has read/write
 *   access to the mapping at addr (cuMemSetAccess records the descriptors
 *   per mapping; a new mapping has none), 0 when not, -1 when addr is not
 *   mapped. Copies and kernels check the device of the current context.
 * vram_double_set_capture(phys, how): stream capture (a CUDA graph being
 *   recorded, as torch.cuda.graph does) in physical device phys's context:
 *   how 1 = a blocking stream is capturing (cuStreamIsCapturing on the
 *   legacy stream then answers CUDA_ERROR_STREAM_CAPTURE_IMPLICIT), 2 = the
 *   calling thread captures on its per-thread default stream
 *   (cuStreamIsCapturing(CU_STREAM_PER_THREAD) in that thread says ACTIVE),
 *   3 = a non-blocking stream no driver query can name is capturing, 4 =
 *   the same in global mode by another thread (torch.cuda.graph's default):
 *   then the "potentially unsafe" calls (allocating, mapping, registering
 *   memory, loading modules) from any thread whose mode is global
 *   (cuThreadExchangeStreamCaptureMode; the default) are misuse that
 *   invalidates the capture and fail with
 *   CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; 0 ends them. Meanwhile cuCtxSynchronize in that context is misuse: it
 *   invalidates the capture (counted in capture_invalidations) and returns
 *   CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED.
 * vram_double_peer_work(phys, addr, n): vram_double_user_work from a kernel
 *   on device phys (a model shared across GPUs); pending until
 *   cuCtxSynchronize in phys's context, whose primary context counts as
 *   active (cuDevicePrimaryCtxGetState) from then, as the application's. When phys has no access it is
 *   misuse: -1, and phys's context gets CUDA_ERROR_ILLEGAL_ADDRESS, sticky.
 * vram_double_user_work(addr, n): the application (PyTorch) queues a kernel
 *   on a stream of its own that uses [addr, addr+n) of mapped memory. It
 *   stays pending until cuCtxSynchronize in that device's context (or
 *   vram_double_user_finish). Meanwhile a cuMemcpy*Async touching it is a
 *   violation (a torn copy), and cuMemUnmap over it is a violation that
 *   gives the context CUDA_ERROR_ILLEGAL_ADDRESS, sticky, as the driver's
 *   unmap does not wait and the kernel faults. -1 when not mapped memory.
 * vram_double_user_finish(): the application's pending work completes on
 *   its own; returns how many were pending.
 * vram_double_set_sticky(phys, code): physical device phys's primary
 *   context gets a sticky error (0 clears): from then every call made in
 *   it fails with code, except pushing and popping it, device queries and
 *   cuInit; cuCtxSynchronize returns it.
 * vram_double_set_unusable(phys, code): cuDevicePrimaryCtxRetain on the
 *   physical device fails with code (CUDA_ERROR_DEVICE_UNAVAILABLE: an
 *   exclusive-process GPU another process holds); 0 clears.
 * Flag "poison" (VRAM_DOUBLE_POISON, default 1): new device memory is
 *   poison, never zeros: cuMemCreate memory holds the word
 *   0xdb0adb0adb0adb0a, cuMemAlloc blocks the byte 0xdb; memory given back
 *   is gone (its memfd closed), so a restore or load that skips bytes
 *   reads poison.
 * cuEventCreate/Record/Synchronize/ElapsedTime/Destroy_v2: timing events,
 *   recorded when their stream reaches them (bench_gpu's baseline).
 * cuMemHostRegister_v2 / cuMemHostUnregister pin and unpin caller memory;
 *   the stats count bytes pinned by each path (pinned_*_bytes).
 */

/* libnvml_double.so: NVML's device queries. Environment:
 *   VRAM_NVML_DOUBLE_DEVICES  "FREE:UTIL[:TOTAL],..." per device, sizes with
 *                             K/M/G suffixes, UTIL a percentage or "-" for
 *                             "not supported" (default "8G:0")
 *   VRAM_NVML_DOUBLE_INIT     an nvmlReturn_t for nvmlInit_v2 to fail with
 *                             (9 = NVML_ERROR_DRIVER_NOT_LOADED)
 * vram_nvml_double_set(devices, init_error): the same at run time (devices
 *   NULL: unchanged); -1 for a malformed spec.
 * vram_nvml_double_inits(): nvmlInit_v2 calls not yet shut down. */
typedef int (*vram_nvml_double_set_fn)(const char *devices, int init_error);
typedef int (*vram_nvml_double_inits_fn)(void);

#endif /* VRAM_CUDA_DOUBLE_H */
