/* dl.c - the table-driven dlopen binder shared by the CUDA driver and NVML loaders. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "base/dl.h"

static void clear_syms(const vram_dl_sym *syms, size_t n, void *api)
{
    void *null = NULL;
    for (size_t i = 0; i < n; i++)
        memcpy((char *)api + syms[i].off, &null, sizeof null);
}

int vram__dl_open(vram_dl *dl, const char *path, const vram_dl_sym *syms, size_t n, void *api)
{
    if (dl->lib) return 0;
    dl->missing = NULL;
    dl->msg[0] = dl->dlerr[0] = '\0';
    snprintf(dl->path, sizeof dl->path, "%s", path);
    clear_syms(syms, n, api);
    dlerror();
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!lib) {
        const char *e = dlerror();
        snprintf(dl->dlerr, sizeof dl->dlerr, "%s", e ? e : "unknown dlopen error");
        snprintf(dl->msg, sizeof dl->msg, "cannot load '%s': %s", path, dl->dlerr);
        return VRAM_DL_ENOLIB;
    }
    for (size_t i = 0; i < n; i++) {
        const vram_dl_sym *s = &syms[i];
        void *p = dlsym(lib, s->name);
        if (!p && s->alt) p = dlsym(lib, s->alt);
        if (!p && s->required) {
            dlclose(lib);
            clear_syms(syms, n, api);
            dl->missing = s->name;
            snprintf(dl->msg, sizeof dl->msg, "'%s' has no %s", path, s->name);
            return VRAM_DL_ENOSYM;
        }
        /* POSIX guarantees that a data pointer from dlsym converts to a
         * function pointer of the same size. */
        memcpy((char *)api + s->off, &p, sizeof p);
    }
    dl->lib = lib;
    return 0;
}

void vram__dl_close(vram_dl *dl, const vram_dl_sym *syms, size_t n, void *api)
{
    if (dl->lib) dlclose(dl->lib);
    dl->lib = NULL;
    if (api) clear_syms(syms, n, api);
}
