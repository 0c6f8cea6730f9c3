/*
 * Timed waits on the monotonic clock for tritonserver and its Python-backend stubs (LD_PRELOAD).
 *
 * Triton's Python backend (r24.10, and its main branch still) bounds its waits on a stub with
 * absolute deadlines on the wall clock (boost::get_system_time() + 1 s, through
 * pthread_mutex_timedlock and sem_timedwait): while a request runs, the server clears the stub's
 * health flag, waits up to a second for the answer, and calls the stub "not healthy" when the wait
 * times out and the stub's health thread (every 300 ms) has not set the flag again. A step of the
 * wall clock (a virtual machine resumed or forked, an NTP step) ends every such wait at once: the
 * request fails with "Stub process '<model>_0_0' is not healthy", the stub's late answer stays in
 * the queue, and the next request to that model reads it and crashes the server (SIGSEGV, or
 * SIGABRT on a boost lock_exception). Ten steps of +2 s, 0.37 s apart, under load killed the
 * CPU profile's server in every try; with this library, 30 steps of +60 s failed no request.
 *
 * Each wrapper keeps the caller's deadline as a duration from now and waits for it on
 * CLOCK_MONOTONIC (glibc's pthread_mutex_clocklock and sem_clockwait), which no clock step moves.
 * ops/synctalk_build/monotonic_waits.py builds it; ops/synctalk_ops/serve.py and the image (deploy/Dockerfile) preload it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <time.h>

#define NS_PER_S 1000000000LL

static int valid(const struct timespec *t)
{
    return t != NULL && t->tv_nsec >= 0 && t->tv_nsec < NS_PER_S;
}

/* The monotonic instant as far from now as the wall-clock deadline (now, where that has passed). */
static struct timespec monotonic_deadline(const struct timespec *wall_deadline)
{
    struct timespec wall, mono, deadline;
    clock_gettime(CLOCK_REALTIME, &wall);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    long long left = (long long)(wall_deadline->tv_sec - wall.tv_sec) * NS_PER_S + (wall_deadline->tv_nsec - wall.tv_nsec);
    if (left < 0) {
        left = 0;
    }
    long long nsec = mono.tv_nsec + left % NS_PER_S;
    deadline.tv_sec = mono.tv_sec + left / NS_PER_S + nsec / NS_PER_S;
    deadline.tv_nsec = nsec % NS_PER_S;
    return deadline;
}

int pthread_mutex_timedlock(pthread_mutex_t *mutex, const struct timespec *abstime)
{
    if (!valid(abstime)) { /* glibc's own answer (EINVAL) */
        return pthread_mutex_clocklock(mutex, CLOCK_REALTIME, abstime);
    }
    struct timespec deadline = monotonic_deadline(abstime);
    return pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, &deadline);
}

int sem_timedwait(sem_t *sem, const struct timespec *abstime)
{
    if (!valid(abstime)) {
        return sem_clockwait(sem, CLOCK_REALTIME, abstime);
    }
    struct timespec deadline = monotonic_deadline(abstime);
    return sem_clockwait(sem, CLOCK_MONOTONIC, &deadline);
}
