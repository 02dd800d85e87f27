/* client.c - vramctl's HTTP client of vramd (libcurl): requests, answers, vramd's JSON errors. */
#include "client.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vramctl.h"

client_opts client_opt;

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
    buf *b = user;
    size_t add = size * n;
    char *d = realloc(b->data, b->len + add + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, add);
    b->len += add;
    d[b->len] = '\0';
    b->data = d;
    return add;
}

void client_unreachable_text(CURL *easy, CURLcode rc, char *out, size_t len)
{
    long os = 0;
    curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os);
    const char *why = os ? strerror((int)os) : curl_easy_strerror(rc);
    char lower[128];
    snprintf(lower, sizeof lower, "%s", why);
    for (char *p = lower; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    snprintf(out, len,
             "cannot reach vramd at %s (%s) — is it running? start it with `vramd` or `make run`",
             client_opt.url, lower);
}

struct curl_slist *client_headers(int json_body)
{
    struct curl_slist *h = NULL;
    if (json_body) h = curl_slist_append(h, "Content-Type: application/json");
    if (client_opt.token[0]) {
        char a[VRAM_STR_MAX + 32];
        snprintf(a, sizeof a, "Authorization: Bearer %s", client_opt.token);
        h = curl_slist_append(h, a);
    }
    return h;
}

CURL *client_easy(const char *method, const char *path, const char *body, buf *out,
                  struct curl_slist *headers)
{
    CURL *e = curl_easy_init();
    if (!e) die(EXIT_FAILED, "out of memory");
    char url[VRAM_STR_MAX + 512];
    size_t ul = strlen(client_opt.url);
    while (ul && client_opt.url[ul - 1] == '/')
        ul--;
    snprintf(url, sizeof url, "%.*s%s", (int)ul, client_opt.url, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* an overall deadline: a vramd that accepts but never answers is "not reachable" */
    double t = client_opt.timeout > 0 ? client_opt.timeout : 120;
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(t * 1000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "vramctl/" VRAM_VERSION);
    return e;
}

long client_request(const char *method, const char *path, const char *body, buf *out)
{
    struct curl_slist *h = client_headers(body != NULL);
    CURL *e = client_easy(method, path, body, out, h);
    CURLcode rc = curl_easy_perform(e);
    long status = 0;
    if (rc != CURLE_OK) {
        char why[600];
        client_unreachable_text(e, rc, why, sizeof why);
        die(EXIT_UNREACHABLE, "%s", why);
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    return status;
}

json_t *client_answer(long status, buf *b)
{
    json_t *o = b->data ? json_loads(b->data, JSON_DECODE_ANY, NULL) : NULL;
    if (status >= 400 || !o) {
        json_t *e = json_object_get(o, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *code = json_string_value(json_object_get(e, "code"));
        if (msg)
            fprintf(stderr, "vramctl: %s (%s, HTTP %ld)\n", msg, code ? code : "error", status);
        else
            fprintf(stderr, "vramctl: vramd answered HTTP %ld: %.300s\n", status,
                    b->data ? b->data : "");
        exit(EXIT_FAILED);
    }
    return o;
}

json_t *client_call(const char *method, const char *path, json_t *body_obj)
{
    char *body = body_obj ? json_dumps(body_obj, JSON_COMPACT) : NULL;
    json_decref(body_obj);
    buf b = {0};
    long st = client_request(method, path, body, &b);
    free(body);
    if (client_opt.json) {
        if (b.data) fputs(b.data, stdout);
        if (b.len && b.data[b.len - 1] != '\n') fputc('\n', stdout);
        exit(st >= 400 ? EXIT_FAILED : 0);
    }
    json_t *o = client_answer(st, &b);
    free(b.data);
    return o;
}

void client_model_path(char *out, size_t len, const char *name, const char *suffix)
{
    size_t n = (size_t)snprintf(out, len, "/api/v1/models/");
    for (const unsigned char *p = (const unsigned char *)name; *p && n + 4 < len; p++) {
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~')
            out[n++] = (char)*p;
        else
            n += (size_t)snprintf(out + n, len - n, "%%%02X", *p);
    }
    snprintf(out + n, len - n, "%s", suffix);
}
