/* models.h - models at run time in the server: the spec parser's helpers, the registry lock, the register/unregister/reopen commands. */
#ifndef VRAM_SERVER_MODELS_H
#define VRAM_SERVER_MODELS_H

#include <jansson.h>

#include "server/commands.h"
#include "vram_server.h"

/* "1", "true", "yes", "on" -> 1; "0", "false", "no", "off" -> 0 (any case);
 * -1 for anything else. The one boolean of --model, PATCH and .env-like text. */
int vram__parse_bool(const char *v, int *out);

/* The vram_model_opts of s (o->source points into s). */
void vram__spec_opts(const vram_model_spec *s, vram_model_opts *o);

/* The keys of a model's options, NULL-terminated. */
const char *const *vram__model_option_keys(void);

/*
 * THE REGISTRY LOCK: a model handle found by name stays valid only while
 * nobody unregisters it. Every command that uses a model runs under the
 * read side (vram__command_run takes it); registering, unregistering and
 * reopening take the write side, waiting at most a few seconds for the
 * commands in flight (then VRAM_EBUSY). Never held while taking another
 * server lock.
 */
void vram__registry_read_lock(void);
void vram__registry_read_unlock(void);

/* Before a load or run of args.model: when the model is unloaded (never
 * loaded, or released) and the file of its source changed on disk since it
 * was opened, opens it again (vram_server_reopen) so that the load reads
 * the new file. Takes the registry lock itself: call it holding none.
 * Returns 0 when nothing was to do or the reopen worked. */
int vram__reopen_if_changed(vram_manager *m, json_t *args);

/* The commands of the table (commands.c lists them). */
int vram__cmd_register(vram_manager *m, json_t *args, vram__cmd_result *res);
int vram__cmd_unregister(vram_manager *m, json_t *args, vram__cmd_result *res);
int vram__cmd_reopen(vram_manager *m, json_t *args, vram__cmd_result *res);

#endif /* VRAM_SERVER_MODELS_H */
