# C declarations for the compiled twin of _parser.py (aiohttp_upgrade._parser_c):
# the frame parser as a C class, its header arithmetic in C integers. The .py is
# the reference: nothing here may change what it does. A frame length is unsigned
# 64-bit (RFC 6455 5.2: up to 2**64 - 1, rejected from 2**63 on by _check_header).
cimport cython

from aiohttp_upgrade._cbuffers cimport (
    bytearray_at,
    bytes_at,
    decode_utf8,
    readable,
    start_of,
)

cdef int OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT


cdef class FrameParser:
    cdef object _buffer
    cdef object _decoder
    cdef object _frag_buffer
    cdef bint _frag_compressed
    cdef int _frag_opcode
    cdef Py_ssize_t _frag_size
    cdef object _inflater
    cdef readonly object _mask  # tests check which mask the socket passed
    cdef object _max_size
    cdef Py_ssize_t _need
    cdef object _on_close
    cdef object _on_error
    cdef object _on_message
    cdef object _on_ping
    cdef object _on_pong
    cdef object _partial
    cdef int _partial_first
    cdef object _partial_key
    cdef object _probe
    cdef bint _skipping
    cdef public bint stopped
    cdef public Py_ssize_t frames  # read by _ratelimit

    cpdef void stop(self)
    cpdef void skip_data(self)
    @cython.locals(need=Py_ssize_t)
    cpdef void feed(self, object data)

    @cython.locals(
        raw="const unsigned char *",
        size=Py_ssize_t,
        available=Py_ssize_t,
        first=int,
        second=int,
        length="unsigned long long",
        start=Py_ssize_t,
        opcode=int,
        end="unsigned long long",
    )
    cdef void _parse(self, object data, Py_ssize_t pos) except *

    @cython.locals(opcode=int)
    cdef void _start_partial(
        self, object data, int first, Py_ssize_t start, unsigned long long length
    ) except *
    cdef void _extend_partial(self, object data) except *
    @cython.locals(first=int)
    cdef void _complete_partial(self, object data, Py_ssize_t need) except *
    cdef object _take_partial(self, object data, Py_ssize_t need)
    @cython.locals(shift=int)
    cdef void _check_arriving_text(self, object data, Py_ssize_t offset) except *
    cdef void _check_header(
        self, int first, int second, int opcode, unsigned long long length
    ) except *
    cdef void _handle(self, int first, int opcode, object payload) except *
    cdef void _deliver(self, int opcode, object payload, bint compressed) except *
    cdef void _begin_fragments(
        self, int opcode, object payload, bint compressed
    ) except *
    cdef void _continue_fragments(self, object payload, bint fin) except *
    cdef void _check_text(self, object payload, bint final) except *
    cdef void _close(self, object payload) except *
