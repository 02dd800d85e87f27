/* host_shared.h - the host backend's shared capacity ledger: emulated devices that several processes share (internal). */
#ifndef VRAM_HOST_SHARED_H
#define VRAM_HOST_SHARED_H

#include <stddef.h>
#include <stdint.h>

#define VRAM_HOST_SHARED_DEVICES 16 /* devices one share can hold */
#define VRAM_HOST_SHARED_SLOTS 64   /* processes (backends) one share can hold */

/* This process's handle on a share: its slot in every device record. */
typedef struct vram_host_shared vram_host_shared;

/* What a device record held when a charge did not fit (or now). */
typedef struct vram_host_shared_usage {
    uint64_t capacity; /* bytes */
    uint64_t used;     /* bytes charged by all processes */
    uint64_t mine;     /* bytes charged through this handle */
} vram_host_shared_usage;

/* 1 when name is a share name: 1-64 of [A-Za-z0-9._-]. */
int vram__host_shared_name_ok(const char *name);

/* Opens (creating on first use) the share /vram-host-NAME and takes a slot
 * in each of its device records. *ndev and *capacity are this process's
 * wish on entry (used when this call creates the share) and the share's
 * figures on return (a warning is logged when they differ). Returns 0, or
 * VRAM_ECONFIG for a bad name, VRAM_EBACKEND when the share cannot be
 * opened, is malformed or has no free slot; *out is NULL on failure. */
int vram__host_shared_open(const char *name, int *ndev, uint64_t *capacity, vram_host_shared **out);

/* Gives the slots back (their bytes become free) and unmaps the share; the
 * share itself stays for the other processes. NULL does nothing. */
void vram__host_shared_close(vram_host_shared *s);

/* Charges bytes on device dev to this handle when they fit (after
 * reclaiming the slots of dead processes): returns 0, or 1 having charged
 * nothing with the record's figures in *why (may be NULL), or VRAM_EBACKEND
 * (message set) when the record's lock is unrecoverable. */
int vram__host_shared_charge(vram_host_shared *s, int dev, uint64_t bytes,
                             vram_host_shared_usage *why);

/* Gives back bytes charged on dev through this handle. Never fails. */
void vram__host_shared_uncharge(vram_host_shared *s, int dev, uint64_t bytes);

/* The record's figures now, dead processes reclaimed first. Returns 0 or
 * VRAM_EBACKEND (message set). */
int vram__host_shared_usage(vram_host_shared *s, int dev, vram_host_shared_usage *out);

/* The share's name (NAME of /vram-host-NAME). */
const char *vram__host_shared_name(const vram_host_shared *s);

/* Tests: takes dev's lock and keeps it, so that the caller (a child
 * process) can die holding it. Returns 0 or a VRAM error. */
int vram__host_shared_hold_lock(vram_host_shared *s, int dev);

/* Tests: makes this handle's slots look like those of an earlier process
 * that had the same pid (another start time), as after pid reuse. */
void vram__host_shared_fake_reuse(vram_host_shared *s);

#endif /* VRAM_HOST_SHARED_H */
