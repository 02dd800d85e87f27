/* dl.h - binding a shared library's entry points from a table: open once, versioned names, required or optional. */
#ifndef VRAM_DL_H
#define VRAM_DL_H

#include <stddef.h>

/* One entry point: its exported name, an older name with the same
 * signature tried when the first is absent (or NULL), where the function
 * pointer goes in the caller's table (offsetof), and whether the library
 * is unusable without it. An optional one that is absent is left NULL. */
typedef struct vram_dl_sym {
    const char *name;
    const char *alt;
    size_t off;
    int required;
} vram_dl_sym;

/* A library handle with what the last open said. Zero it before the first
 * vram__dl_open. */
typedef struct vram_dl {
    void *lib;           /* NULL until open succeeds, and after close */
    char path[256];      /* the name it was opened by */
    const char *missing; /* after VRAM_DL_ENOSYM: the required entry point absent */
    char dlerr[384];     /* after VRAM_DL_ENOLIB: dlerror's text */
    char msg[768];       /* after a failure: "cannot load 'x': <dlerror>" or "'x' has no cuInit" */
} vram_dl;

enum { VRAM_DL_ENOLIB = -1, VRAM_DL_ENOSYM = -2 };

/*
 * Opens path with dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE: a driver
 * may start threads that must never see its code unmapped) and binds every
 * entry of syms[0..n) into api. Idempotent: a handle already open returns
 * 0 at once. Returns 0; VRAM_DL_ENOLIB when the library cannot be opened,
 * or VRAM_DL_ENOSYM when a required entry point is missing (dl->missing
 * names it): then dl->msg says why, the library reference is dropped and
 * every pointer of syms in api is NULL. Sets no error of its own (callers
 * word their VRAM_ENODEV message with dl->msg). Not thread-safe per dl.
 */
int vram__dl_open(vram_dl *dl, const char *path, const vram_dl_sym *syms, size_t n, void *api);

/* Drops the library reference (NODELETE: the code stays mapped) and sets
 * the pointers of syms in api to NULL. Idempotent. */
void vram__dl_close(vram_dl *dl, const vram_dl_sym *syms, size_t n, void *api);

#endif /* VRAM_DL_H */
