# Limits shared by the compiled modules, defined once (cimported by _api.pyx,
# _expr.pyx and _neuron.pyx); a declaration only: there is no _limits module.

cdef enum:
    # Below this many elements the GIL is kept: releasing and re-taking it
    # costs more than the loop itself.
    NOGIL_MIN_SIZE = 2048
