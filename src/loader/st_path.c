/* st_path.c - paths and plain file reads of the safetensors source: joining, the directory layout, regular files, exact reads. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "loader/st_internal.h"

/* See st_internal.h. */
int vram__st_pread_full(int fd, const char *path, void *dst, size_t n, uint64_t off)
{
    unsigned char *p = dst;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return vram__errorf(VRAM_EIO, "%s: read of %zu bytes at offset %" PRIu64 ": %s", path,
                                n, off, strerror(errno));
        }
        if (r == 0)
            return vram__errorf(
                VRAM_EIO, "%s: file ends at offset %" PRIu64 " (it shrank after it was validated)",
                path, off);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* See st_internal.h. */
uint64_t vram__st_le64(const unsigned char *b)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b[i];
    return n;
}

/* See st_internal.h. */
char *vram__st_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t o = a;
    if (a > 0 && dir[a - 1] != '/') p[o++] = '/';
    memcpy(p + o, name, b + 1);
    return p;
}

/* See st_internal.h. */
char *vram__st_path_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* See st_internal.h. */
int vram__st_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* See st_internal.h. */
int vram__st_open_regular(const char *path, int missing_code, int *fd_out, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vram__errorf(errno == ENOENT ? missing_code : VRAM_EIO, "%s: %s", path,
                            strerror(errno));
    if (fstat(fd, st) < 0) {
        int e = errno;
        close(fd);
        return vram__errorf(VRAM_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return vram__errorf(VRAM_EFORMAT, "%s: not a regular file", path);
    }
    *fd_out = fd;
    return 0;
}

/* See st_internal.h. */
int vram__st_resolve_dir(const char *dir, char **out, int *is_index)
{
    *out = NULL;
    char *p = vram__st_path_join(dir, "model.safetensors.index.json");
    if (!p) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    if (access(p, F_OK) == 0) {
        *out = p;
        *is_index = 1;
        return 0;
    }
    free(p);
    p = vram__st_path_join(dir, "model.safetensors");
    if (!p) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    if (access(p, F_OK) == 0) {
        *out = p;
        *is_index = 0;
        return 0;
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return vram__errorf(VRAM_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    char *one = NULL;
    int count = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !vram__st_ends_with(de->d_name, ".safetensors")) continue;
        if (++count == 1) one = strdup(de->d_name);
    }
    closedir(d);
    if (count == 0) {
        free(one);
        return vram__errorf(VRAM_EFORMAT,
                            "%s: no model.safetensors.index.json, model.safetensors or other "
                            "*.safetensors file in this directory",
                            dir);
    }
    if (count > 1) {
        free(one);
        return vram__errorf(VRAM_EFORMAT,
                            "%s: %d *.safetensors files but no model.safetensors.index.json to "
                            "say how they fit together",
                            dir, count);
    }
    if (!one) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    *out = vram__st_path_join(dir, one);
    free(one);
    if (!*out) return vram__errorf(VRAM_EHOSTMEM, "%s: out of host memory", dir);
    *is_index = 0;
    return 0;
}
