# C declarations for the compiled twin of _dispatcher.py (aiohttp_upgrade._dispatcher_c):
# a C class, so that the per-message dispatch reads its fields from a C struct.
# The .py is the reference: nothing here may change what it does.
cimport cython

from aiohttp_upgrade._counters_c cimport Counters as CCounters


cdef class Dispatcher:
    cdef object _ws
    cdef object _hooks
    cdef object _tasks
    cdef CCounters _counters
    cdef object _owner
    cdef object _inbox
    cdef object _task
    cdef object _message
    cdef bint _reading_paused
    cdef bint _in_dropped
    cdef bint _dropping

    cpdef void message(self, object message)
    cpdef void dispatch(self, int kind, object arg=*)
