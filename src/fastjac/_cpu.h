/* Which wider x86-64 vector units the CPU (and the OS, which must save their
 * registers) offers, as an index into fastjac._simd.LEVELS: 2 = AVX-512
 * (F, CD, BW, DQ, VL) with AVX2 + FMA, 1 = AVX2 + FMA, 0 = neither, or not
 * x86-64. __builtin_cpu_supports checks the OS's XSAVE state as well. */
#ifndef FASTJAC_CPU_H
#define FASTJAC_CPU_H

static int fastjac_cpu_simd(void) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl"))
        return 2;
    return 1;
#else
    return 0;
#endif
}

#endif
