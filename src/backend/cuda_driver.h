/* cuda_driver.h - the CUDA driver API types and entry points vram uses, without the SDK. */
#ifndef VRAM_CUDA_DRIVER_H
#define VRAM_CUDA_DRIVER_H

/*
 * These declarations follow the driver API's published ABI (cuda.h of CUDA
 * 11 to 13): the values and layouts below are the ones the driver library
 * (libcuda.so.1) expects. Only what libvram, its driver test double and its
 * GPU benchmark use is declared. Functions are reached through pointers
 * bound with dlsym by their exported names, versioned ones included
 * ("cuMemGetInfo_v2"), never through cuda.h's macros.
 */

#include <stddef.h>

typedef int CUresult;                   /* enum cudaError_enum */
typedef int CUdevice;                   /* a device ordinal */
typedef unsigned long long CUdeviceptr; /* 64-bit device address (the _v2 ABI) */
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUmemGenericAllocationHandle;

typedef struct CUuuid_st {
    char bytes[16];
} CUuuid;

/* ---- CUresult values vram looks at (the rest are only reported) ---- */
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_STUB_LIBRARY = 34,
    CUDA_ERROR_DEVICE_UNAVAILABLE = 46,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_ECC_UNCORRECTABLE = 214,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_ALREADY_MAPPED = 208,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_NOT_MAPPED = 211,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_JIT_COMPILER_NOT_FOUND = 221,
    CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_ASSERT = 710,
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
    CUDA_ERROR_HARDWARE_STACK_ERROR = 714,
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715,
    CUDA_ERROR_MISALIGNED_ADDRESS = 716,
    CUDA_ERROR_INVALID_ADDRESS_SPACE = 717,
    CUDA_ERROR_INVALID_PC = 718,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_PERMITTED = 800,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906,
    CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908,
    CUDA_ERROR_UNKNOWN = 999
};

/* ---- device attributes ---- */
enum {
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING = 41,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102
};

/* ---- flags ---- */
#define CU_MEMHOSTALLOC_PORTABLE 0x01u
#define CU_MEMHOSTALLOC_DEVICEMAP 0x02u
#define CU_MEMHOSTREGISTER_PORTABLE 0x01u
#define CU_STREAM_NON_BLOCKING 0x1u

/* ---- stream capture (CUDA graphs) ---- */
#define CU_STREAM_LEGACY ((CUstream)0x1)     /* the legacy default ("null") stream */
#define CU_STREAM_PER_THREAD ((CUstream)0x2) /* the calling thread's per-thread default stream */
typedef enum CUstreamCaptureMode_e {
    CU_STREAM_CAPTURE_MODE_GLOBAL = 0,
    CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1,
    CU_STREAM_CAPTURE_MODE_RELAXED = 2
} CUstreamCaptureMode;
typedef enum CUstreamCaptureStatus_e {
    CU_STREAM_CAPTURE_STATUS_NONE = 0,
    CU_STREAM_CAPTURE_STATUS_ACTIVE = 1,
    CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2
} CUstreamCaptureStatus;

/* ---- virtual memory management (cuMemCreate and friends) ---- */
typedef enum CUmemAllocationType_e {
    CU_MEM_ALLOCATION_TYPE_INVALID = 0,
    CU_MEM_ALLOCATION_TYPE_PINNED = 1
} CUmemAllocationType;

typedef enum CUmemAllocationHandleType_e { CU_MEM_HANDLE_TYPE_NONE = 0 } CUmemAllocationHandleType;

typedef enum CUmemLocationType_e {
    CU_MEM_LOCATION_TYPE_INVALID = 0,
    CU_MEM_LOCATION_TYPE_DEVICE = 1
} CUmemLocationType;

typedef enum CUmemAccess_flags_e {
    CU_MEM_ACCESS_FLAGS_PROT_NONE = 0,
    CU_MEM_ACCESS_FLAGS_PROT_READ = 1,
    CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
} CUmemAccess_flags;

typedef enum CUmemAllocationGranularity_flags_e {
    CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0,
    CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1
} CUmemAllocationGranularity_flags;

typedef struct CUmemLocation_st {
    CUmemLocationType type;
    int id; /* the device ordinal for CU_MEM_LOCATION_TYPE_DEVICE */
} CUmemLocation;

typedef struct CUmemAllocationProp_st {
    CUmemAllocationType type;
    CUmemAllocationHandleType requestedHandleTypes;
    CUmemLocation location;
    void *win32HandleMetaData; /* must be NULL on Linux */
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
} CUmemAllocationProp;

typedef struct CUmemAccessDesc_st {
    CUmemLocation location;
    CUmemAccess_flags flags;
} CUmemAccessDesc;

/* ---- function types, one per entry point vram binds ---- */
typedef CUresult (*vram_cuInit_fn)(unsigned int flags);
typedef CUresult (*vram_cuDriverGetVersion_fn)(int *version);
typedef CUresult (*vram_cuGetErrorName_fn)(CUresult err, const char **name);
typedef CUresult (*vram_cuGetErrorString_fn)(CUresult err, const char **str);
typedef CUresult (*vram_cuDeviceGetCount_fn)(int *count);
typedef CUresult (*vram_cuDeviceGet_fn)(CUdevice *dev, int ordinal);
typedef CUresult (*vram_cuDeviceGetName_fn)(char *name, int len, CUdevice dev);
typedef CUresult (*vram_cuDeviceGetUuid_fn)(CUuuid *uuid, CUdevice dev);
typedef CUresult (*vram_cuDeviceTotalMem_fn)(size_t *bytes, CUdevice dev);
typedef CUresult (*vram_cuDeviceGetAttribute_fn)(int *value, int attrib, CUdevice dev);
typedef CUresult (*vram_cuDeviceCanAccessPeer_fn)(int *can, CUdevice dev, CUdevice peer);
typedef CUresult (*vram_cuDevicePrimaryCtxRetain_fn)(CUcontext *ctx, CUdevice dev);
typedef CUresult (*vram_cuDevicePrimaryCtxRelease_fn)(CUdevice dev);
typedef CUresult (*vram_cuDevicePrimaryCtxGetState_fn)(CUdevice dev, unsigned int *flags,
                                                       int *active);
typedef CUresult (*vram_cuCtxPushCurrent_fn)(CUcontext ctx);
typedef CUresult (*vram_cuCtxPopCurrent_fn)(CUcontext *ctx);
typedef CUresult (*vram_cuMemGetInfo_fn)(size_t *free_bytes, size_t *total_bytes);
typedef CUresult (*vram_cuMemGetAllocationGranularity_fn)(size_t *granularity,
                                                          const CUmemAllocationProp *prop,
                                                          CUmemAllocationGranularity_flags option);
typedef CUresult (*vram_cuMemAddressReserve_fn)(CUdeviceptr *ptr, size_t size, size_t alignment,
                                                CUdeviceptr addr, unsigned long long flags);
typedef CUresult (*vram_cuMemAddressFree_fn)(CUdeviceptr ptr, size_t size);
typedef CUresult (*vram_cuMemCreate_fn)(CUmemGenericAllocationHandle *handle, size_t size,
                                        const CUmemAllocationProp *prop, unsigned long long flags);
typedef CUresult (*vram_cuMemRelease_fn)(CUmemGenericAllocationHandle handle);
typedef CUresult (*vram_cuMemMap_fn)(CUdeviceptr ptr, size_t size, size_t offset,
                                     CUmemGenericAllocationHandle handle, unsigned long long flags);
typedef CUresult (*vram_cuMemUnmap_fn)(CUdeviceptr ptr, size_t size);
typedef CUresult (*vram_cuMemSetAccess_fn)(CUdeviceptr ptr, size_t size,
                                           const CUmemAccessDesc *desc, size_t count);
typedef CUresult (*vram_cuMemHostAlloc_fn)(void **p, size_t bytes, unsigned int flags);
typedef CUresult (*vram_cuMemFreeHost_fn)(void *p);
typedef CUresult (*vram_cuMemAlloc_fn)(CUdeviceptr *dptr, size_t bytes);
typedef CUresult (*vram_cuMemFree_fn)(CUdeviceptr dptr);
typedef CUresult (*vram_cuStreamCreate_fn)(CUstream *stream, unsigned int flags);
typedef CUresult (*vram_cuStreamDestroy_fn)(CUstream stream);
typedef CUresult (*vram_cuStreamSynchronize_fn)(CUstream stream);
typedef CUresult (*vram_cuStreamIsCapturing_fn)(CUstream stream, CUstreamCaptureStatus *status);
typedef CUresult (*vram_cuThreadExchangeStreamCaptureMode_fn)(CUstreamCaptureMode *mode);
typedef CUresult (*vram_cuMemcpyHtoDAsync_fn)(CUdeviceptr dst, const void *src, size_t bytes,
                                              CUstream stream);
typedef CUresult (*vram_cuMemcpyDtoHAsync_fn)(void *dst, CUdeviceptr src, size_t bytes,
                                              CUstream stream);
typedef CUresult (*vram_cuMemcpyHtoD_fn)(CUdeviceptr dst, const void *src, size_t bytes);
typedef CUresult (*vram_cuMemcpyDtoH_fn)(void *dst, CUdeviceptr src, size_t bytes);
typedef CUresult (*vram_cuCtxSynchronize_fn)(void);
typedef CUresult (*vram_cuMemHostRegister_fn)(void *p, size_t bytes, unsigned int flags);
typedef CUresult (*vram_cuMemHostUnregister_fn)(void *p);
typedef CUresult (*vram_cuEventCreate_fn)(CUevent *ev, unsigned int flags);
typedef CUresult (*vram_cuEventRecord_fn)(CUevent ev, CUstream stream);
typedef CUresult (*vram_cuEventSynchronize_fn)(CUevent ev);
typedef CUresult (*vram_cuEventElapsedTime_fn)(float *ms, CUevent start, CUevent end);
typedef CUresult (*vram_cuEventDestroy_fn)(CUevent ev);
typedef CUresult (*vram_cuStreamWaitEvent_fn)(CUstream stream, CUevent ev, unsigned int flags);
typedef CUresult (*vram_cuModuleLoadData_fn)(CUmodule *module, const void *image);
typedef CUresult (*vram_cuModuleUnload_fn)(CUmodule module);
typedef CUresult (*vram_cuModuleGetFunction_fn)(CUfunction *fn, CUmodule module, const char *name);
typedef CUresult (*vram_cuLaunchKernel_fn)(CUfunction f, unsigned int grid_x, unsigned int grid_y,
                                           unsigned int grid_z, unsigned int block_x,
                                           unsigned int block_y, unsigned int block_z,
                                           unsigned int shared_bytes, CUstream stream,
                                           void **params, void **extra);

/* ---- the checksum kernel's contract (cuda_checksum.cu, the double) ----
 * vram_checksum_kernel(const u64 *words, u64 nbytes, u64 first_word,
 *                      u64 *partials), launched with VRAM_CK_THREADS threads
 * per block and at most VRAM_CK_MAX_BLOCKS blocks: thread t of the grid sums
 * mix64(w_i + (first_word + i) * GOLDEN) over the word indices i = t, t +
 * stride, ... (stride = blocks * threads) of the nbytes / 8 whole words and,
 * if nbytes % 8, the zero-padded tail word at index nbytes / 8; block b
 * writes the sum of its threads to partials[b]. The host adds the partials. */
#define VRAM_CK_KERNEL_NAME "vram_checksum_kernel"
#define VRAM_CK_THREADS 256
#define VRAM_CK_MAX_BLOCKS 1024

#endif /* VRAM_CUDA_DRIVER_H */
