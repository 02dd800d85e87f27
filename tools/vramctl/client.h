/* client.h - vramctl's HTTP client of vramd (libcurl): requests, answers, vramd's JSON errors. */
#ifndef VRAMCTL_CLIENT_H
#define VRAMCTL_CLIENT_H

#include <curl/curl.h>
#include <jansson.h>
#include <stddef.h>

#include "vram.h"

/* Where vramd is and how to talk to it; main.c sets it before any request. */
typedef struct client_opts {
    char url[VRAM_STR_MAX];   /* vramd's address, "http://127.0.0.1:7861" */
    char token[VRAM_STR_MAX]; /* bearer token, "" for none */
    int json;                 /* --json: print vramd's answers as they are */
    double timeout;           /* --timeout: seconds for a whole request (connect + answer) */
} client_opts;
extern client_opts client_opt;

/* An answer's bytes, NUL-terminated; data is malloc'd (free it), NULL when
 * nothing came. */
typedef struct buf {
    char *data;
    size_t len;
} buf;

/* The headers of every request: the bearer token, and Content-Type JSON
 * when json_body. Free with curl_slist_free_all (after the transfer). */
struct curl_slist *client_headers(int json_body);

/* A transfer of method to client_opt.url + path with body (NUL-terminated;
 * NULL for none), its answer appended to *out. The handle borrows body, out
 * and headers until it is cleaned up (curl_easy_cleanup). Exits 1 when out
 * of memory. */
CURL *client_easy(const char *method, const char *path, const char *body, buf *out,
                  struct curl_slist *headers);

/* Why transfer easy failed with rc, for people: "cannot reach vramd at URL
 * (connection refused) — is it running? ...", into out (len bytes). */
void client_unreachable_text(CURL *easy, CURLcode rc, char *out, size_t len);

/* One request; exits 2 when vramd cannot be reached. Returns the HTTP
 * status, the answer in *out. */
long client_request(const char *method, const char *path, const char *body, buf *out);

/* Parses an answer of status; on an error status (or no JSON) prints
 * vramd's message ("vramctl: MESSAGE (CODE, HTTP 404)") and exits 1. The
 * caller frees b->data and json_decref's the result. */
json_t *client_answer(long status, buf *b);

/* A request with body_obj (taken: decref'd here; NULL for none) as JSON;
 * returns the parsed answer (json_decref it). With --json prints the
 * answer as it is and exits (0, or 1 on an error status); exits 1 on an
 * error answer and 2 when vramd is unreachable. */
json_t *client_call(const char *method, const char *path, json_t *body_obj);

/* "/api/v1/models/NAME" + suffix into out (len bytes), NAME with everything
 * but unreserved characters percent-encoded. */
void client_model_path(char *out, size_t len, const char *name, const char *suffix);

#endif /* VRAMCTL_CLIENT_H */
