# Kernels for AVX2 + FMA (x86-64-v3); see _kernels_variant.pxi.
include "_kernels_variant.pxi"
