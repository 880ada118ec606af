# C declarations for the compiled twin of _hub.py (aiohttp_upgrade._hub_c): the
# fan-out loop. Hub stays a Python class (its attributes are the pub/sub features'
# to extend); the loop gets C locals. The .py is the reference.
cimport cython

from aiohttp_upgrade._outbox_c cimport Outbox as COutbox


@cython.locals(
    length=Py_ssize_t,
    code=Py_ssize_t,
    delivered=bint,
    dropped=bint,
    queued=bint,
    shared=dict,
    built=Py_ssize_t,
    box=COutbox,
    typed=bint,
)
cpdef Py_ssize_t _fan_out(
    object subscribers,
    int opcode,
    object payload,
    bint compress,
    object message,
    object skip,
) except? -2
