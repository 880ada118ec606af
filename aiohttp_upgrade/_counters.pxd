# C declarations for the compiled twin of _counters.py (aiohttp_upgrade._counters_c):
# a C class whose counts are C integers, so that the socket layer's twins add to
# them without touching a Python object. The .py is the reference; a count would
# need 2**63 bytes to overflow.


cdef class Counters:
    cdef public Py_ssize_t backpressure
    cdef public Py_ssize_t bytes_delivered
    cdef public Py_ssize_t bytes_in
    cdef public Py_ssize_t bytes_sent
    cdef public dict closes
    cdef public Py_ssize_t deliveries
    cdef public Py_ssize_t dropped
    cdef public Py_ssize_t history_replays
    cdef public Py_ssize_t hook_failures
    cdef public Py_ssize_t messages_in
    cdef public Py_ssize_t messages_sent
    cdef public Py_ssize_t publishes
    cdef public Py_ssize_t rate_limited
    cdef public dict refused

    cpdef void sent(self, Py_ssize_t payload_length)
