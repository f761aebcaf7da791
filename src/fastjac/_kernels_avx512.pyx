# Kernels for AVX-512 F/CD/BW/DQ/VL (x86-64-v4); see _kernels_variant.pxi.
include "_kernels_variant.pxi"
