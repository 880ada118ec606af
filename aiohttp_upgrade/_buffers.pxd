# The compiled parser's way of reading a chunk (see _buffers.py, the reference):
# through a pointer to its bytes. readable() returns an object whose buffer stays
# put while held (bytes; a contiguous memoryview, which also stops a bytearray
# under it from being resized), so that the pointer start_of() gives stays valid
# as long as the parser holds that object.
from cpython.buffer cimport Py_buffer, PyBuffer_IsContiguous
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from cpython.unicode cimport PyUnicode_DecodeUTF8


cdef inline object readable(object data):
    if type(data) is bytes:
        return data
    if type(data) is memoryview:
        if PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(data), b'C'):
            return data
        return bytes(data)
    return memoryview(data)


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
