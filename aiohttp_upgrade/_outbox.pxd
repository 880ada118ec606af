# C declarations for the compiled twin of _outbox.py (aiohttp_upgrade._outbox_c):
# the per-send and per-delivery path. The .py is the reference: nothing here may
# change what it does. Limits stay Python ints (a limit may exceed a C integer);
# sizes, turns and backlogs are bounded by memory and counters: C integers.
cimport cython

from aiohttp_upgrade._counters_c cimport Counters as CCounters
from aiohttp_upgrade._sendbatch_c cimport SendBatch as CSendBatch
from aiohttp_upgrade._tcp_c cimport SocketTransport as CTransport


cdef class Flusher:
    cdef list _dirty
    cdef list _spare
    cdef bint _scheduled
    cdef public Py_ssize_t turn

    cpdef void add(self, Outbox outbox)
    cpdef void next_turn(self)
    @cython.locals(dirty=list, outbox=Outbox, batch=CSendBatch)
    cpdef void _flush(self)


cdef class Outbox:
    cdef readonly object _transport  # use_transport() keeps _tcp in step
    cdef CTransport _tcp  # _transport if it is ours: C calls
    cdef Flusher _flusher
    cdef object _limit
    cdef object _hard_limit
    cdef public object compressor
    cdef list _pending
    cdef Py_ssize_t _size
    cdef bint _drain_wanted
    cdef Py_ssize_t _turn
    cdef Py_ssize_t _backlog
    cdef public bint write_now
    cdef public bint held
    cdef public bint sent
    cdef object _owner

    cpdef Py_ssize_t send(
        self,
        int opcode,
        object payload,
        bint compress,
        object message=*,
        object frame=*,
        dict shared=*,
    ) except? -2
    @cython.locals(opcode=int, length=Py_ssize_t)
    cpdef Py_ssize_t send_message(self, object message, CCounters counters) except? -2
    cpdef bint over_limit(self) except -1
    cpdef void _new_turn(self, Py_ssize_t waiting)

    @cython.locals(
        waiting=Py_ssize_t, size=Py_ssize_t, write_now=bint, pending=list, tcp=CTransport
    )
    cpdef Py_ssize_t enqueue(
        self, object frame, Py_ssize_t length, object message=*
    ) except? -2
    cpdef void enqueue_control(self, object frame)
    cpdef Py_ssize_t _drop(self, object message) except? -2
    @cython.locals(pending=list, tcp=CTransport, waiting=Py_ssize_t)
    cpdef void flush(self)
    cpdef void flush_later(self)
    @cython.locals(tcp=CTransport)
    cpdef CSendBatch start_batch(self)
    cpdef void writable(self)
