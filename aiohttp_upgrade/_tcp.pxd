# C declarations for the compiled twin of _tcp.py (aiohttp_upgrade._tcp_c): the
# per-read and per-write path of our own transport. The .py is the reference.
cimport cython

from aiohttp_upgrade._csyscalls cimport recv_into, send
from aiohttp_upgrade._sendbatch_c cimport BatchWriter, SendBatch


cdef class SocketTransport(BatchWriter):
    cdef readonly object poller  # a _poller.Poller: its calls are not per message
    cdef readonly SendBatch batch  # the poller's
    cdef bint _batched
    cdef object _sock
    cdef int _fd
    cdef object _protocol
    cdef dict _extra
    cdef object _buffer  # a deque of memoryviews
    cdef Py_ssize_t _buffered
    cdef object _high  # any int, as asyncio's
    cdef object _low
    cdef bint _protocol_paused
    cdef bint _closing
    cdef bint _eof
    cdef bint _lost
    cdef bint _writing
    cdef bint _reading

    cpdef void on_events(self, int events)
    cpdef void _watch(self)
    @cython.locals(nbytes=Py_ssize_t)
    cpdef void _read_ready(self)
    @cython.locals(sent=Py_ssize_t, batch=SendBatch)
    cpdef void write(self, object data)
    cpdef void batch_sent(self, bytes data, Py_ssize_t sent)
    cpdef void batch_failed(self, object exc)
    cpdef void _keep(self, object data, Py_ssize_t sent)
    @cython.locals(sent=Py_ssize_t, size=Py_ssize_t)
    cpdef void _write_ready(self)
    cpdef Py_ssize_t get_write_buffer_size(self)
    cpdef bint is_closing(self)
