/* Stress test of src/fastjac/_pool.h, built with ThreadSanitizer by
 * tests/test_pool.py: two threads run jobs on the pool at once (one owns the
 * helpers, the other runs its chunks itself; every other job is a "small"
 * one, fj_parallel_for_small) while a third resizes the pool
 * between 1 and 4 threads; every element of every job must be written, and
 * ThreadSanitizer must report no data race. */
#include <Python.h>
#include "_pool.h"
#include <stdio.h>
#include <stdlib.h>

#ifndef ROUNDS
#define ROUNDS 500
#endif
typedef struct { double* out; Py_ssize_t chunk, n; } job_t;
static void fn(void* j, Py_ssize_t c, int worker) {
    job_t* job = j;
    for (Py_ssize_t i = c * job->chunk; i < (c + 1) * job->chunk && i < job->n; i++) job->out[i] = i * 0.5;
}
static void* caller(void* arg) {
    long bad = 0;
    double* out = calloc(100000, sizeof(double));
    for (int r = 0; r < ROUNDS; r++) {
        job_t job = {out, 1000, 100000};
        for (int i = 0; i < 100000; i++) out[i] = -1;
        if (r % 2)
            fj_parallel_for(fn, &job, 100, 4);
        else            /* on the caller alone unless the helpers are awake */
            fj_parallel_for_small(fn, &job, 100, 4);
        for (int i = 0; i < 100000; i++) bad += out[i] != i * 0.5;
    }
    free(out);
    return (void*)bad;
}
static void* resizer(void* arg) {
    for (int r = 0; r < 300; r++) fj_pool_resize(1 + r % 4);
    return NULL;
}
int main(void) {
    pthread_t t[3];
    fj_pool_resize(3);
    pthread_create(&t[0], NULL, caller, NULL);
    pthread_create(&t[1], NULL, caller, NULL);
    pthread_create(&t[2], NULL, resizer, NULL);
    void* b0; void* b1;
    pthread_join(t[0], &b0); pthread_join(t[1], &b1); pthread_join(t[2], NULL);
    fj_pool_close();
    printf("wrong elements: %ld %ld\n", (long)b0, (long)b1);
    return (b0 || b1);
}
