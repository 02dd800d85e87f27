/* http_jobs.c - slow requests (loads, transfers, MCP tool calls) on threads of their own while the connection waits. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/http_internal.h"

static void job_destroy(job *j)
{
    json_decref(j->args);
    for (int i = 0; i < 5; i++)
        free(j->mcp_strings[i]);
    free(j->body);
    free(j);
}

/* Drops the request's reference (the job thread may still hold one). */
void vram__http_job_free(job *j)
{
    if (!j) return;
    vram__http *h = j->h;
    if (!h) { /* never started */
        job_destroy(j);
        return;
    }
    pthread_mutex_lock(&h->lock);
    if (j->abandoned) {
        h->stop_answers--;
        pthread_cond_broadcast(&h->cond);
    }
    int last = --j->refs == 0;
    pthread_mutex_unlock(&h->lock);
    if (last) job_destroy(j);
}

typedef struct answer {
    unsigned status;
    char *body;
    size_t len;
    char session_id[40];
    const char *allow;
} answer;

static void job_run(job *j, answer *a)
{
    if (j->is_mcp) {
        vram__mcp_http_resp resp;
        vram__mcp_http(j->h->mcp, &j->mreq, &resp);
        a->status = resp.status;
        a->body = resp.body;
        a->len = resp.body ? strlen(resp.body) : 0;
        memcpy(a->session_id, resp.session_id, sizeof a->session_id);
        a->allow = resp.allow;
    } else {
        vram__cmd_result res = {0};
        vram__command_run(j->h->m, j->cmd, j->args, &res);
        vram__http_result_body(&res, &a->status, &a->body, &a->len);
        vram__cmd_result_clear(&res);
    }
}

static void unlink_job(vram__http *h, job *j)
{
    for (job **p = &h->job_list; *p; p = &(*p)->next_running)
        if (*p == j) {
            *p = j->next_running;
            return;
        }
}

/* Hands the answer over, unless a stop answered already; the one who
 * answers resumes the connection (outside the lock). */
static void *job_main(void *arg)
{
    job *j = arg;
    vram__http *h = j->h;
    struct MHD_Connection *c = j->conn;
    answer a = {0};
    job_run(j, &a);
    pthread_mutex_lock(&h->lock);
    unlink_job(h, j);
    int mine = !j->answered;
    if (mine) {
        j->answered = 1;
        j->status = a.status;
        j->body = a.body;
        j->len = a.len;
        memcpy(j->session_id, a.session_id, sizeof j->session_id);
        j->allow = a.allow;
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&h->lock);
    if (mine) MHD_resume_connection(c); /* the event thread answers from here on */
    else free(a.body);
    pthread_mutex_lock(&h->lock);
    h->jobs--;
    int last = --j->refs == 0;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    if (last) job_destroy(j);
    return NULL;
}

int vram__http_jobs_abandon(vram__http *h)
{
    struct MHD_Connection *conns[MAX_JOBS];
    int n = 0;
    pthread_mutex_lock(&h->lock);
    for (job *j = h->job_list; j && n < MAX_JOBS; j = j->next_running) {
        if (j->answered) continue;
        j->answered = 1;
        j->abandoned = 1;
        j->status = 503;
        j->body = vram__http_dump_line(
            json_pack("{s:{s:s, s:s}}", "error", "code", "ECANCELED", "message",
                      "vramd is stopping: this request did not finish within the grace period"),
            &j->len);
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
        h->stop_answers++;
        conns[n++] = j->conn;
    }
    pthread_mutex_unlock(&h->lock);
    for (int i = 0; i < n; i++)
        MHD_resume_connection(conns[i]);
    return n;
}

enum MHD_Result vram__http_start_job(vram__http *h, struct MHD_Connection *c, request *r, job *j)
{
    pthread_mutex_lock(&h->lock);
    int ok = !h->stopping && h->jobs < MAX_JOBS;
    if (ok) {
        h->jobs++;
        j->h = h;
        j->conn = c;
        j->refs = 2;
        j->next_running = h->job_list;
        h->job_list = j;
    }
    pthread_mutex_unlock(&h->lock);
    if (!ok) {
        vram__http_job_free(j);
        return vram__http_send_error(c, r, 503, "EBUSY",
                          h->stopping ? "vramd is shutting down"
                                      : "too many slow requests in flight; try again",
                          "Retry-After", "1");
    }
    r->job = j;
    MHD_suspend_connection(c);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, job_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&h->lock);
        unlink_job(h, j);
        j->answered = 1;
        j->refs--;
        h->jobs--;
        j->status = 503;
        j->body = vram__http_dump_line(json_pack("{s:{s:s, s:s}}", "error", "code", "EBUSY", "message",
                                      "cannot start a thread for this request; try again"),
                            &j->len);
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->lock);
        MHD_resume_connection(c);
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
