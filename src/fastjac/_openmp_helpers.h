/* OpenMP where the build found it, one thread where it did not (setup.py). */
#ifndef FASTJAC_OPENMP_HELPERS_H
#define FASTJAC_OPENMP_HELPERS_H
#if FASTJAC_OPENMP
#include <omp.h>
static int fastjac_max_threads(void) { return omp_get_max_threads(); }
#else
static int fastjac_max_threads(void) { return 1; }
#endif
#endif
