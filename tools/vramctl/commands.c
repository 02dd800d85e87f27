/* commands.c - vramctl's commands that talk to vramd: status, offload, load, run, devices... */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "table.h"
#include "vramctl.h"

/* ---- status ---- */

int cmd_status(int argc, char **argv)
{
    if (argc > 1) die(EXIT_USAGE, "status takes at most one MODEL");
    if (argc == 1) {
        if (status_remote(argv[0])) return 0; /* NAME@PID of another process */
        char path[1024];
        client_model_path(path, sizeof path, argv[0], "");
        json_t *one = client_call("GET", path, NULL);
        json_t *all = json_object();
        json_object_set_new(all, argv[0], one);
        table_status(all);
        json_decref(all);
        return 0;
    }
    json_t *all = client_call("GET", "/api/gpu/status", NULL);
    /* other processes on the node: their models too, with OWNER and PID */
    json_t *node = node_fetch();
    if (node && node_others(node) > 0)
        table_status_node(all, node, NULL);
    else if (!json_object_size(all))
        printf("no models (start vramd with --model NAME=SOURCE)\n");
    else
        table_status(all);
    json_decref(node);
    json_decref(all);
    return 0;
}

/* ---- offload, release, timeout ---- */

/* POST /api/gpu/offload or /api/gpu/release, for every model or one. */
static int move(const char *what, int argc, char **argv)
{
    if (argc > 1) die(EXIT_USAGE, "%s takes at most one MODEL", what);
    char path[64];
    snprintf(path, sizeof path, "/api/gpu/%s", what);
    json_t *body = argc == 1 ? json_pack("{s:s}", "model", argv[0]) : NULL;
    json_t *o = client_call("POST", path, body);
    table_items(o);
    json_decref(o);
    return 0;
}

int cmd_offload(int argc, char **argv)
{
    return move("offload", argc, argv);
}

int cmd_release(int argc, char **argv)
{
    return move("release", argc, argv);
}

int cmd_timeout(int argc, char **argv)
{
    if (argc < 1 || argc > 2) die(EXIT_USAGE, "usage: vramctl timeout SECONDS [MODEL]");
    /* the parser of --idle-timeout and GPU_IDLE_TIMEOUT: 600, 90s, 10m, 1h */
    double s = 0;
    char err[400];
    if (vram_parse_seconds(argv[0], &s, err, sizeof err) < 0)
        die(EXIT_USAGE, "timeout: %s", err);
    json_t *v = (floor(s) == s && fabs(s) < 9e15) ? json_integer((json_int_t)s) : json_real(s);
    json_t *body = json_pack("{s:o}", "timeout", v);
    if (argc == 2) json_object_set_new(body, "model", json_string(argv[1]));
    json_t *o = client_call("POST", "/api/gpu/timeout", body);
    printf("%s\n", json_string_value(json_object_get(o, "message")));
    json_decref(o);
    return 0;
}

/* ---- load, with progress ---- */

/* A load in flight: the POST .../load, and from time to time a GET of the
 * model's status whose progress goes to stderr when that is a terminal. */
typedef struct load_watch {
    const char *name;
    char show[1024]; /* the model's status path */
    int tty;         /* show progress */
    int shown;       /* a progress line is on the terminal */
    CURLM *multi;
    struct curl_slist *headers;
    CURL *load, *poll; /* poll: NULL between status requests */
    buf lb, sb;        /* their answers */
    struct timespec t0;
} load_watch;

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static void drop_poll(load_watch *w)
{
    curl_multi_remove_handle(w->multi, w->poll);
    curl_easy_cleanup(w->poll);
    w->poll = NULL;
    free(w->sb.data);
    w->sb.data = NULL;
    w->sb.len = 0;
}

/* A status request finished with rc: show its progress, make room for the
 * next one. */
static void poll_done(load_watch *w, CURLcode rc)
{
    if (rc == CURLE_OK && w->tty) {
        json_t *st = w->sb.data ? json_loads(w->sb.data, 0, NULL) : NULL;
        double el = since(&w->t0);
        if (json_is_object(st)) {
            table_progress(w->name, st, el);
            w->shown = 1;
        }
        json_decref(st);
    }
    drop_poll(w);
}

/* Runs the transfers until the load has finished; returns its result. A
 * status request goes out 0.3 s after the start and every 0.25 s after
 * the previous one came back. */
static CURLcode watch_load(load_watch *w)
{
    clock_gettime(CLOCK_MONOTONIC, &w->t0);
    double next_poll = 0.3;
    for (;;) {
        int running = 0;
        curl_multi_perform(w->multi, &running);
        CURLMsg *msg;
        int left, load_done = 0;
        CURLcode load_rc = CURLE_OK;
        while ((msg = curl_multi_info_read(w->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            if (msg->easy_handle == w->load) {
                load_done = 1;
                load_rc = msg->data.result;
            } else if (msg->easy_handle == w->poll) {
                poll_done(w, msg->data.result);
            }
        }
        if (load_done) return load_rc;
        double el = since(&w->t0);
        if (!w->poll && el >= next_poll) {
            w->poll = client_easy("GET", w->show, NULL, &w->sb, w->headers);
            curl_multi_add_handle(w->multi, w->poll);
            next_poll = el + 0.25;
        }
        curl_multi_poll(w->multi, NULL, 0, 100, NULL);
    }
}

int cmd_load(int argc, char **argv)
{
    if (argc != 1) die(EXIT_USAGE, "usage: vramctl load MODEL");
    load_watch w = {.name = argv[0], .tty = isatty(2) && !client_opt.json};
    char path[1024];
    client_model_path(path, sizeof path, w.name, "/load");
    client_model_path(w.show, sizeof w.show, w.name, "");
    w.multi = curl_multi_init();
    w.headers = client_headers(0);
    w.load = client_easy("POST", path, NULL, &w.lb, w.headers);
    curl_multi_add_handle(w.multi, w.load);
    CURLcode load_rc = watch_load(&w);
    if (w.shown) fprintf(stderr, "\r%-78s\r", "");
    if (w.poll) drop_poll(&w);
    if (load_rc != CURLE_OK) {
        char why[600];
        client_unreachable_text(w.load, load_rc, why, sizeof why);
        die(EXIT_UNREACHABLE, "%s", why);
    }
    long status = 0;
    curl_easy_getinfo(w.load, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(w.multi, w.load);
    curl_easy_cleanup(w.load);
    curl_multi_cleanup(w.multi);
    curl_slist_free_all(w.headers);
    if (client_opt.json) {
        if (w.lb.data) fputs(w.lb.data, stdout);
        free(w.lb.data);
        return status >= 400 ? EXIT_FAILED : 0;
    }
    json_t *o = client_answer(status, &w.lb);
    free(w.lb.data);
    const char *where = json_string_value(json_object_get(o, "location"));
    printf("%s (now on %s)\n", json_string_value(json_object_get(o, "message")),
           where ? where : "?");
    json_decref(o);
    return 0;
}

/* ---- run, devices ---- */

int cmd_run(int argc, char **argv)
{
    if (argc != 1) die(EXIT_USAGE, "usage: vramctl run MODEL");
    char path[1024];
    client_model_path(path, sizeof path, argv[0], "/run");
    json_t *o = client_call("POST", path, NULL);
    json_t *steps = json_object_get(o, "steps");
    printf("%s: checksum %s (%.3f s in all; now on %s)\n", argv[0],
           json_string_value(json_object_get(o, "checksum")),
           json_number_value(json_object_get(o, "total_seconds")),
           json_string_value(json_object_get(o, "location")));
    json_t *end = json_object_get(steps, "end_lease");
    table_step("acquire", json_object_get(steps, "acquire"),
               json_string_value(json_object_get(json_object_get(steps, "acquire"), "action")));
    table_step("checksum", json_object_get(steps, "compute"), "on the device");
    table_step("end lease", end,
               json_is_true(json_object_get(end, "offloaded")) ? "offloaded (immediate_offload)"
                                                               : "stays on the GPU");
    json_decref(o);
    return 0;
}

int cmd_devices(int argc, char **argv)
{
    (void)argv;
    if (argc) die(EXIT_USAGE, "devices takes no arguments");
    json_t *o = client_call("GET", "/api/v1/devices", NULL);
    table_devices(o);
    json_decref(o);
    return 0;
}

/* ---- models at run time ---- */

int cmd_register(int argc, char **argv)
{
    if (argc != 1)
        die(EXIT_USAGE, "usage: vramctl register NAME=SOURCE[,idle_timeout=S][,release_timeout=S]"
                        "[,immediate_offload=1][,device=N]");
    /* vramd parses the spec with the parser of its own --model */
    json_t *o = client_call("POST", "/api/v1/models", json_pack("{s:s}", "spec", argv[0]));
    printf("%s\n", json_string_value(json_object_get(o, "message")));
    json_decref(o);
    return 0;
}

/* DELETE /api/v1/models/NAME or POST .../reopen */
static int model_call(const char *method, const char *suffix, int argc, char **argv,
                      const char *usage)
{
    if (argc != 1) die(EXIT_USAGE, "usage: vramctl %s", usage);
    char path[1024];
    client_model_path(path, sizeof path, argv[0], suffix);
    json_t *o = client_call(method, path, NULL);
    printf("%s\n", json_string_value(json_object_get(o, "message")));
    json_decref(o);
    return 0;
}

int cmd_unregister(int argc, char **argv)
{
    return model_call("DELETE", "", argc, argv, "unregister MODEL");
}

int cmd_reopen(int argc, char **argv)
{
    return model_call("POST", "/reopen", argc, argv, "reopen MODEL");
}
