/* status_json.h - the status structs of vram.h as JSON: the seed's fields, models, devices. */
#ifndef VRAM_SERVER_STATUS_JSON_H
#define VRAM_SERVER_STATUS_JSON_H

#include <jansson.h>

#include "vram_server.h"

/* A snapshot of a manager: its info, every model and every device, taken
 * with the public status functions. Free with vram__snapshot_free. */
typedef struct vram__snapshot {
    vram_manager_info info;
    vram_model_info *models;
    size_t nmodels;
    vram_device_status *devices;
    size_t ndevices;
} vram__snapshot;

/* Takes a snapshot (devices too when with_devices). 0 or VRAM_EHOSTMEM. */
int vram__snapshot_take(vram_manager *m, int with_devices, vram__snapshot *out);
void vram__snapshot_free(vram__snapshot *s);
/* The model called name in s, or NULL. */
const vram_model_info *vram__snapshot_find(const vram__snapshot *s, const char *name);

/* One model's status object (the seed's fields first). */
json_t *vram__model_json(const vram__snapshot *s, const vram_model_info *mi);
/* Every model, keyed by name (the seed's get_all_status). */
json_t *vram__status_json(const vram__snapshot *s);
/* The devices array of GET /api/v1/devices. */
json_t *vram__devices_json(const vram__snapshot *s);

/* A byte count as the seed's *_gb fields show it: GiB (1024^3), 3 decimals. */
json_t *vram__json_gb(uint64_t bytes);
/* v rounded to 1/scale (scale 1e3: three decimals). */
double vram__round(double v, double scale);

/* The JSON text of o (order kept), then decref'd. NULL when out of memory. */
char *vram__json_text(json_t *o);

#endif /* VRAM_SERVER_STATUS_JSON_H */
