# Expression and neuron loops for avx2; see _expr_variant.pxi.
include "_expr_variant.pxi"
