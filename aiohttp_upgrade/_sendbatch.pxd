# C declarations for the compiled twin of _sendbatch.py (aiohttp_upgrade._sendbatch_c):
# the batch as a C class that calls the ring's C twins (_csendring.pxd) and its
# writers (our transports) in C. The .py is the reference.
cimport cython

from aiohttp_upgrade._csendring cimport (
    ring_add,
    ring_close,
    ring_open,
    ring_result,
    ring_submit,
    send_now,
)


cdef class BatchWriter:
    cpdef void batch_sent(self, bytes data, Py_ssize_t sent)
    cpdef void batch_failed(self, object exc)


cdef class SendBatch:
    cdef list _writers
    cdef list _fds
    cdef list _data
    cdef list _told
    cdef list _told_data
    cdef list _results
    cdef Py_ssize_t _next
    cdef bint _short
    cdef public bint active
    cdef public Py_ssize_t batches
    cdef public Py_ssize_t sends

    cpdef bint start(self)
    @cython.locals(writers=list)
    cpdef bint add(self, BatchWriter writer, int fd, bytes data) except -1
    cpdef bint finish(self) except -1
    @cython.locals(writers=list, fds=list, data=list, results=list, index=Py_ssize_t)
    cpdef void submit(self)
    @cython.locals(
        writers=list,
        data=list,
        results=list,
        index=Py_ssize_t,
        result=Py_ssize_t,
        sent=Py_ssize_t,
        chunk=bytes,
        writer=BatchWriter,
    )
    cpdef void _tell(self)
    cpdef void close(self)
