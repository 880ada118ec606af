# The compiled send batch's calls (see _sendring.py, the reference): the writes of one
# flush go to the kernel through io_uring, one IORING_OP_SEND each, submitted in
# one io_uring_enter(). MSG_DONTWAIT makes each send complete (or fail with
# EAGAIN) inside that call, as a send() on the non-blocking socket would, so every
# result is in the completion queue when it returns and no buffer is used after.
#
# One ring per thread (the loop's), made on first use and again in a forked child
# (a ring shared with the parent would mix both processes' sends; pthread_atfork
# counts the forks). Where the
# kernel has no io_uring (or one older than Linux 5.18, or refused by seccomp or
# kernel.io_uring_disabled), ring_open() is false and the transport sends each
# write itself; so it is where this was built without a <linux/io_uring.h> of 5.18.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE


cdef extern from *:
    """
    #if defined(__linux__) && defined(__has_include)
    #if __has_include(<linux/io_uring.h>)
    #include <linux/io_uring.h>
    #ifdef IORING_FEAT_LINKED_FILE
    #define AIOHTTP_UPGRADE_RING 1
    #endif
    #endif
    #endif

    #include <errno.h>
    #include <sys/socket.h>

    static Py_ssize_t au_send_now(int fd, const char *data, Py_ssize_t size) {
        Py_ssize_t sent = send(fd, data, (size_t)size, MSG_DONTWAIT);
        return sent < 0 ? -errno : sent;
    }

    #ifdef AIOHTTP_UPGRADE_RING
    #include <limits.h>
    #include <pthread.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <sys/syscall.h>
    #include <unistd.h>

    #define AU_RING_ENTRIES 1024

    #define AU_UNTOLD INT_MIN  /* a result not given by the kernel yet */

    typedef struct {
        int fd;  /* -1: no ring */
        unsigned forks;  /* au_forks when it was made */
        unsigned queued;
        unsigned *sq_tail, *sq_mask, *cq_head, *cq_tail, *cq_mask;
        struct io_uring_sqe *sqes;
        struct io_uring_cqe *cqes;
        void *rings;
        size_t rings_size;
        int results[AU_RING_ENTRIES];
    } au_ring_t;

    static __thread au_ring_t *au_ring = NULL;
    static __thread int au_ring_refused = 0;  /* the kernel said no: never ask again */
    static unsigned au_forks = 0;  /* fork()s that made this process, counted in it */
    static int au_watching_forks = 0;

    static void au_forked(void) { au_forks++; }

    /* Let the ring go; the results of its last submit stay readable. */
    static void au_ring_unmap(au_ring_t *r) {
        if (r->sqes) munmap(r->sqes, AU_RING_ENTRIES * sizeof(struct io_uring_sqe));
        if (r->rings) munmap(r->rings, r->rings_size);
        if (r->fd >= 0) close(r->fd);
        r->sqes = NULL;
        r->rings = NULL;
        r->fd = -1;
        r->queued = 0;
    }

    static int au_ring_setup(au_ring_t *r) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 2 * AU_RING_ENTRIES;
        int fd = (int)syscall(__NR_io_uring_setup, AU_RING_ENTRIES, &p);
        if (fd < 0) {  /* no io_uring, or not for us: for good; else (EMFILE,
                          ENOMEM...) maybe at the next flush */
            return errno == ENOSYS || errno == EPERM || errno == EACCES
                   || errno == EINVAL ? -1 : -2;
        }
        r->fd = fd;
        /* Linux 5.18 or later (the newest of these features): there a send with
           MSG_DONTWAIT completes in the submitting call, whatever it returns. */
        unsigned needed = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_LINKED_FILE;
        if ((p.features & needed) != needed || p.sq_entries != AU_RING_ENTRIES) return -1;
        size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
        size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
        r->rings_size = sq_size > cq_size ? sq_size : cq_size;
        char *rings = mmap(NULL, r->rings_size, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
        if (rings == MAP_FAILED) return -2;
        r->rings = rings;
        void *sqes = mmap(NULL, AU_RING_ENTRIES * sizeof(struct io_uring_sqe),
                          PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                          IORING_OFF_SQES);
        if (sqes == MAP_FAILED) return -2;
        r->sqes = sqes;
        r->sq_tail = (unsigned *)(rings + p.sq_off.tail);
        r->sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
        unsigned *array = (unsigned *)(rings + p.sq_off.array);
        for (unsigned i = 0; i < p.sq_entries; i++) array[i] = i;
        r->cq_head = (unsigned *)(rings + p.cq_off.head);
        r->cq_tail = (unsigned *)(rings + p.cq_off.tail);
        r->cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
        r->cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
        r->forks = au_forks;
        return 0;
    }

    static int au_ring_open(void) {
        if (au_ring_refused) return 0;
        if (au_ring != NULL && au_ring->fd >= 0 && au_ring->forks == au_forks) return 1;
        if (!au_watching_forks) {
            if (pthread_atfork(NULL, NULL, au_forked) != 0) return 0;
            au_watching_forks = 1;
        }
        if (au_ring == NULL) {
            au_ring = PyMem_RawCalloc(1, sizeof *au_ring);
            if (au_ring == NULL) return 0;
            au_ring->fd = -1;
        } else {  /* a fork's copy of the parent's ring: let it go, make our own */
            au_ring_unmap(au_ring);
        }
        int made = au_ring_setup(au_ring);
        if (made < 0) {
            au_ring_unmap(au_ring);
            au_ring_refused = made == -1;
            return 0;
        }
        return 1;
    }

    static void au_ring_close(void) {
        if (au_ring != NULL) {
            au_ring_unmap(au_ring);
            PyMem_RawFree(au_ring);
            au_ring = NULL;
        }
    }

    static int au_ring_add(int fd, const char *data, Py_ssize_t size) {
        au_ring_t *r = au_ring;
        if (r == NULL || r->fd < 0 || r->queued == AU_RING_ENTRIES) return 0;
        struct io_uring_sqe *sqe = &r->sqes[(*r->sq_tail + r->queued) & *r->sq_mask];
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = IORING_OP_SEND;
        sqe->fd = fd;
        sqe->addr = (unsigned long)data;
        sqe->len = size > INT_MAX ? INT_MAX : (unsigned)size;  /* a short send */
        sqe->msg_flags = MSG_DONTWAIT;
        sqe->user_data = r->queued;
        r->results[r->queued++] = AU_UNTOLD;
        return 1;
    }

    /* Submit what is queued; the number of sends that completed. Each send's
       result (bytes sent or -errno) is then au_ring_result(i): -ECANCELED for a
       send the kernel did not take (to be made by the caller), -EIO for one it
       took without completing it (never the case from Linux 5.18 on: see above;
       made again, it could be sent twice). */
    static Py_ssize_t au_ring_submit(void) {
        au_ring_t *r = au_ring;
        unsigned queued = r->queued;
        r->queued = 0;
        if (!queued) return 0;
        __atomic_store_n(r->sq_tail, *r->sq_tail + queued, __ATOMIC_RELEASE);
        long taken;
        do {
            taken = syscall(__NR_io_uring_enter, r->fd, queued, 0, 0, NULL, 0);
        } while (taken < 0 && errno == EINTR);
        unsigned head = *r->cq_head;
        unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        Py_ssize_t completed = 0;
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
            if (cqe->user_data < queued) {
                r->results[cqe->user_data] = cqe->res;
                completed++;
            }
        }
        __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
        if (taken != (long)queued || completed != (Py_ssize_t)queued) {
            /* Entries may be left in the submission queue, pointing at buffers
               about to be freed: closing the ring drops them. This thread sends
               without a ring from now on. */
            for (unsigned i = 0; i < queued; i++) {
                if (r->results[i] == AU_UNTOLD)
                    r->results[i] = (long)i < taken ? -EIO : -ECANCELED;
            }
            au_ring_unmap(r);
            au_ring_refused = 1;
        }
        return completed;
    }

    static int au_ring_result(Py_ssize_t index) {
        return au_ring != NULL ? au_ring->results[index] : -ECANCELED;
    }
    #else
    static int au_ring_open(void) { return 0; }
    static void au_ring_close(void) {}
    static int au_ring_add(int fd, const char *data, Py_ssize_t size) { return 0; }
    static Py_ssize_t au_ring_submit(void) { return 0; }
    static int au_ring_result(Py_ssize_t index) { return 0; }
    #endif
    """
    bint au_ring_open()
    void au_ring_close()
    bint au_ring_add(int fd, const char *data, Py_ssize_t size)
    Py_ssize_t au_ring_submit()
    int au_ring_result(Py_ssize_t index)
    Py_ssize_t au_send_now(int fd, const char *data, Py_ssize_t size)


cdef inline bint ring_open():
    return au_ring_open()


cdef inline void ring_close():
    au_ring_close()


cdef inline bint ring_add(int fd, bytes data):
    return au_ring_add(fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef inline Py_ssize_t ring_submit():
    return au_ring_submit()


cdef inline int ring_result(Py_ssize_t index):
    return au_ring_result(index)


cdef inline Py_ssize_t send_now(int fd, bytes data):
    return au_send_now(fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
