# Design note
# -----------
# The loops of the expression layer, as inline functions: the fused block
# program of _expr.pyx (``run_program``) and the single-neuron pass of
# _neuron.pyx (``neuron_pass``). They are compiled into one extension module
# per instruction set from this one source, beside the core's _loops.pxd
# (_level.pxi), each exporting an ``ExprTable`` of function pointers, which
# fastjac._simd.select installs in _expr.pyx. Nothing here checks anything:
# the callers have validated every pointer and size.
#
# The block program
# -----------------
# expr.py turns an expression DAG into a *program*: a short list of
# instructions over *registers*, each register a block of BLOCK numbers.
# Forward mode is already spelled out in the program: for every variable we
# differentiate with respect to, the tangent of each node is computed by
# ordinary instructions (t_y = f'(a) * t_a, ...), so this file only runs
# straight-line vector code, not calculus. Derivative formulas come from
# _derivatives.pxd through ``derivative_into`` of _kernels (one formula, one
# place): the DERIV instruction applies one of its codes to a block.
#
# Registers are of four kinds:
#   TEMP    scratch memory of the thread (L1-resident: BLOCK * 8 bytes each);
#   SCALAR  scratch filled once per chunk with one number (a constant, a
#           scalar variable, a reduction computed by an earlier stage);
#   ARRAY   a window into an input array: no copy, each input is read once;
#   OUT     a window into an output array: the instruction that computes an
#           output writes it in place, so each output is written once.
#
# Large data is cut into chunks that the threads of _pool take one by one
# (see _pool.h), and each chunk into blocks of BLOCK elements; the program
# runs on one block at a time. The switch on the opcode happens once per
# instruction and block, so every inner loop is a plain loop the compiler
# vectorises, and no temporary ever has the length of the data. SUM
# instructions add a register's block into the chunk's accumulator (double,
# four lanes); chunk totals are added in chunk order, and chunks depend on n
# only, so a result does not depend on scheduling or on the thread count.
#
# The neuron
# ----------
# C(w, b) = (1/N) sum_i (y_i - relu(w . x_i + b))**2 and its gradient, in one
# pass over the rows of X; see _neuron.pyx. Rows are taken four at a time so
# that the dot products are independent chains (the FMA latency is hidden
# without reassociating sums) and the four axpy's into the accumulator form
# one loop over the features that vectorises. relu'(0) = 0 (the mask is
# z > 0), as in the core; a NaN z contributes NaN.

from cython cimport floating
from libc.math cimport copysign, expm1, expm1f, fabs, log1p, log1pf
from libc.stdlib cimport free, malloc

from ._derivatives cimport (f_abs, f_cos, f_exp, f_log, f_pow, f_sin, f_sqrt, fj_exp,
                            fj_log, fj_trig_fast, logistic, tanh_series, two_difference, v_cos,
                            v_sin,
                            SQRT_D)
from ._kernels cimport derivative_into, in_chunks
from ._pool cimport parallel_for, pool_threads

cdef enum:
    BLOCK = 256            # elements per register: 2 KiB of float64
    # Outputs of this many bytes and more bypass the cache (as the core's
    # _loops.pxd: half this machine's L3; smaller results stay cached).
    STREAM_MIN_BYTES = 1 << 24
    LOCAL_FEATURES = 64    # the neuron's accumulator stays a local array up to this n
    # Chunks on the pool's threads (_pool.h): at least MIN_CHUNK_BLOCKS
    # blocks each, at most MAX_PROGRAM_CHUNKS of them (the neuron: at least
    # MIN_CHUNK_BLOCKS * BLOCK elements of X, at most MAX_NEURON_CHUNKS).
    MIN_CHUNK_BLOCKS = 16
    MAX_PROGRAM_CHUNKS = 1024
    MAX_NEURON_CHUNKS = 64

cdef extern from "_neuron_rows.h" nogil:
    # 1 where the compiler has vector types (gcc >= 9, clang): rows_vector
    bint FJ_NEURON_VECTOR
    void fj_neuron_rows_double(const double* X, const double* y, const double* w, double b,
                            Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,
                            double* gw, double* out)
    void fj_neuron_rows_float(const float* X, const float* y, const float* w, double b,
                            Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,
                            double* gw, double* out)

cdef extern from "_vecmath.h" nogil:
    void fj_stream_f64(double* dst, const double* src, Py_ssize_t n)
    void fj_stream_f32(float* dst, const float* src, Py_ssize_t n)
    void fj_stream_fence()

# -- opcodes (mirrored by OPCODES in _expr.pyx for expr.py) -----------------------
cdef enum Opcode:
    OP_COPY
    OP_ADD
    OP_SUB
    OP_MUL
    OP_DIV
    OP_MAX
    OP_MIN
    OP_GT
    OP_LT
    OP_POW
    OP_NEG
    OP_SQUARE
    OP_SQRT
    OP_EXP
    OP_LOG
    OP_SIN
    OP_COS
    OP_TANH
    OP_SIGMOID
    OP_RELU
    OP_ABS
    OP_MULADD        # d = a * b + c
    OP_DERIV         # d = derivative(code c, a, b), formulas of _derivatives.pxd
    OP_SUM           # acc[d] += sum(a)
    OP_TANH_VD       # d = tanh(a) and b = tanh'(a), from one exponential
    OP_SOFTPLUS
    OP_LOG_SIGMOID
    OP_LOGADDEXP
    OP_LOG1P
    OP_EXPM1
    OP_SOFTPLUS_VD   # d = softplus(a), b = its derivative, c (if >= 0) the second: one exp

# register kinds
cdef enum:
    K_TEMP = 0
    K_SCALAR = 1
    K_ARRAY = 2
    K_OUT = 3

# This module's loops are exported as an ExprTable (_tables.pxd, _level.pxi).


cdef inline floating f_tanh(floating x) noexcept nogil:
    # Vectorisable tanh (libm's is a call per element, ten times slower):
    #   |x| <  0.55: x * P(x^2), the Taylor series of tanh to x^39 (terms
    #                2^2n (2^2n - 1) B_2n / (2n)!; the next one is below
    #                1e-17 of the first there), so no cancellation near 0;
    #   |x| >= 0.55: 1 - 2 / (exp(2|x|) + 1), where the result is >= 0.5
    #                and the subtraction loses nothing (exp: _vecmath.h);
    # both computed, one selected, the sign copied back. Measured error
    # under 1.5 ulp in float64 (against mpmath); float32 is computed in
    # double and rounded once. tanh(+-inf) = +-1, tanh(nan) = nan, -0 -> -0.
    cdef double ax = fabs(<double>x)
    cdef double x2 = ax * ax
    cdef double p, big, t
    p = tanh_series(x2)
    big = 1 - 2 / (fj_exp(2 * ax) + 1)
    t = ax * p if ax < 0.55 else big
    return <floating>copysign(t, <double>x)


cdef inline void tanh_vd(floating x, floating* v, floating* dv) noexcept nogil:
    # tanh and its derivative together, from one exponential e = exp(-2|x|):
    #   |x| <  0.55: v = x P(x^2) (as f_tanh), v' = 1 - v^2 (v^2 < 0.3: no
    #                cancellation);
    #   |x| >= 0.55: v = (1 - e) / (1 + e), v' = 4 e / (1 + e)^2 (e < 0.34:
    #                no cancellation either, and v' keeps its relative
    #                accuracy where v rounds to +-1).
    cdef double ax = fabs(<double>x)
    cdef double x2 = ax * ax
    cdef double p, small, e, q, t, d
    p = tanh_series(x2)
    small = ax * p
    e = fj_exp(-2 * ax)
    q = 1 / (1 + e)
    t = small if ax < 0.55 else (1 - e) * q
    d = 1 - small * small if ax < 0.55 else 4 * e * q * q
    v[0] = <floating>copysign(t, <double>x)
    dv[0] = <floating>d


cdef inline floating f_sigmoid(floating x) noexcept nogil:
    # the formula of the derivative of softplus (_derivatives.pxd), in the
    # float type itself (f_exp is _vecmath.h's)
    return logistic(x)


cdef inline double log1p_exp(double d, double tail) noexcept nogil:
    """log(1 + exp(-(d + tail))) for d >= 0 (or NaN) and a tail |tail| <=
    ulp(d) (the rounding error of a difference d; 0 when there is none).

    Vectorised: e = exp(-d) <= 1 and u = 1 + e rounded, so 1 + e = u + c
    exactly with c = e - (u - 1); then log(1 + e) = log(u) + c / u to well
    below an ulp (_vecmath.h's fj_log, < 1 ulp, where libm's log1p is a
    call per element), and the tail moves the result by -tail e / (1 + e).
    """
    cdef double e = fj_exp(-d)
    cdef double u = 1 + e
    cdef double c = e - (u - 1)
    return fj_log(u) + (c - e * tail) / u


cdef inline floating f_softplus(floating x) noexcept nogil:
    # log(1 + e**x) = max(x, 0) + log(1 + e**-|x|): no overflow for large x,
    # no cancellation (both terms >= 0); in double, float32 rounded once.
    # NaN gives NaN, inf gives inf, -inf gives 0.
    cdef double xd = x
    cdef double m = xd if xd > 0 else 0
    return <floating>(m + log1p_exp(fabs(xd), 0))


cdef inline void softplus_vd(floating x, floating* v, floating* dv, floating* ddv) noexcept nogil:
    # softplus, sigmoid (its derivative) and sigmoid' (its second), from one
    # exponential e = exp(-|x|) -- each with the bits of its own formula
    # (f_softplus, _derivatives.pxd's logistic in double), not recomputed.
    # ddv may be NULL.
    cdef double xd = x
    cdef double e = fj_exp(-fabs(xd))
    cdef double u = 1 + e
    cdef double c = e - (u - 1)
    cdef double s = 1 / u
    v[0] = <floating>((xd if xd > 0 else 0) + (fj_log(u) + c / u))
    dv[0] = <floating>(s if xd >= 0 else e * s)
    if ddv != NULL:
        ddv[0] = <floating>(e / (u * u))


cdef inline floating f_log_sigmoid(floating x) noexcept nogil:
    # log(sigmoid(x)) = -softplus(-x): the same care, the same bits negated
    return -f_softplus(-x)


cdef inline floating f_logaddexp(floating a, floating b) noexcept nogil:
    # log(e**a + e**b) = max(a, b) + log(1 + e**-|a - b|), with a - b carried
    # exactly (TwoSum) into the logarithm; as np.logaddexp at the edges: a
    # tie gives a + log 2 (equal infinities: that infinity), NaN gives NaN.
    # In double, float32 rounded once.
    cdef double t
    cdef double d = two_difference(a, b, &t)
    cdef double m = a if a > b else b
    return <floating>(m + log1p_exp(fabs(d), t if d >= 0 else -t))


cdef inline floating f_log1p(floating x) noexcept nogil:
    # libm's, as log: a call per element, and the same call in the JIT's C
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating f_expm1(floating x) noexcept nogil:
    # libm's, as log1p (the JIT's C calls the same function)
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline void trig_block(bint cosine, const floating* a, floating* d, Py_ssize_t m) noexcept nogil:
    """sin or cos of a block: vectorised (_vecmath.h), with the rare
    arguments beyond its range (|x| >= 2**17) redone on libm afterwards."""
    cdef Py_ssize_t i
    cdef int slow = 0
    if cosine:
        for i in range(m):
            d[i] = v_cos(a[i])
            slow |= not fj_trig_fast(a[i])
    else:
        for i in range(m):
            d[i] = v_sin(a[i])
            slow |= not fj_trig_fast(a[i])
    if slow:
        for i in range(m):
            if not fj_trig_fast(a[i]):
                d[i] = f_cos(a[i]) if cosine else f_sin(a[i])


cdef inline double block_sum(const floating* a, Py_ssize_t m) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i, m4 = m - m % 4
    for i in range(0, m4, 4):
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
    for i in range(m4, m):
        s0 += a[i]
    return (s0 + s1) + (s2 + s3)


cdef inline void exec_block(const int* prog, Py_ssize_t n_instr, floating** R,
                     double* acc, Py_ssize_t m) noexcept nogil:
    """Run the program once over one block of m elements."""
    cdef Py_ssize_t k, i
    cdef int op
    cdef floating* d
    cdef const floating* a
    cdef const floating* b
    cdef const floating* c
    cdef floating u, v
    cdef floating* e2
    cdef floating* e3
    for k in range(n_instr):
        op = prog[5 * k]
        if op == OP_SUM:
            acc[prog[5 * k + 1]] += block_sum(R[prog[5 * k + 2]], m)
            continue
        d = R[prog[5 * k + 1]]
        a = R[prog[5 * k + 2]]
        if op == OP_DERIV:
            if prog[5 * k + 4] == SQRT_D:
                # 0.5 / sqrt(a), rounded as the compiled loop (_jit.py) rounds
                # it, not the kernels' AVX-512 Newton iteration (_vecmath.h):
                # an expression gives the same bits interpreted or compiled.
                for i in range(m):
                    d[i] = <floating>0.5 / f_sqrt(a[i])
                continue
            derivative_into(prog[5 * k + 4], a, 1, R[prog[5 * k + 3]], 1, d, m)
            continue
        if op == OP_TANH_VD:
            e2 = R[prog[5 * k + 3]]
            for i in range(m):
                tanh_vd(a[i], &d[i], &e2[i])
            continue
        if op == OP_SOFTPLUS_VD:
            e2 = R[prog[5 * k + 3]]
            if prog[5 * k + 4] >= 0:
                e3 = R[prog[5 * k + 4]]
                for i in range(m):
                    softplus_vd(a[i], &d[i], &e2[i], &e3[i])
            else:
                for i in range(m):
                    softplus_vd(a[i], &d[i], &e2[i], <floating*>NULL)
            continue
        if op == OP_COPY:
            for i in range(m):
                d[i] = a[i]
        elif op == OP_NEG:
            for i in range(m):
                d[i] = -a[i]
        elif op == OP_SQUARE:
            for i in range(m):
                d[i] = a[i] * a[i]
        elif op == OP_SQRT:
            for i in range(m):
                d[i] = f_sqrt(a[i])
        elif op == OP_EXP:
            for i in range(m):
                d[i] = f_exp(a[i])
        elif op == OP_LOG:
            for i in range(m):
                d[i] = f_log(a[i])
        elif op == OP_SIN:
            trig_block(False, a, d, m)
        elif op == OP_COS:
            trig_block(True, a, d, m)
        elif op == OP_TANH:
            for i in range(m):
                d[i] = f_tanh(a[i])
        elif op == OP_SIGMOID:
            for i in range(m):
                d[i] = f_sigmoid(a[i])
        elif op == OP_SOFTPLUS:
            for i in range(m):
                d[i] = f_softplus(a[i])
        elif op == OP_EXPM1:
            for i in range(m):
                d[i] = f_expm1(a[i])
        elif op == OP_LOG1P:
            for i in range(m):
                d[i] = f_log1p(a[i])
        elif op == OP_LOG_SIGMOID:
            for i in range(m):
                d[i] = f_log_sigmoid(a[i])
        elif op == OP_RELU:
            for i in range(m):
                d[i] = 0 if a[i] <= 0 else a[i]      # NaN stays NaN
        elif op == OP_ABS:
            for i in range(m):
                d[i] = f_abs(a[i])
        else:
            b = R[prog[5 * k + 3]]
            if op == OP_ADD:
                for i in range(m):
                    d[i] = a[i] + b[i]
            elif op == OP_SUB:
                for i in range(m):
                    d[i] = a[i] - b[i]
            elif op == OP_MUL:
                for i in range(m):
                    d[i] = a[i] * b[i]
            elif op == OP_DIV:
                for i in range(m):
                    d[i] = a[i] / b[i]
            elif op == OP_MULADD:
                c = R[prog[5 * k + 4]]
                for i in range(m):
                    d[i] = a[i] * b[i] + c[i]
            elif op == OP_MAX:
                # NaN in either operand gives NaN, as np.maximum; two selects
                # (no branch), so the loop vectorises
                for i in range(m):
                    u = a[i]
                    v = b[i]
                    u = v if v > u else u           # a NaN u stays
                    d[i] = v if v != v else u       # a NaN v wins
            elif op == OP_MIN:
                for i in range(m):
                    u = a[i]
                    v = b[i]
                    u = v if v < u else u
                    d[i] = v if v != v else u
            elif op == OP_GT:
                for i in range(m):
                    d[i] = 1 if a[i] > b[i] else 0
            elif op == OP_LT:
                for i in range(m):
                    d[i] = 1 if a[i] < b[i] else 0
            elif op == OP_POW:
                for i in range(m):
                    d[i] = f_pow(a[i], b[i])
            elif op == OP_LOGADDEXP:
                for i in range(m):
                    d[i] = f_logaddexp(a[i], b[i])


cdef inline void stream_out(floating* dst, const floating* src, Py_ssize_t m) noexcept nogil:
    """dst[0:m] = src[0:m], the whole 64-byte lines of dst with stores that
    bypass the cache (_vecmath.h), the partial lines at either end ordinary."""
    cdef Py_ssize_t i
    cdef Py_ssize_t head = (<Py_ssize_t>(-(<size_t>dst) % 64)) // sizeof(floating)
    if head > m:
        head = m
    for i in range(head):
        dst[i] = src[i]
    if floating is double:
        fj_stream_f64(dst + head, src + head, m - head)
    else:
        fj_stream_f32(dst + head, src + head, m - head)


cdef inline void bind_scratch(Py_ssize_t n_regs, const int* kind, const int* index,
                              const int* slot, const double* scalars, floating* scratch,
                              floating** R) noexcept nogil:
    """Point the TEMP and SCALAR registers at their slots of the thread's
    scratch, and fill each SCALAR register with its value (a block of it)."""
    cdef Py_ssize_t r, i
    cdef floating s
    for r in range(n_regs):
        if kind[r] == K_TEMP:
            R[r] = scratch + <Py_ssize_t>slot[r] * BLOCK
        elif kind[r] == K_SCALAR:
            R[r] = scratch + <Py_ssize_t>slot[r] * BLOCK
            s = <floating>scalars[index[r]]
            for i in range(BLOCK):
                R[r][i] = s


cdef inline void run_chunk(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                    const int* kind, const int* index, const int* slot, Py_ssize_t n_slots,
                    floating** arrays, const double* scalars, floating** outs,
                    floating* scratch, floating** R, double* acc, Py_ssize_t n_acc,
                    Py_ssize_t start, Py_ssize_t stop, bint streamed) noexcept nogil:
    # streamed: OUT registers are scratch too, copied out after each block
    # with non-temporal stores (outputs far larger than the cache: this
    # saves the read of every output line that an ordinary store costs).
    cdef Py_ssize_t r, i, pos, m, extra = n_slots
    for i in range(n_acc):
        acc[i] = 0
    bind_scratch(n_regs, kind, index, slot, scalars, scratch, R)
    for r in range(n_regs):
        if kind[r] == K_OUT and streamed:
            R[r] = scratch + extra * BLOCK
            extra += 1
    pos = start
    while pos < stop:
        m = stop - pos
        if m > BLOCK:
            m = BLOCK
        for r in range(n_regs):
            if kind[r] == K_ARRAY:
                R[r] = arrays[index[r]] + pos
            elif kind[r] == K_OUT and not streamed:
                R[r] = outs[index[r]] + pos
        exec_block(prog, n_instr, R, acc, m)
        if streamed:
            for r in range(n_regs):
                if kind[r] == K_OUT:
                    stream_out(outs[index[r]] + pos, R[r], m)
        pos += m
    if streamed:
        fj_stream_fence()


# One call of a program, shared by the threads that run its chunks.
cdef struct ProgramJob:
    const int* prog
    Py_ssize_t n_instr, n_regs
    const int* kind
    const int* index
    const int* slot
    Py_ssize_t n_slots
    void** arrays               # floating**, as the program's dtype
    const double* scalars
    void** outs
    void* scratch               # per worker: per_worker elements
    Py_ssize_t per_worker
    void** R                    # per worker: n_regs register pointers
    double* acc                 # per chunk: n_acc accumulators
    Py_ssize_t n_acc, n, chunk
    bint streamed


cdef inline void program_chunk(floating* dtype, ProgramJob* job, Py_ssize_t c,
                               int worker) noexcept nogil:
    cdef Py_ssize_t start = c * job.chunk
    cdef Py_ssize_t stop = min(start + job.chunk, job.n)
    run_chunk(job.prog, job.n_instr, job.n_regs, job.kind, job.index, job.slot, job.n_slots,
              <floating**>job.arrays, job.scalars, <floating**>job.outs,
              <floating*>job.scratch + worker * job.per_worker,
              <floating**>job.R + worker * job.n_regs, job.acc + c * job.n_acc, job.n_acc,
              start, stop, job.streamed)


cdef inline void program_chunk_f64(void* job, Py_ssize_t c, int worker) noexcept nogil:
    program_chunk(<double*>NULL, <ProgramJob*>job, c, worker)


cdef inline void program_chunk_f32(void* job, Py_ssize_t c, int worker) noexcept nogil:
    program_chunk(<float*>NULL, <ProgramJob*>job, c, worker)


cdef inline Py_ssize_t program_chunk_size(Py_ssize_t n) noexcept nogil:
    """Elements per chunk of a program over n elements: a whole number of
    blocks, depending on n only; n itself (one chunk) below the pool's size."""
    cdef Py_ssize_t chunk
    if not in_chunks(n):
        return n
    chunk = max(<Py_ssize_t>MIN_CHUNK_BLOCKS * BLOCK,
                (n + MAX_PROGRAM_CHUNKS - 1) // MAX_PROGRAM_CHUNKS)
    return (chunk + BLOCK - 1) // BLOCK * BLOCK


cdef inline void add_chunk_sums(const double* acc, Py_ssize_t n_chunks, Py_ssize_t n_acc,
                                double* sums) noexcept nogil:
    """sums[j] = accumulator j of every chunk (acc[c * n_acc + j]), added in
    chunk order: the same total on any number of threads."""
    cdef Py_ssize_t c, j
    for j in range(n_acc):
        sums[j] = 0
    for c in range(n_chunks):
        for j in range(n_acc):
            sums[j] += acc[c * n_acc + j]


cdef inline int run_program(const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                     const int* kind, const int* index, const int* slot, Py_ssize_t n_slots,
                     floating** arrays, const double* scalars, floating** outs,
                     double* sums, Py_ssize_t n_acc, Py_ssize_t n) noexcept nogil:
    """Run the program over n elements; sums[j] receives accumulator j. -1 on OOM.

    Large n runs in chunks (whole blocks) on the pool's threads; the chunks
    depend on n only and their accumulators are added in chunk order, so
    sums do not depend on the number of threads.
    """
    cdef ProgramJob job
    cdef int workers = pool_threads() if in_chunks(n) else 1
    cdef Py_ssize_t r, n_chunks, n_out = 0
    job.chunk = program_chunk_size(n)
    n_chunks = (n + job.chunk - 1) // job.chunk if n else 1
    job.streamed = n * <Py_ssize_t>sizeof(floating) >= STREAM_MIN_BYTES
    for r in range(n_regs):
        n_out += kind[r] == K_OUT
    job.per_worker = (n_slots + (n_out if job.streamed else 0)) * BLOCK
    job.scratch = malloc((workers * job.per_worker + 1) * sizeof(floating))
    job.R = <void**>malloc((workers * n_regs + 1) * sizeof(floating*))
    job.acc = <double*>malloc((n_chunks * n_acc + 1) * sizeof(double))
    if job.scratch == NULL or job.R == NULL or job.acc == NULL:
        free(job.scratch)
        free(job.R)
        free(job.acc)
        return -1
    job.prog, job.n_instr, job.n_regs = prog, n_instr, n_regs
    job.kind, job.index, job.slot, job.n_slots = kind, index, slot, n_slots
    job.arrays, job.scalars, job.outs = <void**>arrays, scalars, <void**>outs
    job.n_acc, job.n = n_acc, n
    if floating is double:
        parallel_for(program_chunk_f64, &job, n_chunks, workers)
    else:
        parallel_for(program_chunk_f32, &job, n_chunks, workers)
    add_chunk_sums(job.acc, n_chunks, n_acc, sums)
    free(job.scratch)
    free(job.R)
    free(job.acc)
    return 0


# -- the neuron --------------------------------------------------------------------

cdef inline double residual(double z, double y) noexcept nogil:
    """dC_i/dz_i divided by 2: z - y where the neuron is active, else 0."""
    if z <= 0:
        return 0
    return z - y                      # z > 0, or NaN (propagates)


cdef inline double row_loss(double z, double y) noexcept nogil:
    cdef double a = z if not (z <= 0) else 0
    return (y - a) * (y - a)


cdef inline void rows_serial(const floating* X, const floating* y, const floating* w, double b,
                      Py_ssize_t start, Py_ssize_t stop, Py_ssize_t n,
                      double* gw, double* gb_loss) noexcept nogil:
    """Add rows start..stop into gw[0:n], gb_loss[0] (dC/db) and gb_loss[1] (loss)."""
    if FJ_NEURON_VECTOR and 8 <= n <= 64:      # eight rows at a time (_neuron_rows.h)
        if floating is double:
            fj_neuron_rows_double(X, y, w, b, start, stop, n, gw, gb_loss)
        else:
            fj_neuron_rows_float(X, y, w, b, start, stop, n, gw, gb_loss)
        return
    cdef Py_ssize_t i, j
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef double z0, z1, z2, z3, r0, r1, r2, r3, e0, e1, e2, e3
    cdef Py_ssize_t n2 = n - n % 2
    cdef double gb = 0, loss = 0
    # the accumulator: a local array for up to LOCAL_FEATURES features (the
    # compiler then knows it aliases no row of X, and the axpy's vectorise
    # without a run-time overlap check every four rows), else gw itself
    cdef double local[LOCAL_FEATURES]
    cdef double* g = gw
    if n <= LOCAL_FEATURES:
        g = &local[0]
    for j in range(n):
        g[j] = 0
    i = start
    while i + 4 <= stop:
        x0 = X + i * n
        x1 = x0 + n
        x2 = x1 + n
        x3 = x2 + n
        # two partial sums per row (even and odd features): eight
        # independent chains, which the compiler packs into vector registers
        z0 = z1 = z2 = z3 = 0
        e0 = e1 = e2 = e3 = 0
        for j in range(0, n2, 2):
            z0 += x0[j] * w[j]
            e0 += x0[j + 1] * w[j + 1]
            z1 += x1[j] * w[j]
            e1 += x1[j + 1] * w[j + 1]
            z2 += x2[j] * w[j]
            e2 += x2[j + 1] * w[j + 1]
            z3 += x3[j] * w[j]
            e3 += x3[j + 1] * w[j + 1]
        if n2 < n:
            z0 += x0[n2] * w[n2]
            z1 += x1[n2] * w[n2]
            z2 += x2[n2] * w[n2]
            z3 += x3[n2] * w[n2]
        z0 = (z0 + e0) + b
        z1 = (z1 + e1) + b
        z2 = (z2 + e2) + b
        z3 = (z3 + e3) + b
        r0 = residual(z0, y[i])
        r1 = residual(z1, y[i + 1])
        r2 = residual(z2, y[i + 2])
        r3 = residual(z3, y[i + 3])
        loss += (row_loss(z0, y[i]) + row_loss(z1, y[i + 1])) + \
                (row_loss(z2, y[i + 2]) + row_loss(z3, y[i + 3]))
        if r0 != 0 or r1 != 0 or r2 != 0 or r3 != 0:
            gb += (r0 + r1) + (r2 + r3)
            for j in range(n):
                g[j] += (r0 * x0[j] + r1 * x1[j]) + (r2 * x2[j] + r3 * x3[j])
        i += 4
    while i < stop:
        x0 = X + i * n
        z0 = b
        for j in range(n):
            z0 += x0[j] * w[j]
        r0 = residual(z0, y[i])
        loss += row_loss(z0, y[i])
        if r0 != 0:
            gb += r0
            for j in range(n):
                g[j] += r0 * x0[j]
        i += 1
    if g != gw:
        for j in range(n):
            gw[j] = g[j]
    gb_loss[0] = gb
    gb_loss[1] = loss


# One call of the neuron, shared by the threads that run its chunks of rows.
cdef struct NeuronJob:
    const void* X               # const floating*, as the dtype
    const void* y
    const void* w
    double b
    Py_ssize_t N, n, rows       # rows per chunk
    double* part                # per chunk: gradient (n), dC/db, loss


cdef inline void neuron_chunk(floating* dtype, NeuronJob* job, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t start = c * job.rows
    cdef Py_ssize_t stop = min(start + job.rows, job.N)
    cdef double* part = job.part + c * (job.n + 2)
    rows_serial(<const floating*>job.X, <const floating*>job.y, <const floating*>job.w,
                job.b, start, stop, job.n, part, part + job.n)


cdef inline void neuron_chunk_f64(void* job, Py_ssize_t c, int worker) noexcept nogil:
    neuron_chunk(<double*>NULL, <NeuronJob*>job, c)


cdef inline void neuron_chunk_f32(void* job, Py_ssize_t c, int worker) noexcept nogil:
    neuron_chunk(<float*>NULL, <NeuronJob*>job, c)


cdef inline int neuron_pass(const floating* X, const floating* y, const floating* w, double b,
                     Py_ssize_t N, Py_ssize_t n, double* gw, double* gb_loss) noexcept nogil:
    """Sums over all rows (not yet scaled by 2/N): gw[0:n], dC/db, loss. -1 on OOM.

    Large X runs in chunks of rows (a multiple of four) on the pool's
    threads; the chunks depend on N and n only and are added in chunk order.
    """
    cdef NeuronJob job
    cdef Py_ssize_t c, j, n_chunks
    if not in_chunks(N * n) or N < 8:
        rows_serial(X, y, w, b, 0, N, n, gw, gb_loss)
        return 0
    job.rows = max((<Py_ssize_t>MIN_CHUNK_BLOCKS * BLOCK + n - 1) // n,
                   (N + MAX_NEURON_CHUNKS - 1) // MAX_NEURON_CHUNKS)
    job.rows = (job.rows + 3) // 4 * 4
    n_chunks = (N + job.rows - 1) // job.rows
    job.part = <double*>malloc(n_chunks * (n + 2) * sizeof(double))
    if job.part == NULL:
        return -1
    job.X, job.y, job.w, job.b, job.N, job.n = X, y, w, b, N, n
    if floating is double:
        parallel_for(neuron_chunk_f64, &job, n_chunks, pool_threads())
    else:
        parallel_for(neuron_chunk_f32, &job, n_chunks, pool_threads())
    for j in range(n + 2):
        gw[j] = 0          # gw is n + 2 long: gradient, dC/db, loss
    for c in range(n_chunks):
        for j in range(n + 2):
            gw[j] += job.part[c * (n + 2) + j]
    gb_loss[0] = gw[n]
    gb_loss[1] = gw[n + 1]
    free(job.part)
    return 0


# -- a batch loss: the rows of X and the program of the loss, in one pass ----------

cdef extern from "_batch_rows.h" nogil:
    void fj_rows_dot_double(const double* X, Py_ssize_t n, const double* w, Py_ssize_t m,
                            double* z)
    void fj_rows_dot_float(const float* X, Py_ssize_t n, const float* w, Py_ssize_t m,
                           float* z)
    void fj_rows_axpy_double(const double* X, Py_ssize_t n, const double* d, Py_ssize_t m,
                             double* g, int squared)
    void fj_rows_axpy_float(const float* X, Py_ssize_t n, const float* d, Py_ssize_t m,
                            double* g, int squared)


# One call of a batch loss's program over the rows of X (see row_pass).
cdef struct RowsJob:
    const int* prog
    Py_ssize_t n_instr, n_regs
    const int* kind
    const int* index
    const int* slot
    Py_ssize_t n_slots
    void** arrays               # per program array: N-long data; NULL for z and t
    int z_array, t_array        # program arrays holding X @ w and X @ v (-1: none)
    const double* scalars
    const void* X
    const void* w
    const void* v
    Py_ssize_t N, n, rows       # rows per chunk: a whole number of blocks
    Py_ssize_t n_outs, n_xw, n_xx
    void** full_outs            # per output: N-long destination, or NULL
    void* scratch               # per worker: per_worker elements
    Py_ssize_t per_worker
    void** R                    # per worker: n_regs register pointers
    double* acc                 # per chunk: stride accumulators
    Py_ssize_t n_acc, stride


cdef inline void rows_chunk(floating* dtype, RowsJob* job, Py_ssize_t c,
                            int worker) noexcept nogil:
    """Rows of chunk c, block by block: z = X_b w (and t = X_b v), the
    program on the block, then X_b^T out_j (j < n_xw), (X_b * X_b)^T out_j
    (the next n_xx outputs), the remaining outputs copied to full_outs.
    The block of X is read from memory once and is still in cache for the
    accumulations."""
    cdef Py_ssize_t start = c * job.rows
    cdef Py_ssize_t stop = min(start + job.rows, job.N)
    cdef Py_ssize_t n = job.n, r, i, j, m, pos
    cdef floating* scratch = <floating*>job.scratch + worker * job.per_worker
    cdef floating** R = <floating**>job.R + worker * job.n_regs
    cdef double* acc = job.acc + c * job.stride
    cdef double* G = acc + job.n_acc
    cdef floating* zbuf = scratch + job.n_slots * BLOCK
    cdef floating* tbuf = zbuf + BLOCK
    cdef floating* obuf = tbuf + BLOCK
    cdef const floating* X = <const floating*>job.X
    cdef const floating* Xb
    for i in range(job.stride):
        acc[i] = 0
    bind_scratch(job.n_regs, job.kind, job.index, job.slot, job.scalars, scratch, R)
    for r in range(job.n_regs):
        if job.kind[r] == K_OUT:
            R[r] = obuf + <Py_ssize_t>job.index[r] * BLOCK
    pos = start
    while pos < stop:
        m = min(<Py_ssize_t>BLOCK, stop - pos)
        Xb = X + pos * n
        if floating is double:
            if job.z_array >= 0:
                fj_rows_dot_double(Xb, n, <const double*>job.w, m, zbuf)
            if job.t_array >= 0:
                fj_rows_dot_double(Xb, n, <const double*>job.v, m, tbuf)
        else:
            if job.z_array >= 0:
                fj_rows_dot_float(Xb, n, <const float*>job.w, m, zbuf)
            if job.t_array >= 0:
                fj_rows_dot_float(Xb, n, <const float*>job.v, m, tbuf)
        for r in range(job.n_regs):
            if job.kind[r] == K_ARRAY:
                if job.index[r] == job.z_array:
                    R[r] = zbuf
                elif job.index[r] == job.t_array:
                    R[r] = tbuf
                else:
                    R[r] = <floating*>job.arrays[job.index[r]] + pos
        exec_block(job.prog, job.n_instr, R, acc, m)
        for j in range(job.n_xw + job.n_xx):
            if floating is double:
                fj_rows_axpy_double(Xb, n, obuf + j * BLOCK, m, G + j * n, j >= job.n_xw)
            else:
                fj_rows_axpy_float(Xb, n, obuf + j * BLOCK, m, G + j * n, j >= job.n_xw)
        for j in range(job.n_xw + job.n_xx, job.n_outs):
            if job.full_outs[j] != NULL:
                for i in range(m):
                    (<floating*>job.full_outs[j])[pos + i] = obuf[j * BLOCK + i]
        pos += m


cdef inline void rows_chunk_f64(void* job, Py_ssize_t c, int worker) noexcept nogil:
    rows_chunk(<double*>NULL, <RowsJob*>job, c, worker)


cdef inline void rows_chunk_f32(void* job, Py_ssize_t c, int worker) noexcept nogil:
    rows_chunk(<float*>NULL, <RowsJob*>job, c, worker)


cdef inline int row_pass(const floating* X, const floating* w, const floating* v,
                         Py_ssize_t N, Py_ssize_t n,
                         const int* prog, Py_ssize_t n_instr, Py_ssize_t n_regs,
                         const int* kind, const int* index, const int* slot, Py_ssize_t n_slots,
                         floating** arrays, int z_array, int t_array, const double* scalars,
                         Py_ssize_t n_outs, Py_ssize_t n_xw, Py_ssize_t n_xx,
                         floating** full_outs, Py_ssize_t n_acc,
                         double* result) noexcept nogil:
    """A batch loss's program over the N rows of X (N x n, C order), in one
    pass: result[0:n_acc] = the program's sums, then (n_xw + n_xx) vectors
    of n (see rows_chunk). -1 on OOM.

    Chunks of rows (whole blocks, depending on N and n only) on the pool's
    threads, their accumulators added in chunk order: the same result on
    any number of threads."""
    cdef RowsJob job
    cdef Py_ssize_t c, i, n_chunks
    cdef bint chunked = in_chunks(N * (n + 1))
    cdef int workers = pool_threads() if chunked else 1
    job.stride = n_acc + (n_xw + n_xx) * n
    job.rows = N if N > 0 else 1
    if chunked:
        job.rows = max((<Py_ssize_t>MIN_CHUNK_BLOCKS * BLOCK + n) // (n + 1),
                       (N + MAX_NEURON_CHUNKS - 1) // MAX_NEURON_CHUNKS)
        job.rows = (job.rows + BLOCK - 1) // BLOCK * BLOCK
    n_chunks = (N + job.rows - 1) // job.rows if N > 0 else 1
    job.per_worker = (n_slots + 2 + n_outs) * BLOCK
    job.scratch = malloc((workers * job.per_worker + 1) * sizeof(floating))
    job.R = <void**>malloc((workers * n_regs + 1) * sizeof(floating*))
    job.acc = <double*>malloc((n_chunks * job.stride + 1) * sizeof(double))
    if job.scratch == NULL or job.R == NULL or job.acc == NULL:
        free(job.scratch)
        free(job.R)
        free(job.acc)
        return -1
    job.prog, job.n_instr, job.n_regs = prog, n_instr, n_regs
    job.kind, job.index, job.slot, job.n_slots = kind, index, slot, n_slots
    job.arrays, job.z_array, job.t_array = <void**>arrays, z_array, t_array
    job.scalars, job.X, job.w, job.v = scalars, X, w, v
    job.N, job.n = N, n
    job.n_outs, job.n_xw, job.n_xx = n_outs, n_xw, n_xx
    job.full_outs, job.n_acc = <void**>full_outs, n_acc
    if N == 0:
        for i in range(job.stride):
            job.acc[i] = 0
    elif floating is double:
        parallel_for(rows_chunk_f64, &job, n_chunks, workers)
    else:
        parallel_for(rows_chunk_f32, &job, n_chunks, workers)
    for i in range(job.stride):
        result[i] = 0
    for c in range(n_chunks):
        for i in range(job.stride):
            result[i] += job.acc[c * job.stride + i]
    free(job.scratch)
    free(job.R)
    free(job.acc)
    return 0
