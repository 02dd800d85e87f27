/* error.c - error names, and the calling thread's detailed message of its last failure. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"

const char *vram_strerror(int err)
{
    switch (err) {
    case VRAM_OK: return "success";
#define VRAM_ERR_MSG_(name, val, msg) case VRAM_##name: return msg;
        VRAM_ERRNO_MAP(VRAM_ERR_MSG_)
#undef VRAM_ERR_MSG_
    default: return "unknown error";
    }
}

const char *vram_err_name(int err)
{
    switch (err) {
    case VRAM_OK: return "OK";
#define VRAM_ERR_NAME_(name, val, msg) case VRAM_##name: return #name;
        VRAM_ERRNO_MAP(VRAM_ERR_NAME_)
#undef VRAM_ERR_NAME_
    default: return "UNKNOWN";
    }
}

static _Thread_local char tls_errmsg[VRAM_ERRMSG_MAX];

int vram__errorf(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_errmsg, sizeof tls_errmsg, fmt, ap);
    va_end(ap);
    return err;
}

int vram__errorf_to(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_errmsg, sizeof tls_errmsg, fmt, ap);
    va_end(ap);
    if (err && errlen) snprintf(err, errlen, "%s", tls_errmsg);
    return code;
}

const char *vram__last_error(void) { return tls_errmsg; }

void vram__clear_error(void) { tls_errmsg[0] = '\0'; }


const char *vram_last_error(void) { return tls_errmsg; }

int vram_set_error(int err, const char *fmt, ...)
{
    if (!fmt) {
        tls_errmsg[0] = '\0';
        return err;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_errmsg, sizeof tls_errmsg, fmt, ap);
    va_end(ap);
    return err;
}
