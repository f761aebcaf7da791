# The loops for AVX-512 F/CD/BW/DQ/VL; see _level.pxi.
cdef int LEVEL = 2
include "_level.pxi"
