/* http_jobs.c - slow requests (loads, transfers, MCP tool calls) on threads of their own while the connection waits. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/http_internal.h"

void vram__http_job_free(job *j)
{
    if (!j) return;
    json_decref(j->args);
    for (int i = 0; i < 4; i++)
        free(j->mcp_strings[i]);
    free(j->body);
    free(j);
}

static void job_run(job *j)
{
    if (j->is_mcp) {
        vram__mcp_http_resp resp;
        vram__mcp_http(j->h->mcp, &j->mreq, &resp);
        j->status = resp.status;
        j->body = resp.body;
        j->len = resp.body ? strlen(resp.body) : 0;
        memcpy(j->session_id, resp.session_id, sizeof j->session_id);
        j->allow = resp.allow;
    } else {
        vram__cmd_result res = {0};
        vram__command_run(j->h->m, j->cmd, j->args, &res);
        vram__http_result_body(&res, &j->status, &j->body, &j->len);
        vram__cmd_result_clear(&res);
    }
}

static void *job_main(void *arg)
{
    job *j = arg;
    vram__http *h = j->h;
    struct MHD_Connection *c = j->conn;
    job_run(j);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    MHD_resume_connection(c); /* j belongs to the event thread from here on */
    pthread_mutex_lock(&h->lock);
    h->jobs--;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

enum MHD_Result vram__http_start_job(vram__http *h, struct MHD_Connection *c, request *r, job *j)
{
    pthread_mutex_lock(&h->lock);
    int ok = !h->stopping && h->jobs < MAX_JOBS;
    if (ok) h->jobs++;
    pthread_mutex_unlock(&h->lock);
    if (!ok) {
        vram__http_job_free(j);
        return vram__http_send_error(c, r, 503, "EBUSY",
                          h->stopping ? "vramd is shutting down"
                                      : "too many slow requests in flight; try again",
                          "Retry-After", "1");
    }
    j->h = h;
    j->conn = c;
    r->job = j;
    MHD_suspend_connection(c);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, job_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        j->status = 503;
        j->body = vram__http_dump_line(json_pack("{s:{s:s, s:s}}", "error", "code", "EBUSY", "message",
                                      "cannot start a thread for this request; try again"),
                            &j->len);
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
        MHD_resume_connection(c);
        pthread_mutex_lock(&h->lock);
        h->jobs--;
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
    }
    return MHD_YES;
}

enum MHD_Result vram__http_finish_job(struct MHD_Connection *c, request *r)
{
    job *j = r->job;
    char *body = j->body;
    j->body = NULL;
    const char *h1 = NULL, *v1 = NULL;
    if (j->session_id[0]) {
        h1 = "Mcp-Session-Id";
        v1 = j->session_id;
    } else if (j->allow) {
        h1 = MHD_HTTP_HEADER_ALLOW;
        v1 = j->allow;
    }
    enum MHD_Result ret =
        vram__http_send_body(c, r, j->status, body, j->len, body ? "application/json" : NULL, h1, v1);
    return ret;
}
