# The compiled transport's socket calls (see _syscalls.py, the reference): libc's
# recv() and send() on the file descriptor, for the buffers a read and a write
# pass; anything else goes to the socket's method. The socket is non-blocking, so
# the GIL is kept. Errors are raised as the socket's methods raise them: from errno,
# as OSError's subclass for it (EAGAIN: BlockingIOError). A view that is read-only
# (for a read), not contiguous or not of single bytes goes to the socket's method,
# which raises what it raises for it; a released one raises ValueError, as there. No MSG_NOSIGNAL: as the socket's send(), which
# relies on Python ignoring SIGPIPE.
from aiohttp_upgrade._cbuffers cimport is_plain_view
from cpython.buffer cimport Py_buffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_SetFromErrno
from cpython.memoryview cimport PyMemoryView_GET_BUFFER


cdef extern from "sys/socket.h" nogil:
    ssize_t libc_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t libc_send "send" (int fd, const void *buf, size_t n, int flags)


cdef inline Py_ssize_t recv_into(object sock, int fd, object buffer) except -1:
    cdef Py_buffer *view
    cdef Py_ssize_t nbytes
    if type(buffer) is not memoryview or not is_plain_view(buffer):
        return sock.recv_into(buffer)
    view = PyMemoryView_GET_BUFFER(buffer)
    if view.readonly:
        return sock.recv_into(buffer)
    nbytes = libc_recv(fd, view.buf, view.len, 0)
    if nbytes < 0:
        PyErr_SetFromErrno(OSError)
    return nbytes


cdef inline Py_ssize_t send(object sock, int fd, object data) except -1:
    cdef Py_buffer *view
    cdef const char *start
    cdef Py_ssize_t size, sent
    if type(data) is bytes:
        start = PyBytes_AS_STRING(data)
        size = PyBytes_GET_SIZE(data)
    elif type(data) is bytearray:
        start = PyByteArray_AS_STRING(data)
        size = PyByteArray_GET_SIZE(data)
    else:
        if type(data) is not memoryview or not is_plain_view(data):
            return sock.send(data)
        view = PyMemoryView_GET_BUFFER(data)
        start = <const char *>view.buf
        size = view.len
    sent = libc_send(fd, start, size, 0)
    if sent < 0:
        PyErr_SetFromErrno(OSError)
    return sent
