# Expression and neuron loops for avx512; see _expr_variant.pxi.
include "_expr_variant.pxi"
