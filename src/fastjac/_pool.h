/* fastjac's worker threads: a parallel for-loop over chunks that never
 * waits for a thread that has not started.
 *
 * Why not OpenMP: an OpenMP parallel region ends at a barrier that waits
 * for every thread of the team. On a machine whose cores other jobs share
 * (2-vCPU cloud VMs, CI runners), a thread that has lost its core holds the
 * whole call for milliseconds (measured with benchmarks/diagnose.py threads:
 * docs/performance.md, 'Measurements behind the code').
 *
 * Here the chunks are split into one contiguous range per thread, as an
 * OpenMP static schedule would (each thread streams through its own part of
 * the arrays, which the hardware prefetchers like), but a thread that has
 * emptied its own range takes the remaining chunks of the others, one at a
 * time from their far end. The calling thread works from the first chunk
 * on; a helper that wakes late finds its range taken over, and the call
 * returns as soon as every chunk is done: at worst it takes as long as on
 * one thread, plus the chunk a helper was running when it lost its core.
 *
 * Each range is one 64-bit word, (generation, end, next), on a cache line
 * of its own, claimed by compare-and-swap: the owner advances `next`, a
 * thief lowers `end`. The generation in the word means a helper that was
 * descheduled between two jobs can never take a chunk of a newer job
 * believing it is one of the old job: its compare-and-swap fails. A job's
 * description (function, data) is read only after a successful claim, and
 * the owner of the job does not return, nor post the next job, before every
 * claimed chunk is done (each thread adds its count of chunks done once, at
 * the end of its share).
 *
 * One job at a time: a call made while another Python thread's call holds
 * the helpers runs its chunks on its own thread (no oversubscription of the
 * cores, and the same chunks, so the same sums bit for bit).
 *
 * Helpers are started at the first parallel call, spin for FJ_SPIN_NS after
 * each job (back-to-back calls find them awake), then sleep on a condition
 * variable. Waking a sleeping helper costs the caller a system call and, on
 * a VM, an interrupt to the other vCPU: more than a small job gains from
 * a second thread (measured: docs/performance.md, 'Measurements behind the
 * code'). So a small job
 * (fj_parallel_for_small) wakes no sleeping helper unless it comes within
 * FJ_HOT_NS of the previous small job: a lone call runs on its caller, a
 * hot loop wakes the helpers once and then finds them spinning.
 *
 * After fork() the child has no helpers: they are started again
 * there when needed. fj_pool_resize() and fj_pool_close() (atexit) join
 * them.
 *
 * Without POSIX threads (FJ_POOL_SERIAL) every job runs on the caller.
 */
#ifndef FASTJAC_POOL_H
#define FASTJAC_POOL_H

#include <Python.h>            /* Py_ssize_t */
#include <stdint.h>

#if defined(_WIN32) || defined(FASTJAC_NO_THREADS)
#define FJ_POOL_SERIAL 1
#else
#include <pthread.h>
#include <signal.h>
#include <time.h>
#endif

/* Run chunk `chunk` of `job`; `worker` (0 = the caller, 1.. = helpers,
 * always < the job's max_workers) indexes per-thread scratch space. */
typedef void (*fj_chunk_fn)(void* job, Py_ssize_t chunk, int worker);

#define FJ_MAX_THREADS 64
#define FJ_MAX_CHUNKS 0xffff
#define FJ_SPIN_NS 200000          /* 0.2 ms of spinning before a helper sleeps */
#define FJ_OWNER_SPIN_NS 20000     /* 20 us before the caller sleeps in fj_finish */
#define FJ_HOT_NS 100000           /* small jobs this close together are a hot loop */

/* A thread that sets this (fj_set_thread_serial) runs its own jobs alone:
 * the Dask tasks of _dask.py, which already run one per core, do so. It is
 * per thread, so the pool's size and other threads' calls are untouched. */
#if defined(_MSC_VER)
static __declspec(thread) int fj_thread_serial = 0;
#else
static __thread int fj_thread_serial = 0;
#endif

static int fj_set_thread_serial(int serial) {
    int previous = fj_thread_serial;
    fj_thread_serial = serial;
    return previous;
}

static void fj_run_serially(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks) {
    Py_ssize_t c;
    for (c = 0; c < n_chunks; c++)
        fn(job, c, 0);
}

#ifdef FJ_POOL_SERIAL

static int fj_pool_threads(void) { return 1; }
static int fj_pool_resize(int threads) { (void)threads; return 1; }
static void fj_pool_close(void) {}
static void fj_parallel_for(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks, int max_workers) {
    (void)max_workers;
    fj_run_serially(fn, job, n_chunks);
}
static void fj_parallel_for_small(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks,
                                  int max_workers) {
    fj_parallel_for(fn, job, n_chunks, max_workers);
}

#else

/* A range of chunks: generation << 32 | end << 16 | next, on its own line. */
typedef struct {
    uint64_t word;
    char pad[64 - sizeof(uint64_t)];
} fj_range_t;

static struct {
    pthread_mutex_t lock;       /* guards sleeping and waking */
    pthread_cond_t wake;
    pthread_cond_t finished;    /* the owner of a job sleeps on it (fj_finish) */
    int threads;                /* atomic: threads a job may use, the caller included */
    int started;                /* helpers running (owner of `busy` only) */
    int closed;                 /* atomic: fj_pool_close ran, no more helpers */
    int stopping;               /* atomic: helpers are asked to exit */
    int busy;                   /* atomic: a job owns the helpers */
    int sleepers;               /* atomic: helpers asleep on `wake` */
    int owner_asleep;           /* atomic: the owner sleeps on `finished` */
    uint32_t generation;        /* atomic; written by the owner of `busy` */
    fj_chunk_fn fn;             /* the job: stable while chunks remain undone */
    void* job;
    int max_workers;            /* atomic */
    int n_ranges;               /* atomic */
    Py_ssize_t n_chunks;        /* atomic */
    pthread_t helper[FJ_MAX_THREADS];
    fj_range_t range[FJ_MAX_THREADS] __attribute__((aligned(64)));
    Py_ssize_t done __attribute__((aligned(64)));   /* atomic: chunks finished */
} fj_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 1};

static int fj_pool_threads(void) { return __atomic_load_n(&fj_pool.threads, __ATOMIC_RELAXED); }

static inline void fj_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t fj_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Take a chunk of generation `gen` from range r: its first (front) or its
 * last; 0 when none is left. */
static int fj_take(int r, uint32_t gen, int front, Py_ssize_t* chunk) {
    uint64_t* word = &fj_pool.range[r].word;
    uint64_t s = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t end = (uint32_t)(s >> 16) & 0xffff, next = (uint32_t)s & 0xffff;
        if ((uint32_t)(s >> 32) != gen || next >= end)
            return 0;
        if (__atomic_compare_exchange_n(word, &s, front ? s + 1 : s - ((uint64_t)1 << 16), 1,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            *chunk = (Py_ssize_t)(front ? next : end - 1);
            return 1;
        }
    }
}

/* A thread's share of job `gen`: its own range, then what is left of the
 * others'. */
static void fj_work(uint32_t gen, int worker) {
    Py_ssize_t c, mine = 0;
    int k, n_ranges = __atomic_load_n(&fj_pool.n_ranges, __ATOMIC_ACQUIRE);
    fj_chunk_fn fn = NULL;
    void* job = NULL;
    if (n_ranges < 1 || n_ranges > FJ_MAX_THREADS)
        return;
    for (k = 0; k < n_ranges; k++) {
        int r = (worker + k) % n_ranges;
        while (fj_take(r, gen, k == 0 && worker < n_ranges, &c)) {
            if (fn == NULL) {           /* read only once a chunk is ours */
                fn = fj_pool.fn;
                job = fj_pool.job;
            }
            fn(job, c, worker);
            mine++;
        }
    }
    if (mine && __atomic_add_fetch(&fj_pool.done, mine, __ATOMIC_SEQ_CST)
                    == __atomic_load_n(&fj_pool.n_chunks, __ATOMIC_RELAXED)
            && worker != 0 && __atomic_load_n(&fj_pool.owner_asleep, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&fj_pool.lock);
        pthread_cond_signal(&fj_pool.finished);
        pthread_mutex_unlock(&fj_pool.lock);
    }
}

/* The owner's wait for the chunks helpers are still running: spin (a chunk
 * is short: docs/performance.md, 'Measurements behind the code'), then
 * sleep, which frees this core for a helper that
 * lost its own to another thread or process (the scheduler moves a waiting
 * thread to an idle core). */
static void fj_finish(Py_ssize_t n_chunks) {
    uint64_t t0 = fj_now_ns();
    unsigned spins = 0;
    while (__atomic_load_n(&fj_pool.done, __ATOMIC_ACQUIRE) < n_chunks) {
        fj_cpu_relax();
        if ((++spins & 255) == 0 && fj_now_ns() - t0 > FJ_OWNER_SPIN_NS) {
            pthread_mutex_lock(&fj_pool.lock);
            __atomic_store_n(&fj_pool.owner_asleep, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&fj_pool.done, __ATOMIC_SEQ_CST) < n_chunks)
                pthread_cond_wait(&fj_pool.finished, &fj_pool.lock);
            __atomic_store_n(&fj_pool.owner_asleep, 0, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&fj_pool.lock);
            return;
        }
    }
}

/* A helper's wait for a generation other than `seen`: spin, then sleep.
 * Returns `seen` when asked to exit. */
static uint32_t fj_wait(uint32_t seen) {
    uint64_t t0 = fj_now_ns();
    unsigned spins = 0;
    uint32_t g;
    for (;;) {
        g = __atomic_load_n(&fj_pool.generation, __ATOMIC_ACQUIRE);
        if (g != seen)
            return g;
        if (__atomic_load_n(&fj_pool.stopping, __ATOMIC_ACQUIRE))
            return seen;
        fj_cpu_relax();
        if ((++spins & 255) == 0 && fj_now_ns() - t0 > FJ_SPIN_NS)
            break;
    }
    pthread_mutex_lock(&fj_pool.lock);
    __atomic_fetch_add(&fj_pool.sleepers, 1, __ATOMIC_SEQ_CST);
    while ((g = __atomic_load_n(&fj_pool.generation, __ATOMIC_SEQ_CST)) == seen
           && !__atomic_load_n(&fj_pool.stopping, __ATOMIC_SEQ_CST))
        pthread_cond_wait(&fj_pool.wake, &fj_pool.lock);
    __atomic_fetch_sub(&fj_pool.sleepers, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&fj_pool.lock);
    return g;
}

static void* fj_helper_main(void* arg) {
    int worker = (int)(intptr_t)arg;
    uint32_t seen = __atomic_load_n(&fj_pool.generation, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t gen = fj_wait(seen);
        if (gen == seen)
            return NULL;
        seen = gen;
        if (worker < __atomic_load_n(&fj_pool.max_workers, __ATOMIC_ACQUIRE))
            fj_work(gen, worker);
    }
}

static void fj_wake_all(void) {
    pthread_mutex_lock(&fj_pool.lock);
    pthread_cond_broadcast(&fj_pool.wake);
    pthread_mutex_unlock(&fj_pool.lock);
}

/* Start the missing helpers (called by the owner of `busy`). A helper is
 * created with every signal blocked: signals go to the interpreter's
 * threads. If the system refuses a thread, fewer helpers run. */
static void fj_start_helpers(void) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (fj_pool.started < fj_pool_threads() - 1) {
        int worker = fj_pool.started + 1;
        if (pthread_create(&fj_pool.helper[fj_pool.started], NULL, fj_helper_main,
                           (void*)(intptr_t)worker) != 0) {
            __atomic_store_n(&fj_pool.threads, fj_pool.started + 1, __ATOMIC_RELAXED);
            break;
        }
        fj_pool.started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void fj_stop_helpers(void) {
    int i;
    __atomic_store_n(&fj_pool.stopping, 1, __ATOMIC_SEQ_CST);
    fj_wake_all();
    for (i = 0; i < fj_pool.started; i++)
        pthread_join(fj_pool.helper[i], NULL);
    fj_pool.started = 0;
    __atomic_store_n(&fj_pool.stopping, 0, __ATOMIC_SEQ_CST);
}

static void fj_acquire(void) {
    int expected = 0;
    while (!__atomic_compare_exchange_n(&fj_pool.busy, &expected, 1, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        expected = 0;
        sched_yield();
    }
}

/* fork(): the child has none of the parent's helpers, and the lock and the
 * busy flag may have been held by a thread that does not exist there. */
static void fj_after_fork_in_child(void) {
    pthread_mutex_init(&fj_pool.lock, NULL);
    pthread_cond_init(&fj_pool.wake, NULL);
    pthread_cond_init(&fj_pool.finished, NULL);
    fj_pool.owner_asleep = 0;
    fj_pool.started = 0;
    fj_pool.stopping = 0;
    fj_pool.sleepers = 0;
    fj_pool.busy = 0;
}

/* Use `threads` threads (the caller included) from the next job on; waits
 * for a running job to end. Returns the number in effect. */
static int fj_pool_resize(int threads) {
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, fj_after_fork_in_child);
        registered = 1;
    }
    if (threads < 1)
        threads = 1;
    if (threads > FJ_MAX_THREADS)
        threads = FJ_MAX_THREADS;
    fj_acquire();
    if (fj_pool.started > threads - 1)
        fj_stop_helpers();
    __atomic_store_n(&fj_pool.threads, threads, __ATOMIC_RELAXED);
    __atomic_store_n(&fj_pool.busy, 0, __ATOMIC_RELEASE);
    return threads;
}

/* Join the helpers for good (at interpreter exit); later jobs run serially. */
static void fj_pool_close(void) {
    fj_acquire();
    fj_stop_helpers();
    __atomic_store_n(&fj_pool.closed, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&fj_pool.busy, 0, __ATOMIC_RELEASE);
}

/* fn(job, c, worker) for every c in [0, n_chunks), on up to max_workers
 * threads; returns when all are done. */
static void fj_parallel_for(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks, int max_workers) {
    int expected = 0, r, n_ranges, threads;
    uint32_t gen;
    /* threads and closed are read again once the pool is ours; this first
     * look only avoids the compare-and-swap when there is no pool to use */
    if (n_chunks <= 1 || max_workers <= 1 || fj_pool_threads() <= 1 || fj_thread_serial
            || __atomic_load_n(&fj_pool.closed, __ATOMIC_RELAXED)
            || n_chunks > FJ_MAX_CHUNKS
            || !__atomic_compare_exchange_n(&fj_pool.busy, &expected, 1, 0,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        fj_run_serially(fn, job, n_chunks);
        return;
    }
    if (__atomic_load_n(&fj_pool.closed, __ATOMIC_RELAXED)) {     /* closed meanwhile */
        __atomic_store_n(&fj_pool.busy, 0, __ATOMIC_RELEASE);
        fj_run_serially(fn, job, n_chunks);
        return;
    }
    threads = fj_pool_threads();
    if (fj_pool.started < threads - 1)
        fj_start_helpers();
    threads = fj_pool_threads();        /* fewer if a thread could not start */
    fj_pool.fn = fn;
    fj_pool.job = job;
    n_ranges = threads < max_workers ? threads : max_workers;
    if (n_ranges > n_chunks)
        n_ranges = (int)n_chunks;
    __atomic_store_n(&fj_pool.max_workers, max_workers, __ATOMIC_RELAXED);
    __atomic_store_n(&fj_pool.n_ranges, n_ranges, __ATOMIC_RELAXED);
    __atomic_store_n(&fj_pool.n_chunks, n_chunks, __ATOMIC_RELAXED);
    __atomic_store_n(&fj_pool.done, 0, __ATOMIC_RELAXED);
    gen = fj_pool.generation + 1;
    for (r = 0; r < n_ranges; r++) {      /* contiguous, sizes differing by one at most */
        uint64_t first = (uint64_t)(n_chunks * r / n_ranges);
        uint64_t end = (uint64_t)(n_chunks * (r + 1) / n_ranges);
        __atomic_store_n(&fj_pool.range[r].word, ((uint64_t)gen << 32) | (end << 16) | first,
                         __ATOMIC_RELEASE);
    }
    __atomic_store_n(&fj_pool.generation, gen, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&fj_pool.sleepers, __ATOMIC_SEQ_CST))
        fj_wake_all();
    fj_work(gen, 0);
    fj_finish(n_chunks);        /* only chunks a helper is running remain */
    __atomic_store_n(&fj_pool.busy, 0, __ATOMIC_RELEASE);
}

/* fj_parallel_for for a job of a few microseconds: on the caller alone if
 * a helper sleeps and the previous small job was more than FJ_HOT_NS ago
 * (see the note at the top). */
static void fj_parallel_for_small(fj_chunk_fn fn, void* job, Py_ssize_t n_chunks,
                                  int max_workers) {
    static uint64_t last_ns = 0;    /* atomic: when the previous small job started */
    uint64_t now = fj_now_ns();
    uint64_t previous = __atomic_exchange_n(&last_ns, now, __ATOMIC_RELAXED);
    if (__atomic_load_n(&fj_pool.sleepers, __ATOMIC_RELAXED) && now - previous > FJ_HOT_NS) {
        fj_run_serially(fn, job, n_chunks);
        return;
    }
    fj_parallel_for(fn, job, n_chunks, max_workers);
}

#endif  /* FJ_POOL_SERIAL */
#endif  /* FASTJAC_POOL_H */
