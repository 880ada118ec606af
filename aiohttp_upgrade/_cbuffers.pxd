# The compiled parser's way of reading a chunk (see _buffers.py, the reference):
# through a pointer to its bytes. readable() returns an object whose bytes stay put
# while it is held: bytes, or a memoryview of contiguous single bytes (which also
# stops a bytearray under it from being resized); anything else is copied to bytes.
# A released view raises ValueError, as any use of it in Python does. The pointer
# that start_of() gives is valid as long as the parser holds that object.
from cpython.buffer cimport Py_buffer, PyBuffer_IsContiguous
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from cpython.unicode cimport PyUnicode_DecodeUTF8


cdef inline bint is_plain_view(object view) except -1:
    """A memoryview of contiguous single bytes; ValueError if it is released (its
    buffer fields are left as they were: only its length says so)."""
    cdef Py_buffer *buffer
    len(view)
    buffer = PyMemoryView_GET_BUFFER(view)
    return buffer.itemsize == 1 and PyBuffer_IsContiguous(buffer, b'C')


cdef inline object readable(object data):
    if type(data) is bytes:
        return data
    if type(data) is not memoryview:
        data = memoryview(data)
    if is_plain_view(data):
        return data
    return bytes(data)


cdef inline const unsigned char *start_of(object data):
    if type(data) is bytes:
        return <const unsigned char *>PyBytes_AS_STRING(data)
    return <const unsigned char *>PyMemoryView_GET_BUFFER(data).buf


cdef inline bytearray bytearray_at(const unsigned char *raw, Py_ssize_t start, Py_ssize_t end):
    return PyByteArray_FromStringAndSize(<const char *>raw + start, end - start)


cdef inline bytes bytes_at(const unsigned char *raw, Py_ssize_t start, Py_ssize_t end):
    return PyBytes_FromStringAndSize(<const char *>raw + start, end - start)


cdef inline str decode_utf8(object payload):
    if type(payload) is bytearray:
        return PyUnicode_DecodeUTF8(
            PyByteArray_AS_STRING(payload), len(<bytearray>payload), NULL
        )
    if type(payload) is bytes:
        return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(payload), len(<bytes>payload), NULL)
    return payload.decode("utf-8")
