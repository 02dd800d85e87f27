/* units.c - vram_parse_seconds: the option table's duration parser (600, 90s, 10m, 1h) for every other surface. */
#include <stdio.h>
#include <string.h>

#include "vram.h"

int vram_parse_seconds(const char *text, double *out, char *err, size_t errlen)
{
    if (!text || !out) {
        if (err && errlen) snprintf(err, errlen, "no duration given");
        return VRAM_EINVAL;
    }
    /* through a scratch configuration: one parser and one limit */
    vram_config tmp;
    vram_config_init(&tmp);
    char msg[512];
    if (vram_config_set(&tmp, "VRAM_RELEASE_TIMEOUT", text, msg, sizeof msg) < 0) {
        const char *why = msg;
        const char *prefix = "VRAM_RELEASE_TIMEOUT";
        if (strncmp(why, prefix, strlen(prefix)) == 0) why += strlen(prefix);
        while (*why == ':' || *why == ' ' || *why == '=')
            why++;
        if (err && errlen) snprintf(err, errlen, "%s", why);
        return VRAM_EINVAL;
    }
    *out = tmp.release_timeout;
    return 0;
}
