/*
 * Per-context worker pool for the kernels' parallel loops (sim_par in sim_graph.h).
 *
 * Why: the simulator must keep up with onnxruntime on a small multi-core host, and the large
 * convolutions split cleanly by output channel. The pool belongs to one context (no global state),
 * is created on the first run that can use it and joined when the context is destroyed.
 *
 * Work of n items is cut into a few chunks per thread that the threads claim as they come (a busy
 * host may not schedule a worker in time; then the caller does the chunk). A chunk computes the same
 * bytes whichever thread runs it, so results are identical for every thread count.
 * Workers spin briefly for the next job of a run (operators follow each other within microseconds) and
 * sleep on a condition variable once the run is over, so an idle context costs no CPU and the time
 * between runs (input conversion, the caller's own work: a board link's reader and client threads) has
 * every core. A spin past the run's end took a core from whoever needed it next for up to SIM_SPIN_NS
 * and bought nothing: the next run's first job starts without a sleeping worker, and the worker joins
 * it once the scheduler wakes it (the caller never waits for a worker that has not joined).
 *
 * Whether a run uses the workers at all is measured, per context: a small model (about a millisecond, many
 * layers of a few microseconds) can lose more to posting and joining jobs, and to a worker the host
 * preempts in the middle of a chunk, than the second core gives back. The context keeps the wall times of
 * its last undisturbed runs (the calling thread on the CPU for most of the run) with and without the
 * workers, runs the faster way, and every SIM_EXPLORE_EVERY-th run the other way so that both stay
 * measured. Either way computes the same bytes.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sim_core.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SIM_PAUSE() _mm_pause()
#else
#define SIM_PAUSE() ((void)0)
#endif

#ifndef SIM_SPIN_NS
#define SIM_SPIN_NS 200000 /* how long a thread spins within a run before sleeping (0.2 ms) */
#endif
/* A thread spinning longer than this yields its core at every look (sched_yield): on a busy host the
 * thread it waits for may be the one the scheduler put behind it (a worker spinning for the next job
 * while the caller that would post it is preempted, or a caller waiting for a joined worker). */
#define SIM_YIELD_AFTER_NS 10000.0

#define SIM_CLOSED 0x40000000 /* ticket bit: the job takes no more helpers */
#define SIM_CHUNKS_PER_THREAD 4
#define SIM_WAIT_SLACK_NS 100000.0 /* a wait for workers longer than this (and than half the own work) */
#define SIM_STRIKES 3              /* ... this many times more often than not */
#define SIM_SERIAL_JOBS 400        /* ... runs the next jobs serially (about 4 MobileNet inferences) */
#define SIM_WIN 8                  /* run times kept per way (with / without the workers) */
#define SIM_WIN_MIN 3              /* runs of each way before the faster one is chosen */
#define SIM_EXPLORE_EVERY 8        /* every so many runs go the other way */
#define SIM_RUN_MIN_NS 500000.0    /* runs shorter than this say little about contention */

struct sim_workers {
    sim_par api;                /* must stay first */
    int n_threads;              /* including the calling thread */
    int n_started;              /* worker threads actually created */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_ulong gen;           /* bumped for every job and for stop */
    atomic_int stop;
    atomic_int in_run;          /* between sim_workers_run_begin and _end: workers spin for the next job */
    /* A worker joins the current job by incrementing ticket; once the caller has run out of chunks it
     * sets SIM_CLOSED and waits only for the workers that joined (done), so a worker the OS has not
     * scheduled yet never delays a run: the caller then simply does all chunks itself. */
    atomic_int ticket;
    atomic_int done;
    atomic_llong next_chunk;
    /* current job: written before ticket is reset (release), read only by workers that joined */
    sim_par_fn fn;
    void *arg;
    int64_t n_items, chunk, n_chunks;
    /* caller-only state: back-off to serial runs while workers keep the caller waiting */
    int strikes;
    int serial_left;
    int run_serial;             /* this run does not use the workers */
    int run_way;                /* 1: the measured choice (or its exploration) is this run without workers */
    int serial_runs, backoff;   /* contention: serial runs still to go; length of the last back-off */
    /* caller-only state: wall times (ns) of the last undisturbed runs, [0] with the workers, [1] without */
    double win[2][SIM_WIN];
    int n_win[2], pos_win[2];
    unsigned long runs;
    double run_wall0, run_cpu0;
};

typedef struct worker_arg {
    sim_workers *p;
    int tid;
} worker_arg;

static double mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Claims and runs chunks of the current job until none is left. Which thread runs a chunk does not
 * change what the chunk computes (tid only selects the thread's scratch slice). */
static void run_chunks(sim_workers *p, int tid)
{
    for (;;) {
        int64_t c = atomic_fetch_add_explicit(&p->next_chunk, 1, memory_order_relaxed);
        if (c >= p->n_chunks)
            return;
        int64_t lo = c * p->chunk, hi = lo + p->chunk < p->n_items ? lo + p->chunk : p->n_items;
        p->fn(p->arg, lo, hi, tid);
    }
}

/* Waits until gen differs from seen: spin while a run is under way (its next job comes within
 * microseconds), yielding the core after SIM_YIELD_AFTER_NS, at most SIM_SPIN_NS; sleep once the run is
 * over. Returns the new generation. */
static unsigned long wait_gen(sim_workers *p, unsigned long seen)
{
    double t0 = 0.0;
    int yielding = 0;
    for (unsigned i = 0;; i++) {
        unsigned long g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        if (yielding)
            sched_yield();
        else
            SIM_PAUSE();
        if (yielding || (i & 63u) == 63u) {
            if (!atomic_load_explicit(&p->in_run, memory_order_acquire))
                break;
            double t = mono_ns();
            if (t0 == 0.0)
                t0 = t;
            else if (t - t0 > SIM_SPIN_NS)
                break;
            yielding = t - t0 > SIM_YIELD_AFTER_NS;
        }
    }
    pthread_mutex_lock(&p->mu);
    unsigned long g;
    while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
        pthread_cond_wait(&p->cv_work, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    sim_workers *p = wa.p;
    unsigned long seen = 0;
    for (;;) {
        seen = wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        int t = atomic_fetch_add_explicit(&p->ticket, 1, memory_order_acq_rel);
        if (t & SIM_CLOSED)
            continue; /* too late for this job: the caller finished it */
        run_chunks(p, wa.tid);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
}

/* A busy host can preempt a worker in the middle of its chunk, and the caller then waits for the
 * scheduler (milliseconds). When that keeps happening, run serially for a while and then try again:
 * results are the same either way, only the time changes. */
static void note_wait(sim_workers *p, double own_ns, double wait_ns)
{
    if (wait_ns > SIM_WAIT_SLACK_NS && wait_ns > own_ns * 0.5) {
        if (++p->strikes >= SIM_STRIKES) {
            p->strikes = 0;
            p->serial_left = SIM_SERIAL_JOBS;
        }
    } else if (p->strikes > 0) {
        p->strikes--;
    }
}

static void pool_run(sim_par *self, sim_par_fn fn, void *arg, int64_t n_items)
{
    sim_workers *p = (sim_workers *)self;
    if (n_items <= 0)
        return;
    if (p->n_started == 0 || n_items == 1 || p->serial_left > 0 || p->run_serial) {
        if (p->serial_left > 0)
            p->serial_left--;
        fn(arg, 0, n_items, 0);
        return;
    }
    double t_start = mono_ns();
    int64_t want = (int64_t)p->n_threads * SIM_CHUNKS_PER_THREAD;
    p->fn = fn;
    p->arg = arg;
    p->n_items = n_items;
    p->chunk = (n_items + want - 1) / want;
    p->n_chunks = (n_items + p->chunk - 1) / p->chunk;
    atomic_store_explicit(&p->next_chunk, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->ticket, 0, memory_order_release);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    int joined = atomic_fetch_or_explicit(&p->ticket, SIM_CLOSED, memory_order_acq_rel) & ~SIM_CLOSED;
    double t_own = mono_ns();
    double t0 = 0.0;
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != joined; i++) {
        SIM_PAUSE();
        if ((i & 63u) == 63u) {
            double t = mono_ns();
            if (t0 == 0.0) {
                t0 = t;
            } else if (t - t0 > SIM_YIELD_AFTER_NS && t - t0 <= SIM_SPIN_NS) {
                sched_yield(); /* a joined worker the scheduler put behind us on this core finishes sooner */
            } else if (t - t0 > SIM_SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                while (atomic_load_explicit(&p->done, memory_order_acquire) != joined)
                    pthread_cond_wait(&p->cv_done, &p->mu);
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
    }
    note_wait(p, t_own - t_start, mono_ns() - t_own);
}

static double thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double win_median(const sim_workers *p, int way)
{
    double v[SIM_WIN];
    int n = p->n_win[way];
    for (int i = 0; i < n; i++) {
        double x = p->win[way][i];
        int k = i;
        for (; k > 0 && v[k - 1] > x; k--)
            v[k] = v[k - 1];
        v[k] = x;
    }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Chooses how this run goes. A back-off after contention (sim_workers_run_end) runs serially. Otherwise
 * the runs alternate until both ways have SIM_WIN_MIN times, then take the way with the lower median
 * time, except every SIM_EXPLORE_EVERY-th run. */
void sim_workers_run_begin(sim_workers *p)
{
    if (p == NULL)
        return;
    p->runs++;
    int way;
    if (p->n_win[0] < SIM_WIN_MIN || p->n_win[1] < SIM_WIN_MIN) {
        way = p->n_win[0] <= p->n_win[1] ? 0 : 1;
    } else {
        way = win_median(p, 0) < win_median(p, 1) ? 0 : 1;
        if (p->runs % SIM_EXPLORE_EVERY == 0)
            way = !way;
    }
    p->run_way = way;
    p->run_serial = way || p->serial_runs > 0 || p->n_started == 0;
    if (p->serial_runs > 0)
        p->serial_runs--;
    p->run_wall0 = mono_ns();
    p->run_cpu0 = thread_cpu_ns();
    if (!p->run_serial)
        atomic_store_explicit(&p->in_run, 1, memory_order_release);
}

/* A run whose calling thread was off the CPU for a quarter of the time met a busy host: more threads
 * than free cores make every thread wait for the scheduler, so the next runs go serially (8, 16, ...
 * up to 64 while it persists) before threads are tried again. An undisturbed run's wall time is kept for
 * the way it went (not the context's first run, with its cold caches and first-touch page faults): a
 * disturbed one measures the host's other processes, not the way. */
void sim_workers_run_end(sim_workers *p)
{
    if (p == NULL)
        return;
    atomic_store_explicit(&p->in_run, 0, memory_order_release); /* spinning workers go to sleep */
    double wall = mono_ns() - p->run_wall0, cpu = thread_cpu_ns() - p->run_cpu0;
    int disturbed = cpu < 0.75 * wall;
    if (!p->run_serial || p->run_way) {
        if (wall > SIM_RUN_MIN_NS && disturbed) {
            p->backoff = p->backoff == 0 ? 8 : (p->backoff < 64 ? p->backoff * 2 : 64);
            p->serial_runs = p->backoff;
        } else if (!disturbed) {
            p->backoff = 0;
        }
    }
    int way = p->run_serial;
    if (p->runs <= 1 || p->n_started == 0 || disturbed || way != p->run_way)
        return;
    p->win[way][p->pos_win[way]] = wall;
    p->pos_win[way] = (p->pos_win[way] + 1) % SIM_WIN;
    if (p->n_win[way] < SIM_WIN)
        p->n_win[way]++;
}

int sim_threads_wanted(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1)
        online = 1;
    long want = SIM_DEFAULT_THREADS;
    const char *env = getenv("RKNNLINK_SIM_THREADS");
    if (env != NULL && *env != '\0') {
        char *end = NULL;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno == 0 && end != env && *end == '\0' && v >= 1)
            want = v;
        else
            sim_log(SIM_LOG_WARN, "RKNNLINK_SIM_THREADS='%s' is not a positive integer; using %ld", env, want);
    }
    if (want > SIM_MAX_THREADS)
        want = SIM_MAX_THREADS;
    return (int)(want < online ? want : online);
}

sim_workers *sim_workers_create(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    sim_workers *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->api.run = pool_run;
    p->api.n_threads = 1;
    p->n_threads = n_threads;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv_work, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv_done, NULL) != 0) {
        pthread_cond_destroy(&p->cv_work);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->in_run, 0);
    atomic_init(&p->ticket, SIM_CLOSED);
    atomic_init(&p->done, 0);
    atomic_init(&p->next_chunk, 0);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (p->threads == NULL) {
            p->n_threads = 1;
            return p;
        }
    }
    for (int t = 1; t < n_threads; t++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa == NULL)
            break;
        wa->p = p;
        wa->tid = t;
        if (pthread_create(&p->threads[t - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            break;
        }
        p->n_started++;
    }
    /* with fewer workers than asked for, the ranges are cut for the threads that exist */
    p->n_threads = p->n_started + 1;
    p->api.n_threads = p->n_threads;
    if (p->n_started + 1 < n_threads)
        sim_log(SIM_LOG_WARN, "started %d of %d simulator threads", p->n_started + 1, n_threads);
    return p;
}

void sim_workers_destroy(sim_workers *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->n_started; t++)
        pthread_join(p->threads[t], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

sim_par *sim_workers_par(sim_workers *p)
{
    return p ? &p->api : NULL;
}
