/* test_host_shared.c - shared emulated devices (VRAM_HOST_SHARED): several processes on one host device, dead ones reclaimed, bad names, mismatched figures, the manager on a share. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "backend/host_shared.h"
#include "base/base.h"
#include "vram.h"

#define MiB ((uint64_t)1 << 20)

static char g_name[64]; /* this test's share: unique per process and test */
static int g_seq;

static int setup(void **state)
{
    (void)state;
    snprintf(g_name, sizeof g_name, "test-%d-%d", (int)getpid(), ++g_seq);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/vram-host-%s", g_name);
    shm_unlink(path);
    return 0;
}

/* A host backend on share name (NULL: not shared). Returns its rc. */
static int open_host(const char *name, uint64_t memory, int ndev, vram_backend **b)
{
    vram_backend_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = VRAM_BACKEND_HOST;
    cfg.host_memory = memory;
    cfg.host_devices = ndev;
    if (name) snprintf(cfg.host_shared, sizeof cfg.host_shared, "%s", name);
    *b = NULL;
    return vram__backend_open(&cfg, b);
}

static vram_backend *must_open(const char *name, uint64_t memory, int ndev)
{
    vram_backend *b = NULL;
    int rc = open_host(name, memory, ndev, &b);
    if (rc) fail_msg("host backend on '%s': %s", name ? name : "", vram__last_error());
    return b;
}

/* ---- a child process driven through pipes ---- */

typedef struct child {
    pid_t pid;
    int to, from; /* commands to it, replies from it */
} child;

typedef void (*child_main)(int in, int out);

static child spawn(child_main fn)
{
    int down[2], up[2];
    assert_int_equal(pipe(down), 0);
    assert_int_equal(pipe(up), 0);
    child c;
    c.pid = fork();
    assert_true(c.pid >= 0);
    if (c.pid == 0) {
        close(down[1]);
        close(up[0]);
        fn(down[0], up[1]);
        _exit(0);
    }
    close(down[0]);
    close(up[1]);
    c.to = down[1];
    c.from = up[0];
    return c;
}

static char get_byte(int fd)
{
    char ch = 0;
    ssize_t n;
    do {
        n = read(fd, &ch, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? ch : 0;
}

static void put_byte(int fd, char ch)
{
    ssize_t n;
    do {
        n = write(fd, &ch, 1);
    } while (n < 0 && errno == EINTR);
}

/* Sends cmd (0: none) and returns the child's reply ('k' ok; 0 when it is gone). */
static char ask(const child *c, char cmd)
{
    if (cmd) put_byte(c->to, cmd);
    return get_byte(c->from);
}

/* Waits for the child; returns its exit status or 128 + its signal. */
static int reap(child *c)
{
    close(c->to);
    close(c->from);
    int st = 0;
    pid_t got;
    do {
        got = waitpid(c->pid, &st, 0);
    } while (got < 0 && errno == EINTR);
    assert_int_equal(got, c->pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The child: a backend on g_name (64 MiB), a 48 MiB range; 'm' maps it,
 * 'u' unmaps it, 'x' exits at once (nothing given back), 'q' (or EOF)
 * destroys the backend and exits. Replies 'r' once ready, then 'k' or 'e'
 * per command. */
static void mapper_main(int in, int out)
{
    vram_backend *b = NULL;
    vram_buf buf;
    if (open_host(g_name, 64 * MiB, 1, &b) || vram__backend_reserve(b, 0, 48 * MiB, &buf)) {
        fprintf(stderr, "child: %s\n", vram__last_error());
        put_byte(out, 'e');
        _exit(1);
    }
    put_byte(out, 'r');
    for (;;) {
        char cmd = get_byte(in);
        int rc = 0;
        if (cmd == 'm')
            rc = vram__backend_map(b, &buf);
        else if (cmd == 'u')
            rc = vram__backend_unmap(b, &buf);
        else if (cmd == 'x')
            _exit(0);
        else
            break;
        put_byte(out, rc ? 'e' : 'k');
    }
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
    _exit(0);
}

static uint64_t free_of(vram_backend *b, int dev)
{
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, dev, &info), 0);
    return info.free;
}

/* ---- the tests ---- */

static void test_two_processes(void **state)
{
    (void)state;
    vram_backend *b = must_open(g_name, 64 * MiB, 1);
    child c = spawn(mapper_main);
    assert_int_equal(ask(&c, 0), 'r');
    assert_int_equal(ask(&c, 'm'), 'k'); /* the child holds 48 of 64 MiB */

    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_int_equal(info.total, 64 * MiB);
    assert_int_equal(info.free, 16 * MiB);
    char uuid[96];
    snprintf(uuid, sizeof uuid, "HOST-%s-0", g_name);
    assert_string_equal(info.uuid, uuid);

    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 32 * MiB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), VRAM_ENOMEM);
    const char *msg = vram__last_error();
    char want[128];
    snprintf(want, sizeof want, "host device 0 (shared '%s')", g_name);
    assert_non_null(strstr(msg, want));
    assert_non_null(strstr(msg, "16.0 MiB free of 64.0 MiB"));
    assert_non_null(strstr(msg, "other processes hold 48.0 MiB"));
    assert_int_equal(buf.mapped, 0);

    assert_int_equal(ask(&c, 'u'), 'k'); /* the child gives its 48 MiB back (pooled) */
    assert_int_equal(free_of(b, 0), 64 * MiB);
    assert_int_equal(vram__backend_map(b, &buf), 0);
    assert_int_equal(free_of(b, 0), 32 * MiB);
    assert_int_equal(ask(&c, 'm'), 'e'); /* now the child does not fit */
    assert_int_equal(vram__backend_unmap(b, &buf), 0);

    assert_int_equal(ask(&c, 'm'), 'k'); /* the child holds 48 MiB again, and dies */
    assert_int_equal(vram__backend_map(b, &buf), VRAM_ENOMEM);
    kill(c.pid, SIGKILL);
    assert_int_equal(reap(&c), 128 + SIGKILL);
    assert_int_equal(vram__backend_map(b, &buf), 0); /* its memory was reclaimed */
    assert_int_equal(free_of(b, 0), 32 * MiB);
    vram__backend_unreserve(b, &buf);
    assert_int_equal(free_of(b, 0), 64 * MiB);
    vram__backend_destroy(b);
}

/* A process that ends, destroying its backend or not, frees what it held. */
static void test_exit_gives_back(void **state)
{
    (void)state;
    vram_backend *b = must_open(g_name, 64 * MiB, 1);
    child c = spawn(mapper_main);
    assert_int_equal(ask(&c, 0), 'r');
    assert_int_equal(ask(&c, 'm'), 'k');
    assert_int_equal(free_of(b, 0), 16 * MiB);
    assert_int_equal(ask(&c, 'x'), 0); /* exits with the range mapped */
    assert_int_equal(reap(&c), 0);
    assert_int_equal(free_of(b, 0), 64 * MiB);

    c = spawn(mapper_main);
    assert_int_equal(ask(&c, 0), 'r');
    assert_int_equal(ask(&c, 'm'), 'k');
    assert_int_equal(free_of(b, 0), 16 * MiB);
    assert_int_equal(ask(&c, 'q'), 0); /* unreserves, destroys its backend, exits */
    assert_int_equal(reap(&c), 0);
    assert_int_equal(free_of(b, 0), 64 * MiB);
    vram__backend_destroy(b);
}

/* Two backends of one process on one share count as two users. */
static void test_one_process_two_backends(void **state)
{
    (void)state;
    vram_backend *a = must_open(g_name, 64 * MiB, 2);
    vram_backend *b = must_open(g_name, 64 * MiB, 2);
    vram_buf x, y;
    assert_int_equal(vram__backend_reserve(a, 1, 40 * MiB, &x), 0);
    assert_int_equal(vram__backend_reserve(b, 1, 40 * MiB, &y), 0);
    assert_int_equal(vram__backend_map(a, &x), 0);
    assert_int_equal(vram__backend_map(b, &y), VRAM_ENOMEM);
    assert_int_equal(free_of(b, 0), 64 * MiB); /* device 0 is another record */
    assert_int_equal(free_of(b, 1), 24 * MiB);
    vram__backend_unreserve(a, &x);
    assert_int_equal(vram__backend_map(b, &y), 0);
    vram__backend_unreserve(b, &y);
    vram__backend_destroy(a);
    vram__backend_destroy(b);
}

static void test_slots_run_out(void **state)
{
    (void)state;
    vram_backend *bs[VRAM_HOST_SHARED_SLOTS];
    for (int i = 0; i < VRAM_HOST_SHARED_SLOTS; i++)
        bs[i] = must_open(g_name, 4 * MiB, 1);
    vram_backend *extra = NULL;
    assert_int_equal(open_host(g_name, 4 * MiB, 1, &extra), VRAM_EBACKEND);
    assert_null(extra);
    assert_non_null(strstr(vram__last_error(), "process slots"));
    assert_non_null(strstr(vram__last_error(), g_name));
    vram__backend_destroy(bs[0]);
    bs[0] = must_open(g_name, 4 * MiB, 1); /* a slot given back is taken again */
    for (int i = 0; i < VRAM_HOST_SHARED_SLOTS; i++)
        vram__backend_destroy(bs[i]);
}

static void test_bad_names(void **state)
{
    (void)state;
    char long_name[80];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    const char *bad[] = {"a/b", "../x", "sp ace", "\x01", "caf\xc3\xa9", "x*", long_name};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        vram_backend *b = NULL;
        assert_int_equal(open_host(bad[i], 64 * MiB, 1, &b), VRAM_ECONFIG);
        assert_null(b);
        const char *msg = vram__last_error();
        assert_non_null(strstr(msg, "VRAM_HOST_SHARED"));
        if (i < 3) assert_non_null(strstr(msg, bad[i]));
    }
    /* 64 characters is the longest name: its uuid stays distinct and fits */
    memset(long_name, 'b', 64);
    long_name[64] = '\0';
    vram_backend *b = must_open(long_name, 4 * MiB, 1);
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_true(strncmp(info.uuid, "HOST-bbbb", 9) == 0);
    assert_true(strlen(info.uuid) < sizeof info.uuid);
    vram__backend_destroy(b);
    shm_unlink("/vram-host-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");

    /* the unshared host device keeps its uuid */
    b = must_open(NULL, 4 * MiB, 1);
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_string_equal(info.uuid, "HOST-0");
    vram__backend_destroy(b);
}

static int g_warned;
static void hear_warning(vram_log_level level, const char *line, void *user)
{
    (void)user;
    if (level == VRAM_LOG_WARN && strstr(line, "shared") && strstr(line, "using those")) g_warned++;
}

static void test_mismatch_uses_the_share(void **state)
{
    (void)state;
    vram_backend *a = must_open(g_name, 64 * MiB, 1);
    g_warned = 0;
    int id = vram_log_listen(hear_warning, NULL, VRAM_LOG_WARN);
    assert_true(id > 0);
    vram_backend *b = must_open(g_name, 256 * MiB, 3);
    vram_log_unlisten(id);
    assert_int_equal(g_warned, 1);
    assert_int_equal(vram__backend_device_count(b), 1);
    vram_dev_info info;
    assert_int_equal(vram__backend_device_info(b, 0, &info), 0);
    assert_int_equal(info.total, 64 * MiB);
    vram_buf buf;
    assert_int_equal(vram__backend_reserve(b, 0, 128 * MiB, &buf), 0);
    assert_int_equal(vram__backend_map(b, &buf), VRAM_ENOMEM);
    vram__backend_unreserve(b, &buf);
    vram__backend_destroy(b);
    vram__backend_destroy(a);
}

/* The child: opens the ledger, charges 8 MiB, takes the lock and dies. */
static void lock_holder_main(int in, int out)
{
    (void)in;
    int ndev = 1;
    uint64_t cap = 64 * MiB;
    vram_host_shared *s = NULL;
    if (vram__host_shared_open(g_name, &ndev, &cap, &s) ||
        vram__host_shared_charge(s, 0, 8 * MiB, NULL) || vram__host_shared_hold_lock(s, 0)) {
        put_byte(out, 'e');
        _exit(1);
    }
    put_byte(out, 'k');
    _exit(0);
}

static void test_lock_owner_dies(void **state)
{
    (void)state;
    int ndev = 1;
    uint64_t cap = 64 * MiB;
    vram_host_shared *s = NULL;
    assert_int_equal(vram__host_shared_open(g_name, &ndev, &cap, &s), 0);
    child c = spawn(lock_holder_main);
    assert_int_equal(ask(&c, 0), 'k');
    assert_int_equal(reap(&c), 0);
    vram_host_shared_usage u;
    assert_int_equal(vram__host_shared_usage(s, 0, &u), 0); /* EOWNERDEAD repaired */
    assert_int_equal(u.used, 0);
    assert_int_equal(vram__host_shared_charge(s, 0, 64 * MiB, &u), 0);
    assert_int_equal(vram__host_shared_charge(s, 0, 2 * MiB, &u), 1);
    assert_int_equal(u.mine, 64 * MiB);
    vram__host_shared_uncharge(s, 0, 64 * MiB);
    vram__host_shared_close(s);
}

/* A slot whose pid is alive but belongs to a process started at another
 * time (pid reuse) is reclaimed. */
static void test_pid_reuse(void **state)
{
    (void)state;
    int ndev = 1;
    uint64_t cap = 64 * MiB;
    vram_host_shared *old = NULL, *s = NULL;
    assert_int_equal(vram__host_shared_open(g_name, &ndev, &cap, &old), 0);
    assert_int_equal(vram__host_shared_charge(old, 0, 60 * MiB, NULL), 0);
    assert_int_equal(vram__host_shared_open(g_name, &ndev, &cap, &s), 0);
    vram_host_shared_usage u;
    assert_int_equal(vram__host_shared_usage(s, 0, &u), 0);
    assert_int_equal(u.used, 60 * MiB);
    vram__host_shared_fake_reuse(old);
    assert_int_equal(vram__host_shared_charge(s, 0, 64 * MiB, &u), 0);
    vram__host_shared_uncharge(old, 0, 60 * MiB); /* no longer its slot: nothing happens */
    assert_int_equal(vram__host_shared_usage(s, 0, &u), 0);
    assert_int_equal(u.used, 64 * MiB);
    vram__host_shared_close(old);
    vram__host_shared_close(s);
}

/* ---- the manager on a share, in two processes ---- */

static vram_manager *shared_manager(void)
{
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 64 * MiB;
    cfg.host_devices = 1;
    cfg.evict_wait = 0;
    cfg.log_level = VRAM_LOG_ERROR;
    cfg.no_monitor_thread = 1;
    snprintf(cfg.host_shared, sizeof cfg.host_shared, "%s", g_name);
    vram_manager *m = NULL;
    if (vram_manager_create(&cfg, &m)) return NULL;
    return m;
}

static vram_model *add_model(vram_manager *m, const char *name, const char *spec)
{
    vram_model_opts o;
    vram_model_opts_init(&o);
    o.source = spec;
    vram_model *model = NULL;
    return vram_manager_register(m, name, &o, &model) ? NULL : model;
}

/* Process B: waits for 'g', loads a 32 MiB model (reply 'n' when it found
 * no memory), waits for 'g' again, loads it (reply 'k' when it could). */
static void manager_b_main(int in, int out)
{
    if (get_byte(in) != 'g') _exit(1);
    vram_manager *m = shared_manager();
    vram_model *model = m ? add_model(m, "b", "synthetic:32M:2") : NULL;
    if (!model) _exit(2);
    vram_lease *l = NULL;
    int rc = vram_model_acquire(model, &l);
    put_byte(out, rc == VRAM_ENOMEM ? 'n' : 'e');
    if (rc == 0) vram_lease_end(l);
    if (get_byte(in) != 'g') _exit(3);
    rc = vram_model_acquire(model, &l);
    if (rc == 0)
        vram_lease_end(l);
    else
        fprintf(stderr, "process B: %s\n", vram_last_error());
    put_byte(out, rc == 0 ? 'k' : 'e');
    vram_manager_destroy(m);
    _exit(0);
}

static void test_manager_two_processes(void **state)
{
    (void)state;
    child c = spawn(manager_b_main); /* before any manager thread exists here */
    vram_manager *m = shared_manager();
    assert_non_null(m);
    vram_model *a = add_model(m, "a", "synthetic:48M:1");
    assert_non_null(a);
    vram_lease *l = NULL;
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    assert_int_equal(ask(&c, 'g'), 'n'); /* B finds 16 of 64 MiB free */
    assert_int_equal(vram_model_offload(a, 0), 0);
    assert_int_equal(ask(&c, 'g'), 'k'); /* A's memory is pooled, free to B */
    assert_int_equal(reap(&c), 0);
    /* B ended: A gets its model back on the device */
    assert_int_equal(vram_model_acquire(a, &l), 0);
    vram_lease_end(l);
    vram_manager_destroy(m);
}

static void test_manager_bad_name(void **state)
{
    (void)state;
    vram_config cfg;
    vram_config_init(&cfg);
    cfg.backend = VRAM_BACKEND_HOST;
    cfg.host_memory = 64 * MiB;
    cfg.no_monitor_thread = 1;
    cfg.log_level = VRAM_LOG_ERROR;
    snprintf(cfg.host_shared, sizeof cfg.host_shared, "no/slashes");
    vram_manager *m = NULL;
    assert_int_equal(vram_manager_create(&cfg, &m), VRAM_ECONFIG);
    assert_null(m);
    assert_non_null(strstr(vram_last_error(), "VRAM_HOST_SHARED"));
    assert_non_null(strstr(vram_last_error(), "no/slashes"));
}

int main(void)
{
    vram_set_log_level(VRAM_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_gives_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_process_two_backends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slots_run_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch_uses_the_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_owner_dies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pid_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manager_two_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manager_bad_name, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
