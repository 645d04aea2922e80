/* handover.h - the listening sockets, which belong to the process and not
 * to a set of workers: made or inherited once (systemd's socket activation,
 * or the binary this one replaces), kept across reloads, handed to the next
 * binary on SIGUSR2, so that no connection queued on them is refused or
 * reset. And what systemd is told of it (sd_notify). */
#ifndef BRIDGE_HANDOVER_H
#define BRIDGE_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct http_config;

struct listeners {
    int fds[256];     /* per worker: the socket it accepts from */
    int n;            /* workers */
    bool inherited;   /* from LISTEN_FDS: listen in the file is not bound */
    pid_t takes_over; /* the process this one replaces (it started us on SIGUSR2), 0 = none */
};

/* The sockets for CFG's workers: the ones LISTEN_FDS names when it is for
 * us (one, shared by every worker, or one per worker), else one bound
 * SO_REUSEPORT socket per worker. The LISTEN_* variables are cleared. 0,
 * or -1 with the reason in err. */
int listeners_open(struct listeners *l, const struct http_config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void listeners_close(struct listeners *l);

/* Start EXE with ARGV as this process's successor: it gets L's sockets as
 * LISTEN_FDS, waits for its workers to reach the broker, accepts, then
 * sends us SIGUSR1. Its pid, or -1 with the reason in err. */
pid_t upgrade_spawn(const struct listeners *l, const char *exe, char *const argv[], char *err,
                    size_t errlen) __attribute__((warn_unused_result));

/* Tell the service manager STATE ("READY=1", "RELOADING=1", ...) when
 * NOTIFY_SOCKET names one (a Type=notify unit); else nothing. */
void notify(const char *state);

#endif
