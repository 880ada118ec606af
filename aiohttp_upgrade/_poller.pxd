# C declarations for the compiled twin of _poller.py (aiohttp_upgrade._poller_c): a
# poll's loop over the ready sockets calls their transports in C. The .py is the
# reference.
cimport cython

from aiohttp_upgrade._sendbatch_c cimport SendBatch as CSendBatch
from aiohttp_upgrade._tcp_c cimport SocketTransport as CTransport


cdef class Poller:
    cdef object _epoll
    cdef Py_ssize_t _left
    cdef dict _transports
    cdef public CSendBatch batch
    cdef public bint closed
    cdef public object loop
    cdef object __weakref__  # _adopt keeps a loop's poller weakly

    cpdef void watch(self, CTransport transport, int fd, int events)
    cpdef void forget(self, int fd)
    @cython.locals(left=Py_ssize_t, fd=int, events=int, transport=CTransport)
    cpdef void _poll(self)
