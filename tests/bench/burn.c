/* burn.c - a stand-in for the bridge and wrk's CPU, for `make bench`: keeps
 * CORES of the machine busy for SECONDS, spread over THREADS threads (the
 * bridge's workers), each spinning DUTY = CORES / THREADS of every
 * millisecond and sleeping the rest. Run beside the direct client, it
 * shows what the broker does when it shares the cores the way it does
 * with the bridge: the distance between the two that is the machine's,
 * not the bridge's messages.
 *
 *   bench-burn CORES SECONDS [THREADS]
 *
 * Prints `burn cores=C used=U` at the end, U the CPU it really took over
 * the wall time (a busy machine gives it less). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#define PERIOD_NS 1000000L /* spin, then sleep, within each millisecond */

static double duty; /* fraction of each period a thread spins */
static double stop; /* monotonic seconds to stop at */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *spin(void *arg)
{
    (void)arg;
    volatile unsigned long work = 0;
    for (double t = now_s(); t < stop; t = now_s()) {
        double until = t + duty * PERIOD_NS / 1e9;
        while (now_s() < until)
            work++;
        struct timespec rest = {0, (long)((1.0 - duty) * PERIOD_NS)};
        if (rest.tv_nsec > 0)
            nanosleep(&rest, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: bench-burn CORES SECONDS [THREADS]\n", stderr);
        return 2;
    }
    double cores = strtod(argv[1], NULL), secs = strtod(argv[2], NULL);
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    if (!(cores >= 0) || !(secs > 0) || threads < 1 || threads > 64 || cores > threads) {
        fputs("bench-burn: CORES in 0..THREADS, SECONDS > 0, THREADS in 1..64\n", stderr);
        return 2;
    }
    duty = cores / threads;
    double start = now_s();
    stop = start + secs;
    pthread_t th[64];
    for (int i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, spin, NULL) != 0) {
            perror("bench-burn: pthread_create");
            return 1;
        }
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double used = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("burn cores=%.2f used=%.2f\n", cores, used / (now_s() - start));
    return 0;
}
