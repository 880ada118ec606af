# C declarations for the compiled twin of _tcp.py (aiohttp_upgrade._tcp_c): the
# per-read and per-write path of our own transport. The .py is the reference.
cimport cython

from aiohttp_upgrade._csyscalls cimport recv_into, send


cdef class Poller:
    cdef object _epoll
    cdef Py_ssize_t _left
    cdef dict _transports
    cdef public bint closed
    cdef public object loop
    cdef object __weakref__  # _adopt keeps a loop's poller weakly

    cpdef void watch(self, SocketTransport transport, int fd, int events)
    cpdef void forget(self, int fd)
    @cython.locals(left=Py_ssize_t, fd=int, events=int, transport=SocketTransport)
    cpdef void _poll(self)


cdef class SocketTransport:
    cdef readonly Poller poller
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
    @cython.locals(sent=Py_ssize_t)
    cpdef void write(self, object data)
    @cython.locals(sent=Py_ssize_t, size=Py_ssize_t)
    cpdef void _write_ready(self)
    cpdef Py_ssize_t get_write_buffer_size(self)
    cpdef bint is_closing(self)
