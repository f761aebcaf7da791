# The loops for AVX2 + FMA (x86-64-v3); see _level.pxi.
cdef int LEVEL = 1
include "_level.pxi"
