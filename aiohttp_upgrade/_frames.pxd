# C declarations for the compiled twin of _frames.py (aiohttp_upgrade._frames_c).
# The .py stays the reference: nothing here may change what a function returns.
cimport cython

cdef int FIN, RSV1

cdef object _pack_16, _pack_64, _pack_code

cpdef bytes frame_header(int first_byte, Py_ssize_t length)

@cython.locals(first=int)
cpdef bytes build_frame(int opcode, object payload, bint rsv1=*)
