/* model_spec.c - the one parser of NAME=SOURCE[,key=value...] and of a model's options, for vramd, HTTP, MCP and vramctl. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/models.h"
#include "vram_server.h"

static const char *const model_keys[] = {"idle_timeout", "release_timeout", "immediate_offload",
                                         "device", NULL};

void vram_model_spec_init(vram_model_spec *s)
{
    if (!s) return;
    memset(s, 0, sizeof *s);
    s->idle_timeout = -1;
    s->release_timeout = -1;
    s->device = -1;
}

int vram__parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) return *out = 1, 0;
        if (!strcasecmp(v, no[i])) return *out = 0, 0;
    }
    return -1;
}

static int spec_error(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen) snprintf(err, errlen, fmt, a, b);
    return VRAM_EINVAL;
}

int vram_model_spec_option(vram_model_spec *s, const char *key, const char *value, char *err,
                           size_t errlen)
{
    if (!s || !key || !value) return spec_error(err, errlen, "%s%sno option given", "", "");
    char why[400];
    if (!strcmp(key, "idle_timeout") || !strcmp(key, "release_timeout")) {
        double v;
        if (vram_parse_seconds(value, &v, why, sizeof why) < 0)
            return spec_error(err, errlen, "%s: %s", key, why);
        if (key[0] == 'i')
            s->idle_timeout = v;
        else
            s->release_timeout = v;
        return 0;
    }
    if (!strcmp(key, "immediate_offload")) {
        int on;
        if (vram__parse_bool(value, &on) < 0)
            return spec_error(err, errlen, "immediate_offload: '%.64s' is not %s", value,
                              "true or false (1/0, yes/no, on/off)");
        s->immediate_offload = on;
        return 0;
    }
    if (!strcmp(key, "device")) {
        char *end = NULL;
        long d = strtol(value, &end, 10);
        if (end == value || *end || d < 0 || d > 1023)
            return spec_error(err, errlen, "device: '%.64s' is not %s", value, "a device index");
        s->device = (int)d;
        return 0;
    }
    return spec_error(err, errlen, "unknown option '%.64s'%s", key,
                      " (known: idle_timeout, release_timeout, immediate_offload, device)");
}

/* When p (just after a comma) starts "key=", the key's length, else 0. */
static size_t option_key(const char *p)
{
    size_t n = 0;
    while (p[n] && (islower((unsigned char)p[n]) || p[n] == '_'))
        n++;
    return n && p[n] == '=' ? n : 0;
}

/* The ",key=value" options that follow the source. */
static int parse_options(vram_model_spec *s, const char *opts, char *err, size_t errlen)
{
    while (opts) {
        const char *k = opts + 1;
        size_t kl = option_key(k);
        if (!kl) return spec_error(err, errlen, "expected key=value after ','%s%s", "", "");
        const char *v = k + kl + 1;
        const char *next = strchr(v, ',');
        size_t vl = next ? (size_t)(next - v) : strlen(v);
        char key[32], val[128];
        if (kl >= sizeof key || vl >= sizeof val)
            return spec_error(err, errlen, "option '%.32s...' is too long%s", k, "");
        memcpy(key, k, kl);
        key[kl] = '\0';
        memcpy(val, v, vl);
        val[vl] = '\0';
        int rc = vram_model_spec_option(s, key, val, err, errlen);
        if (rc < 0) return rc;
        opts = next;
    }
    return 0;
}

int vram_model_spec_parse(vram_model_spec *s, const char *text, char *err, size_t errlen)
{
    if (!s || !text) return spec_error(err, errlen, "no model given%s%s", "", "");
    vram_model_spec_init(s);
    const char *eq = strchr(text, '=');
    if (!eq || eq == text || !eq[1])
        return spec_error(err, errlen, "expected NAME=SOURCE, e.g. Llasa-8B=synthetic:1G%s%s", "",
                          "");
    size_t nl = (size_t)(eq - text);
    if (nl > VRAM_NAME_MAX)
        return spec_error(err, errlen, "the name is longer than %s bytes%s", "128", "");
    memcpy(s->name, text, nl);
    s->name[nl] = '\0';
    const char *src = eq + 1, *p = src, *opts = NULL;
    for (; (p = strchr(p, ',')) != NULL; p++) /* the source runs up to the first ",key=" */
        if (option_key(p + 1)) {
            opts = p;
            break;
        }
    size_t sl = opts ? (size_t)(opts - src) : strlen(src);
    if (sl == 0) return spec_error(err, errlen, "the source is empty%s%s", "", "");
    if (sl >= sizeof s->source) return spec_error(err, errlen, "the source is too long%s%s", "", "");
    memcpy(s->source, src, sl);
    s->source[sl] = '\0';
    vram_model_spec tmp = *s;
    int rc = parse_options(&tmp, opts, err, errlen);
    if (rc < 0) return rc;
    *s = tmp;
    return 0;
}

void vram__spec_opts(const vram_model_spec *s, vram_model_opts *o)
{
    vram_model_opts_init(o);
    o->source = s->source;
    o->idle_timeout = s->idle_timeout;
    o->release_timeout = s->release_timeout;
    o->immediate_offload = s->immediate_offload;
    o->device = s->device;
}

const char *const *vram__model_option_keys(void)
{
    return model_keys;
}
