/* dashboard.h - the dashboard page (src/server/dashboard.html), built into the library by cmake/scripts/embed.cmake. */
#ifndef VRAM_SERVER_DASHBOARD_H
#define VRAM_SERVER_DASHBOARD_H

#include <stddef.h>

extern const unsigned char vram__dashboard_html[]; /* the page's bytes, then a NUL */
extern const size_t vram__dashboard_html_len;      /* without the NUL */

#endif /* VRAM_SERVER_DASHBOARD_H */
