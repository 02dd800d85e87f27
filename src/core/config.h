/* config.h - the option table for the daemon: iteration, flags, sources, formatting. */
#ifndef VRAM_CONFIG_H
#define VRAM_CONFIG_H

#include <stddef.h>

#include "vram.h"

/* Longest .env line accepted, in bytes, without its line ending. */
#define VRAM_ENV_LINE_MAX 4096


/* One option of the table, as the daemon's --help shows it. Every string is
 * static; alias is NULL when the option has none. */
typedef struct vram__option_desc {
    const char *name;    /* variable: "VRAM_GPU_BUDGET" */
    const char *alias;   /* second variable: "VRAM_IDLE_TIMEOUT", or NULL */
    const char *flag;    /* daemon flag: "--gpu-budget" */
    const char *metavar; /* what the value looks like: "SIZE|PCT" */
    const char *def;     /* default as text: "100%" ("" for an empty string) */
    const char *help;    /* one line */
} vram__option_desc;

/* Number of options, and the i-th one in table order (NULL past the end). */
size_t vram__config_option_count(void);
const vram__option_desc *vram__config_option(size_t i);

/* Writes one help line per option to file (a FILE*; NULL: stdout):
 * "  --gpu-budget SIZE|PCT   VRAM_GPU_BUDGET, default 100%: help". */
void vram__config_print_help(void *file);

/* Sets the option whose flag is flag ("--port") from value, as
 * vram_config_set does; the error names the flag. With value NULL a flag
 * written "--port=7000" is split at the '='. Returns VRAM_ECONFIG for an
 * unknown flag or a bad value (cfg unchanged), 0 on success. */
int vram__config_set_flag(vram_config *cfg, const char *flag, const char *value, char *err,
                          size_t errlen);

/* Where the current value of option name (or alias) in cfg came from:
 * "default", "set" (vram_config_set), "flag", "env" or ".env". *via, when
 * via is not NULL, is set to the variable that was actually read (the alias
 * when the value came through it). Sources are remembered per cfg address
 * for the last few configs set up; a config that was copied or changed
 * directly reports "default" when its value equals the default, else "set".
 * NULL for an unknown name. */
const char *vram__config_source(const vram_config *cfg, const char *name, const char **via);

/* Writes the current value of option name in cfg as text, in a form that
 * vram_config_set accepts (sizes as "64M", seconds as "600"); the token is
 * written "(set)" or "" and never shown. Returns 0, or VRAM_ECONFIG for an
 * unknown name. */
int vram__config_format(const vram_config *cfg, const char *name, char *buf, size_t len);

/* cfg->visible_devices holds "" (every device), "none" (no device: from
 * "none" or "void"), or a validated comma-separated list of device indices
 * and GPU-/MIG- UUIDs ("0,2", "GPU-8f3c..."). "all" is stored as "". */

#endif /* VRAM_CONFIG_H */
