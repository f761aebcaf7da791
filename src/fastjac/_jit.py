"""Compiling a block program to one fused C loop, for large arrays.

The block interpreter of _expr_loops.pxd runs an expression one instruction
at a time over 256-element blocks: every instruction loads and stores its
block in L1, so a 9-instruction expression costs far more per element on
one core than streaming the operands does (measured: docs/performance.md,
'Measurements behind the code'). For arrays of ``JIT_MIN_SIZE`` elements and more this
module turns the same program into C -- one loop whose body is the whole
expression, each register a local variable -- compiles it with the C
compiler Python was built with (the compiler that built fastjac), and hands
the chunk function back to _expr.pyx, which runs it on the pool's threads
exactly like the interpreter (the same chunks, the same blocks, the same
per-block sums, so results do not depend on the thread count). A program
without sums skips the blocks: it computes 128 bytes per output at a time
and writes them straight to the outputs (``_direct_loop``).

Same numbers as the interpreter: every instruction is the same C operation
on the same float type, in the same order; ``muladd`` is a fused
multiply-add exactly when the interpreter's loops are (the AVX2 and AVX-512
builds), and the code is compiled with ``-ffp-contract=off`` so that no
other multiply and add are fused. The instruction set is the interpreter's
(``fastjac._simd.current()``, with ``_simd.COMPILER_FLAGS``), never
``-march=native``.

Every formula comes from _formulas.h, the header whose functions the
interpreter calls for the same instructions: this C #includes it. The loop
computes the values whose record in _operators.py says ``jit`` (arithmetic,
comparisons, max/min, abs, relu, and libm's sqrt, log, log1p... in both) and
the derivatives whose record costs no more than its memory traffic. Every
other instruction -- a vectorised transcendental function of _vecmath.h
(exp, sin, tanh, softplus...) or a costlier derivative --
is not recompiled here: such a program keeps the interpreter's 256-element
blocks, the loop runs each stretch of the instructions above over a block,
and the others are handed to the interpreter's own ``exec_block`` of the same
SIMD level (``fj_block``, set when the code is loaded). They therefore give
the interpreter's bits by construction: the same C, compiled in the
interpreter's module with its flags, runs them. (The
same function compiled here would not always: the interpreter's modules let
the compiler contract multiply-adds inside those functions into FMAs, this C
is compiled with -ffp-contract=off, so that the multiply-adds *between*
instructions are not fused.) Without a working C compiler nothing changes
either: the first failure is remembered (``status()`` says why) and the
interpreter runs.

``FASTJAC_JIT`` in the environment: ``0`` never compiles, ``1`` compiles at
the first call whatever its size; unset, ``auto``, compiles a program at its
first call with at least ``JIT_MIN_SIZE`` elements. The C compiler runs (see
docs/expressions.md for its cost) once per distinct program in a process:
compiled code is keyed by its C source (the program and dtype), the compiler
and the flags of the SIMD level, so compiling an equal expression again --
the same Expr, or one built the same way, e.g. inside a function called in a
loop -- reuses the loaded code. Threads asking for the same code at once
wait for one compilation.

``FASTJAC_JIT_CACHE`` in the environment keeps compiled code on disk across
processes (off by default, like numba's ``cache=True``): ``1`` uses
``$XDG_CACHE_HOME/fastjac`` (default ``~/.cache/fastjac``); ``0``, or unset,
none; any other value is the directory to use. The directory is created with mode
0o700; files are written atomically with mode 0o600, named by a hash of the
source, the compiler command and version, the flags, fastjac's version and
the Python ABI. A file is loaded only when it and the directory belong to
the current user, are not symbolic links and are not writable by group or
others; otherwise it is ignored with a RuntimeWarning (``status()`` says
why) and the code is compiled in memory.
"""
import os
import threading

import numpy as np

from . import _expr, _kernels, _operators, _simd

JIT_MIN_SIZE = 1 << 16          # elements: smaller calls never wait for the compiler

_lock = threading.Lock()        # guards _programs and _status; never held while compiling
_loaded = []                    # the ctypes libraries, kept alive for the process
_status = {"compiler": None, "error": None, "compiled": 0, "reused": 0, "loaded": 0,
           "cache_dir": None, "cache_error": None}

_OP = _expr.OPCODES
_CODE = {v: k for k, v in _kernels.DERIVATIVE_CODES.items()}
_K = _expr.REGISTER_KINDS

_BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
               "-fPIC", "-shared", "-std=c99"]


def mode():
    """'never', 'always' or 'auto', from $FASTJAC_JIT."""
    value = os.environ.get("FASTJAC_JIT", "auto").strip().lower()
    if value in ("0", "off", "no", "false", "never"):
        return "never"
    if value in ("1", "on", "yes", "true", "always"):
        return "always"
    return "auto"


def min_size():
    """The element count from which _expr.pyx asks for compiled code."""
    m = mode()
    return -1 if m == "never" else (0 if m == "always" else JIT_MIN_SIZE)


def status():
    """What this process compiled.

    Returns
    -------
    dict
        ``compiler``: the command used; ``compiled``: programs compiled;
        ``reused``: programs given the code of an equal program compiled
        before in this process; ``loaded``: programs loaded from the disk
        cache; ``error``: what disabled compilation, if anything did;
        ``cache_dir``: the disk cache in use, if any; ``cache_error``: why
        the disk cache or a file in it was last refused.
    """
    return dict(_status)


# -- C source -----------------------------------------------------------------------

_PRELUDE = r"""
#include <stddef.h>
#include <string.h>
#include "_formulas.h"
typedef %(T)s T;
#define F(name) fj_##name##%(suffix)s
#define BLOCK %(BLOCK)d

/* The loop without sums (_direct_loop): GROUP elements, two cache lines
   per output, at a time. */
#define GROUP (128 / (int)sizeof(T))

/* dst[0:GROUP] = src[0:GROUP] with non-temporal stores; dst on a 64-byte line */
static inline void stream_group(T* dst, const T* src) {
    if (sizeof(T) == 8) fj_stream_f64((double*)dst, (const double*)src, GROUP);
    else fj_stream_f32((float*)dst, (const float*)src, GROUP);
}

/* every output starts at the same offset in its 64-byte line, a whole
   number of elements: one head of elements aligns them all */
static int lines_alike(void** outs, int n) {
    size_t first = 64;
    for (int j = 0; j < n; j++) {
        if (!outs[j]) continue;
        size_t offset = (size_t)outs[j] & 63;
        if (offset %% sizeof(T) != 0 || (first != 64 && offset != first)) return 0;
        first = offset;
    }
    return 1;
}

/* the interpreter's block_sum: four lanes, in this order */
static double block_sum(const T* a, ptrdiff_t m) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    ptrdiff_t i, m4 = m - m %% 4;
    for (i = 0; i < m4; i += 4) {
        s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3];
    }
    for (i = m4; i < m; i++) s0 += a[i];
    return (s0 + s1) + (s2 + s3);
}

/* dst[0:m] = src[0:m], whole 64-byte lines of dst with non-temporal stores
   (_vecmath.h's, as the interpreter's stream_out) */
static void stream_out(T* dst, const T* src, ptrdiff_t m) {
    ptrdiff_t i = 0;
    while (i < m && ((size_t)(dst + i) & 63) != 0) { dst[i] = src[i]; i++; }
    if (sizeof(T) == 8) fj_stream_f64((double*)(dst + i), (const double*)(src + i), m - i);
    else fj_stream_f32((float*)(dst + i), (const float*)(src + i), m - i);
}
"""

# instruction -> C expression of its operands (strings); F(name) is the
# function fj_<name>_f64 or _f32 of _formulas.h, the one the interpreter
# calls for the same instruction
_UNARY = {op.name: f"F({op.value})({{a}})" for op in _operators.OPERATORS
          if op.jit and len(op.derivatives) == 1}
_UNARY["copy"] = "{a}"
_BINARY = {op.name: f"F({op.value})({{a}}, {{b}})" for op in _operators.OPERATORS
           if op.jit and len(op.derivatives) == 2}


def _compiled_derivatives():
    """derivative code -> C expression: the derivatives whose formula costs
    no more than its memory traffic (so a compiled loop gains), from their
    records. One with exceptions computes both of its formulas in one
    expression, ``fj_d_<formula>_any``; _formulas.h has that for d(a/b)/db
    only, which is therefore the only exceptional one compiled."""
    out = {}
    for d in _operators.DERIVATIVES:
        if d.cost not in ("memory", "rsqrt"):
            continue
        name = d.formula + "_any" if d.exceptional else d.formula
        out[d.code] = f"F(d_{name})({{a}}, {{b}})"
    return out


_DERIV = _compiled_derivatives()
_NAME = {v: k for k, v in _OP.items()}
MAX_OUTS = 16                   # local output blocks: MAX_OUTS * BLOCK numbers of stack
MAX_SUMS = 16


class Unsupported(Exception):
    """The program uses an instruction this module does not compile."""


def _compiles(name, code):
    """Whether this module compiles the instruction (``code``: a deriv's)."""
    return (name in _UNARY or name in _BINARY or name == "muladd"
            or (name == "deriv" and _CODE.get(code) in _DERIV))


def _fused(name, code, a, b, c, fused_muladd, is_double):
    """The C expression of a compiled instruction, its operands as C (c:
    muladd's addend; for a deriv, ``code`` is the derivative's)."""
    if name in _UNARY:
        return _UNARY[name].format(a=a)
    if name in _BINARY:
        return _BINARY[name].format(a=a, b=b)
    if name == "muladd":
        return (f"fma({a}, {b}, {c})" if fused_muladd and is_double else
                f"fmaf({a}, {b}, {c})" if fused_muladd else f"{a} * {b} + {c}")
    return _DERIV[_CODE[code]].format(a=a, b=b)


def c_source(program, is_double, fused_muladd):
    """The C source of a program's chunk function ``fj_chunk``; raises
    Unsupported for a program the interpreter must run.

    A program whose every instruction this module compiles becomes one loop
    with a local variable per register (_fused_source). One with other
    instructions -- the vectorised functions of _vecmath.h, the derivatives
    that cost more than their memory traffic -- keeps the interpreter's
    blocks (_blocked_source): the compiled instructions between two others
    run as one loop, the others are handed to the interpreter's own
    exec_block, which therefore gives them its bits."""
    prog = np.asarray(program.prog).reshape(-1, 5).tolist()
    if program.n_outs > MAX_OUTS or program.n_acc > MAX_SUMS:
        raise Unsupported("too many outputs or sums")
    from ._planner import _results      # here: _planner imports _expr, which imports us
    kind = np.asarray(program.kind)
    written = {r for ins in prog for r in _results(ins)}
    if any(kind[r] not in (_K["temp"], _K["out"]) for r in written):
        raise Unsupported("an instruction writes an input register")
    outs = sorted({int(program.index[r]): r for r in range(len(kind))
                   if kind[r] == _K["out"]}.items())
    for j, r in outs:
        if r not in written:
            raise Unsupported("an output no instruction writes")
    head = _PRELUDE % {"T": "double" if is_double else "float", "BLOCK": _expr.BLOCK_SIZE,
                       "suffix": "_f64" if is_double else "_f32"}
    if all(_NAME[op] == "sum" or _compiles(_NAME[op], c) for op, d, a, b, c in prog):
        return head + _fused_source(program, prog, outs, is_double, fused_muladd)
    return head + _blocked_source(program, prog, outs, is_double, fused_muladd)


def _operands(program, register):
    """ref(r): register r at element i as C -- an input array's element, a
    scalar's value, else ``register(r)`` for a temporary or an output."""
    kind, index = np.asarray(program.kind), np.asarray(program.index)

    def ref(r):
        if kind[r] == _K["array"]:
            return f"A{index[r]}[i]"
        if kind[r] == _K["scalar"]:
            return f"S{index[r]}"
        return register(r)
    return ref


def _fused_source(program, prog, outs, is_double, fused_muladd):
    """fj_chunk as one loop, each register a local variable."""
    ref = _operands(program, lambda r: f"r{r}")
    body, sums = [], []
    written = set()
    for op, d, a, b, c in prog:
        name = _NAME[op]
        if name == "sum":
            sums.append((d, ref(a)))
            continue
        expr = _fused(name, c, ref(a), ref(b), ref(c) if name == "muladd" else None,
                      fused_muladd, is_double)
        decl = "" if d in written else "T "
        written.add(d)
        body.append(f"{decl}r{d} = {expr};")
    stores = [(j, f"r{r}") for j, r in outs]

    lines = ["void fj_chunk(void** arrays, const double* scalars, void** outs, "
             "double* acc, ptrdiff_t start, ptrdiff_t stop, int streamed) {"]
    for j in range(program.n_scalars):
        lines.append(f"    const T S{j} = (T)scalars[{j}];")
    if not sums:
        lines += _direct_loop(body, stores, program.n_arrays)
    for j, _ in outs:
        lines.append(f"    T O{j}[BLOCK] __attribute__((aligned(64)));")
    for k in range(len(sums)):
        lines.append(f"    T U{k}[BLOCK] __attribute__((aligned(64)));")
    lines.append(f"    for (int k = 0; k < {program.n_acc}; k++) acc[k] = 0;")
    lines.append("    for (ptrdiff_t pos = start; pos < stop; pos += BLOCK) {")
    lines.append("        ptrdiff_t m = stop - pos < BLOCK ? stop - pos : BLOCK;")
    for j in range(program.n_arrays):
        lines.append(f"        const T* A{j} = (const T*)arrays[{j}] + pos;")
    lines.append("        for (ptrdiff_t i = 0; i < m; i++) {")
    lines += ["            " + s for s in body]
    lines += [f"            O{j}[i] = {r};" for j, r in stores]
    lines += [f"            U{k}[i] = {src};" for k, (_, src) in enumerate(sums)]
    lines.append("        }")
    lines += _write_outs([(j, f"O{j}") for j, _ in outs])
    for k, (j, _) in enumerate(sums):
        lines.append(f"        acc[{j}] += block_sum(U{k}, m);")
    lines.append("    }")
    lines.append("    if (streamed) fj_stream_fence();")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write_outs(sources):
    """C lines copying each output's block to its array (after a block);
    sources: (output index, the C name of its block)."""
    lines = []
    for j, src in sources:
        lines.append(f"        if (outs[{j}]) {{ T* o = (T*)outs[{j}] + pos;")
        lines.append(f"            if (streamed) stream_out(o, {src}, m); "
                     f"else memcpy(o, {src}, m * sizeof(T)); }}")
    return lines


MAX_BLOCKS = 32                 # W's blocks: MAX_BLOCKS * BLOCK numbers of stack


def _blocked_source(program, prog, outs, is_double, fused_muladd):
    """fj_chunk over the interpreter's blocks, with its registers: each
    temporary and scalar register is the block of its slot in W (the
    interpreter's scratch), each output one block after them. A run of
    compiled instructions is one loop over the block; every other
    instruction (sums too) is the interpreter's, called through fj_block on
    the same registers -- the interpreter's code, from its own module."""
    kind, index, slot = (np.asarray(program.kind), np.asarray(program.index),
                         np.asarray(program.slot))
    n_slots = int(program.n_slots)
    out_block = {r: n_slots + k for k, (j, r) in enumerate(outs)}
    n_blocks = n_slots + len(outs)
    if n_blocks > MAX_BLOCKS:
        raise Unsupported(f"{n_blocks} blocks of registers (at most {MAX_BLOCKS})")

    def block(r):
        return out_block[r] if kind[r] == _K["out"] else int(slot[r])

    ref = _operands(program, lambda r: f"W[{block(r)}][i]")

    flat = ", ".join(str(v) for row in prog for v in row)
    lines = [
        "/* the interpreter on one block (_expr_loops.pxd's exec_block, of the",
        "   SIMD level this code is compiled for): _jit.py sets it after loading */",
        "void (*fj_block)(const int* prog, ptrdiff_t n_instr, T** R, double* acc,",
        "                 ptrdiff_t m) = 0;",
        f"static const int PROGRAM[{5 * len(prog)}] = {{{flat}}};",
        "",
        "void fj_chunk(void** arrays, const double* scalars, void** outs, "
        "double* acc, ptrdiff_t start, ptrdiff_t stop, int streamed) {",
        f"    T W[{n_blocks}][BLOCK] __attribute__((aligned(64)));",
        f"    T* R[{len(kind)}];",
    ]
    for j in range(program.n_scalars):
        lines.append(f"    const T S{j} = (T)scalars[{j}];")
    # the interpreter reads a scalar register as a block of its value
    read_there = {r for op, d, a, b, c in prog if not _compiles(_NAME[op], c) for r in (a, b)}
    for r in range(len(kind)):
        if kind[r] in (_K["scalar"], _K["temp"], _K["out"]):
            lines.append(f"    R[{r}] = W[{block(r)}];")
        if kind[r] == _K["scalar"] and r in read_there:
            lines.append(f"    for (int i = 0; i < BLOCK; i++) W[{block(r)}][i] = S{index[r]};")
    lines.append(f"    for (int k = 0; k < {program.n_acc}; k++) acc[k] = 0;")
    lines.append("    for (ptrdiff_t pos = start; pos < stop; pos += BLOCK) {")
    lines.append("        ptrdiff_t m = stop - pos < BLOCK ? stop - pos : BLOCK;")
    for j in range(program.n_arrays):
        lines.append(f"        const T* A{j} = (const T*)arrays[{j}] + pos;")
    for r in range(len(kind)):
        if kind[r] == _K["array"]:
            lines.append(f"        R[{r}] = (T*)A{index[r]};")
    k = 0
    while k < len(prog):
        first = k
        if _compiles(_NAME[prog[k][0]], prog[k][4]):
            lines.append("        for (ptrdiff_t i = 0; i < m; i++) {")
            while k < len(prog) and _compiles(_NAME[prog[k][0]], prog[k][4]):
                op, d, a, b, c = prog[k]
                name = _NAME[op]
                expr = _fused(name, c, ref(a), ref(b), ref(c) if name == "muladd" else None,
                              fused_muladd, is_double)
                lines.append(f"            {ref(d)} = {expr};")
                k += 1
            lines.append("        }")
        else:
            while k < len(prog) and not _compiles(_NAME[prog[k][0]], prog[k][4]):
                k += 1
            lines.append(f"        fj_block(PROGRAM + {5 * first}, {k - first}, R, acc, m);")
    lines += _write_outs([(j, f"W[{out_block[r]}]") for j, r in outs])
    lines.append("    }")
    lines.append("    if (streamed) fj_stream_fence();")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _direct_loop(body, stores, n_arrays):
    """C lines for a program without sums: GROUP elements at a time, computed
    into a local group and written straight to the outputs -- with
    non-temporal stores when streamed, from the outputs' first 64-byte line
    on (each chunk computes the few elements before it one by one). The
    group is small enough to stay in L1 next to the registers; the block loop
    after it (2 KB per output, streamed in a second pass) moved each output
    twice and ran slower than the STREAM twin at 10**7 elements, this loop
    about as fast (measured: docs/performance.md, 'Measurements behind the
    code'). When streamed outputs do not share one offset within a line, the
    block loop runs instead."""
    lines = ["    if (!streamed || lines_alike(outs, %d)) {" % len(stores)]
    for j, _ in stores:
        lines.append(f"        T* const P{j} = (T*)outs[{j}];")
    for j in range(n_arrays):
        lines.append(f"        const T* const X{j} = (const T*)arrays[{j}];")
    lead = " : ".join(f"P{j} ? P{j}" for j, _ in stores) + " : NULL" if stores else "NULL"
    lines.append(f"        T* const lead = {lead};")
    lines.append("        ptrdiff_t g = start, head = start;")
    lines.append("        if (streamed && lead)")
    lines.append("            while (head < stop && ((size_t)(lead + head) & 63) != 0) head++;")

    def one_by_one(first, last):
        out = [f"        for (ptrdiff_t i = {first}; i < {last}; i++) {{"]
        out += [f"            const T* A{j} = X{j};" for j in range(n_arrays)]
        out += ["            " + s for s in body]
        out += [f"            if (P{j}) P{j}[i] = {r};" for j, r in stores]
        out.append("        }")
        return out
    lines += one_by_one("start", "head")
    lines.append("        for (g = head; g + GROUP <= stop; g += GROUP) {")
    for j, _ in stores:
        lines.append(f"            T O{j}[GROUP] __attribute__((aligned(64)));")
    lines += [f"            const T* A{j} = X{j} + g;" for j in range(n_arrays)]
    lines.append("            for (ptrdiff_t i = 0; i < GROUP; i++) {")
    lines += ["                " + s for s in body]
    lines += [f"                O{j}[i] = {r};" for j, r in stores]
    lines.append("            }")
    for j, _ in stores:
        lines.append(f"            if (P{j}) {{ if (streamed) stream_group(P{j} + g, O{j}); "
                     f"else memcpy(P{j} + g, O{j}, sizeof O{j}); }}")
    lines.append("        }")
    lines += one_by_one("g", "stop")
    lines.append("        if (streamed) fj_stream_fence();")
    lines.append("        return;")
    lines.append("    }")
    return lines


# -- compiling, once per distinct program --------------------------------------------
#
# Compiled code is keyed by what determines it: the C source (the program,
# its dtype and whether muladd is fused), the compiler command and the flags
# of the SIMD level. A Program whose key was compiled before -- a new
# compile() of an equal expression, or of the same one -- takes the loaded
# function: no compiler, no new mapping. _lock guards the table only; the
# compiler runs outside it, so a compilation blocks only the threads waiting
# for the same key, and different keys compile side by side, at most one per
# CPU (_compilers), since each compiler process keeps a core busy.


def _cpu_count():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                       # not Linux
        return max(1, os.cpu_count() or 1)


_compilers = threading.BoundedSemaphore(_cpu_count())
_programs = {}                  # key -> _Pending: its chunk function's address
_found = {}                     # ($CC, $PATH) -> the compiler's argv
_versions = {}                  # compiler argv -> its --version text (for the disk cache)


class _Pending:
    """One key's compilation: the first thread to ask compiles, the others
    wait for its address (-1 if it failed: its thread records why)."""
    __slots__ = ("done", "address")

    def __init__(self):
        self.done = threading.Event()
        self.address = -1

    def result(self):
        self.done.wait()
        return self.address


def _compiler():
    """The compiler's argv: $CC, else the compiler that built Python."""
    import sysconfig
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    where = (cc, os.environ.get("PATH"))
    argv = _found.get(where)            # looked up once: a cache hit stays cheap
    if argv is None:
        import shlex
        import shutil
        argv = shlex.split(cc)
        if not argv or shutil.which(argv[0]) is None:
            raise RuntimeError(f"no C compiler: {cc!r} is not on PATH")
        _found[where] = argv
    return list(argv)


def _digest(*parts):
    import hashlib
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def attach(program, is_double):
    """Give ``program`` compiled code for one dtype -- the code of an equal
    program when this process has it, else from the disk cache or the
    compiler -- and store the result on it (``jit_f64``/``jit_f32``: the
    address of its chunk function, or -1 when it stays interpreted)."""
    if (program.jit_f64 if is_double else program.jit_f32) != 0:
        return
    address = -1
    if _status["error"] is None:
        try:
            level = _simd.current()         # read once: the source and the flags agree
            address = _chunk_function(c_source(program, is_double, level != "baseline"), level,
                                      _interpreter_block(level, is_double))
        except Unsupported:
            pass
        except Exception as exc:            # noqa: BLE001 - no compiler: interpret
            with _lock:
                _status["error"] = f"{type(exc).__name__}: {exc}"
    program._use_compiled(is_double, address)


def _interpreter_block(level, is_double):
    """The address of the interpreter's exec_block for one SIMD level and
    dtype: what the compiled code of that level calls for the instructions
    it does not compile (``fj_block``)."""
    import importlib
    table = importlib.import_module(f"fastjac._level_{level}").tables()[1]
    return _expr.block_address(table, is_double)


def _chunk_function(source, level, block):
    """The address of ``fj_chunk`` compiled from source for SIMD ``level``,
    compiled at most once per process (threads asking for the same key at
    once wait for one); ``block``: the address its ``fj_block`` gets."""
    argv = _compiler()
    flags = _BASE_FLAGS + _simd.COMPILER_FLAGS[level]
    key = _digest(source, *argv, "", *flags)
    with _lock:
        pending = _programs.get(key)
        owner = pending is None
        if owner:
            pending = _programs[key] = _Pending()
        else:
            _status["reused"] += 1
    if not owner:
        return pending.result()
    try:
        pending.address = _load_or_compile(source, argv, flags, key, block)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # interrupted: a later call tries again
            with _lock:
                del _programs[key]
        raise
    finally:
        pending.done.set()
    return pending.address


def _load_or_compile(source, argv, flags, key, block):
    directory = cache_dir()
    if directory is None:
        return _compile(source, argv, flags, key, block)[0]
    dir_fd = _open_cache_dir(directory)
    if dir_fd is None:
        return _compile(source, argv, flags, key, block)[0]
    try:
        name = "chunk-" + _digest(key, _compiler_version(argv), _fastjac_version(),
                                  _python_abi(), _header_digest()) + ".so"
        image = _read_cached(dir_fd, directory, name)
        if image is _REFUSED:               # left alone: the warning names it
            return _compile(source, argv, flags, key, block)[0]
        if image is not None:
            try:
                address = _load_image(image, key, block)
            except (OSError, AttributeError) as exc:    # a damaged file: compile anew
                _refuse(f"{os.path.join(directory, name)} does not load ({exc}); "
                        f"recompiling")
            else:
                with _lock:
                    _status["loaded"] += 1
                return address
        address, image = _compile(source, argv, flags, key, block, keep_image=True)
        _write_cached(dir_fd, directory, name, image)
        return address
    finally:
        os.close(dir_fd)


def _compile(source, argv, flags, key, block, keep_image=False):
    """Compile source; return the address of fj_chunk and, if asked, the
    bytes of the library."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fastjac-jit-") as tmp:
        # the file name carries the key: a path dlopen saw before is the same code
        c_path = os.path.join(tmp, "chunk.c")
        so_path = os.path.join(tmp, f"chunk-{key[:16]}.so")
        with open(c_path, "w") as f:
            f.write(source)
        cmd = argv + flags + [
            "-I", os.path.dirname(os.path.abspath(__file__)), c_path, "-o", so_path, "-lm"]
        with _compilers:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
        address = _dlopen(so_path, block)   # mapped: the file may go with the directory
        image = None
        if keep_image:
            with open(so_path, "rb") as f:
                image = f.read()
    with _lock:
        _status["compiler"] = " ".join(argv)
        _status["compiled"] += 1
    return address, image


def _load_image(image, key, block):
    """Load a library from its bytes (read from the disk cache through a
    checked descriptor) via a private temporary copy."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fastjac-jit-") as tmp:
        so_path = os.path.join(tmp, f"chunk-{key[:16]}.so")
        with open(so_path, "wb") as f:
            f.write(image)
        return _dlopen(so_path, block)


def _dlopen(path, block):
    import ctypes           # here, not at import: `import fastjac` stays light
    lib = ctypes.CDLL(path)
    address = ctypes.cast(lib.fj_chunk, ctypes.c_void_p).value
    try:
        hook = ctypes.c_void_p.in_dll(lib, "fj_block")
    except ValueError:                  # all compiled: it calls no interpreter
        pass
    else:
        hook.value = block
    with _lock:
        _loaded.append(lib)             # never unloaded: programs hold the address
    return address


# -- the opt-in disk cache ($FASTJAC_JIT_CACHE) ---------------------------------------

def cache_dir():
    """The directory of the disk cache, from $FASTJAC_JIT_CACHE, or None (off).

    ``1`` (or on/yes/true): ``$XDG_CACHE_HOME/fastjac``, else
    ``~/.cache/fastjac``; ``0``, off or unset: no disk cache; anything else:
    that directory.
    """
    value = os.environ.get("FASTJAC_JIT_CACHE", "").strip()
    if value.lower() in ("", "0", "off", "no", "false", "never"):
        return None
    if value.lower() in ("1", "on", "yes", "true", "always"):
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):             # the XDG spec: relative paths are invalid
            base = os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "fastjac")
    return os.path.abspath(os.path.expanduser(value))


def _unsafe(st, what):
    """Why a file or directory with stat result st may hold another user's
    code (None: it is this user's alone)."""
    import stat
    if stat.S_ISLNK(st.st_mode):
        return f"{what} is a symbolic link"
    if st.st_uid != os.geteuid():
        return f"{what} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others ({stat.filemode(st.st_mode)})"
    return None


def _refuse(reason):
    import warnings
    with _lock:
        _status["cache_error"] = reason
    warnings.warn(f"fastjac JIT cache: {reason}", RuntimeWarning, stacklevel=2)


def _open_cache_dir(directory):
    """A descriptor of the cache directory, created private (0o700) when
    missing; None, with a warning, when it is not this user's alone."""
    import stat
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        reason = _unsafe(os.lstat(directory), f"the cache directory {directory}")
        if reason is None:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                         getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(fd)           # the directory opened, not the path checked
            reason = _unsafe(st, f"the cache directory {directory}") or (
                None if stat.S_ISDIR(st.st_mode) else f"{directory} is not a directory")
            if reason is None:
                with _lock:
                    _status["cache_dir"] = directory
                return fd
            os.close(fd)
    except OSError as exc:
        reason = f"cannot use {directory}: {exc}"
    _refuse(reason + "; compiling without the disk cache")
    return None


_REFUSED = object()


def _read_cached(dir_fd, directory, name):
    """The bytes of a cached library, None when there is none, or _REFUSED
    (with a warning) when the file might not be this user's alone."""
    import stat
    path = os.path.join(directory, name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:              # ELOOP: a symbolic link
        try:
            reason = _unsafe(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), path)
        except OSError:
            reason = None
        _refuse((reason or f"cannot read {path}: {exc}") + "; recompiling")
        return _REFUSED
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        reason = _unsafe(st, path) or (
            None if stat.S_ISREG(st.st_mode) else f"{path} is not a regular file")
        if reason is not None:
            _refuse(reason + "; recompiling")
            return _REFUSED
        return f.read()


def _write_cached(dir_fd, directory, name, image):
    """Store a library atomically (a private temporary file, then
    os.replace), readable by this user only; a failure only warns."""
    import secrets
    temp = f".{name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                     getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(image)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temp, dir_fd=dir_fd)
            raise
    except OSError as exc:
        _refuse(f"cannot write {os.path.join(directory, name)}: {exc}")


def _compiler_version(argv):
    key = tuple(argv)
    version = _versions.get(key)
    if version is None:
        import subprocess
        try:
            done = subprocess.run(argv + ["--version"], capture_output=True, text=True,
                                  timeout=60)
            version = (done.stdout or done.stderr).strip()
        except (OSError, subprocess.SubprocessError) as exc:
            version = f"unknown ({exc})"
        _versions[key] = version
    return version


def _fastjac_version():
    import sys
    return str(getattr(sys.modules.get(__package__), "__version__", "unknown"))


def _python_abi():
    import sys
    import sysconfig
    return f"{sys.platform} {sysconfig.get_config_var('SOABI') or sys.implementation.cache_tag}"


def _header_digest():
    """The headers the generated C includes: a change to any is a new key."""
    here = os.path.dirname(os.path.abspath(__file__))
    texts = []
    for name in ("_vecmath.h", "_formulas.h", "_formulas_typed.h"):
        with open(os.path.join(here, name), "rb") as f:
            texts.append(f.read().decode("latin-1"))
    return _digest(*texts)
