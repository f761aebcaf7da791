# The loops for any x86-64 CPU (SSE2), or the compiler's default elsewhere; see _level.pxi.
cdef int LEVEL = 0
include "_level.pxi"
