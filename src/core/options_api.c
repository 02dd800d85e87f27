/* options_api.c - questions about the option table for tools: is a flag known, which variable did a .env line mean. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "vram.h"

int vram_config_has_flag(const char *flag)
{
    if (!flag) return 0;
    size_t n = strcspn(flag, "=");
    for (size_t i = 0; i < vram__config_option_count(); i++) {
        const vram__option_desc *d = vram__config_option(i);
        if (d->flag && strlen(d->flag) == n && strncmp(d->flag, flag, n) == 0) return 1;
    }
    return 0;
}

/* Edit distance of a and b (both short), case-insensitive. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t sub = diag + (toupper((unsigned char)a[i - 1]) != toupper((unsigned char)b[j - 1]));
            size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            diag = up;
        }
    }
    return row[lb];
}

/* The known variable nearest to key, and its distance. */
static const char *nearest(const char *key, size_t *dist)
{
    const char *best = NULL;
    *dist = 99;
    for (size_t i = 0; i < vram__config_option_count(); i++) {
        const vram__option_desc *d = vram__config_option(i);
        const char *names[2] = {d->name, d->alias};
        for (int k = 0; k < 2; k++) {
            if (!names[k]) continue;
            if (strcmp(names[k], key) == 0) {
                *dist = 0;
                return names[k];
            }
            size_t e = distance(key, names[k]);
            if (e < *dist) {
                *dist = e;
                best = names[k];
            }
        }
    }
    return best;
}

/* One .env line: the warning for its key, if any, appended to out. */
static int check_line(const char *path, int lineno, const char *line, char *out, size_t len)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncmp(p, "export ", 7) == 0) p += 7;
    char key[64];
    size_t n = 0;
    while ((isalnum((unsigned char)p[n]) || p[n] == '_') && n < sizeof key - 1)
        n++;
    if (!n || p[n + strspn(p + n, " \t")] != '=') return 0;
    memcpy(key, p, n);
    key[n] = '\0';
    size_t dist;
    const char *best = nearest(key, &dist);
    if (dist == 0) return 0;
    int ours = !strncmp(key, "VRAM_", 5) || !strncmp(key, "GPU_", 4);
    if (!ours && dist > 2) return 0; /* another program's variable */
    size_t used = strlen(out);
    if (best && dist <= 4)
        snprintf(out + used, len - used, "%s:%d: %s is not a vram variable and is ignored (did "
                 "you mean %s?)\n", path, lineno, key, best);
    else
        snprintf(out + used, len - used, "%s:%d: %s is not a vram variable and is ignored (see "
                 "vramd --help)\n", path, lineno, key);
    return 1;
}

int vram_config_env_warnings(const char *path, char *out, size_t len)
{
    if (!out || !len) return VRAM_EINVAL;
    out[0] = '\0';
    const char *file = path ? path : "./.env";
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    char line[4096];
    int count = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        count += check_line(path ? path : ".env", lineno, line, out, len);
    }
    fclose(f);
    return count;
}

const char *vram_config_source(const vram_config *cfg, const char *name)
{
    return cfg && name ? vram__config_source(cfg, name, NULL) : NULL;
}
