# C declarations for the compiled twin of _connection.py (aiohttp_upgrade._connection_c):
# a C class, so that a read's path through the connection reads its fields from a
# C struct. The .py is the reference: nothing here may change what it does.
cimport cython

from aiohttp_upgrade._counters_c cimport Counters as CCounters
from aiohttp_upgrade._outbox_c cimport Outbox as COutbox


cdef class Connection:
    cdef object _close_timer
    cdef CCounters _counters
    cdef object _ctx
    cdef int _paused
    cdef object _read_buffer
    cdef object _turn
    cdef public object dispatcher
    cdef public Py_ssize_t idle_ticks
    cdef public COutbox outbox
    cdef public object parser
    cdef public object protocol
    cdef readonly object transport  # use_transport() keeps the outbox in step
    cdef public object ws

    cpdef object get_buffer(self, Py_ssize_t sizehint)
    cpdef void buffer_updated(self, Py_ssize_t nbytes)
    @cython.locals(outbox=COutbox)
    cpdef void data_received(self, object data)
    cpdef void on_message(self, object message)
