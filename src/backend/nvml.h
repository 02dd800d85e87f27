/* nvml.h - picking the idlest GPU through NVML (loaded at run time) and pinning it by UUID. */
#ifndef VRAM_NVML_H
#define VRAM_NVML_H

#include <stddef.h>

/*
 * Chooses the device with the most free memory, then the lowest GPU
 * utilization, as NVML reports them. Free memory within
 * VRAM_NVML_FREE_TIE bytes of the most counts as a tie (a few MiB of
 * driver bookkeeping should not outweigh a busy GPU); among ties the lowest
 * utilization wins, then the most free memory, then the lowest index. A
 * device whose utilization NVML cannot report (MIG) ranks after those that
 * report it.
 *
 * The library is $VRAM_NVML_LIBRARY, else libnvidia-ml.so.1. On success
 * writes the device's UUID ("GPU-...") into uuid_out (len bytes), its NVML
 * index into *index_out (when not NULL; NVML orders by PCI bus, which may
 * differ from CUDA's order: pin by UUID) and one line telling why into why
 * ("GPU 1 GPU-... (NVIDIA H200): 139.2 GiB free of 140.0, 3% busy; GPU 0:
 * ..."), and returns 0. Without NVML or without any device it returns
 * VRAM_ENODEV and writes the reason into why (the library name and dlerror,
 * or NVML's own error), and makes no guess. NVML is initialized and shut
 * down within the call; nothing stays loaded but the library itself.
 */
#define VRAM_NVML_FREE_TIE ((unsigned long long)256 << 20)

int vram__nvml_pick(char *uuid_out, size_t len, int *index_out, char *why, size_t whylen);

/*
 * vram__nvml_pick, then CUDA_VISIBLE_DEVICES=<uuid> in the environment, so
 * that the CUDA driver, when it starts later in this process (or in a
 * child), sees that device only, as device 0. Call before anything starts
 * CUDA (the driver reads the variable once) and before other threads run
 * (setenv). Returns what vram__nvml_pick returns; the environment is left
 * untouched on failure.
 */
int vram__nvml_pin_best(char *uuid_out, size_t len, char *why, size_t whylen);

#endif /* VRAM_NVML_H */
