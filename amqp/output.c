/* output.c - frames toward the broker without ever waiting in send(): how
 * much the socket takes now (its send buffer less what is unsent, TLS's
 * overhead taken off), whether a publish fits, and a body too large for
 * the whole room written in pieces as room comes, dropped with the
 * connection when it is not taken within [http] timeout. */
#include "amqp/broker_int.h"

#include <amqp.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "amqp/broker_config.h"
#include "bridge/base/log.h"

#define BROKER_BODY_FRAME_OVERHEAD 8 /* type, channel, size; the frame-end octet */
/* A body too large for the socket's whole room goes out in pieces no
 * smaller than this (unless it is the last): no storm of tiny frames. */
#define BROKER_MIN_PIECE 4096
#define BROKER_OUT_POLL_MS 1 /* how often the rest of such a body looks for room */
/* amqps://: what TLS adds on the wire per record (16 KiB of payload at most):
 * header, MAC or tag, padding; generous, it only sizes the room check. */
#define BROKER_TLS_RECORD 16384
#define BROKER_TLS_RECORD_OVERHEAD 64

/* rabbitmq-c writes with no time limit: amqp_basic_publish and
 * amqp_send_frame wait in poll() on a full socket until the broker reads
 * again or its heartbeat is overdue, and the loop with them. So the loop
 * writes only what the kernel has room for now: three quarters of the send
 * buffer (the rest covers the kernel's bookkeeping, which SO_SNDBUF counts)
 * less what is still unsent. Into *WHOLE: that room with nothing unsent,
 * the most a single write can ever have; into *UNSENT: what waits in it.
 * SO_SNDBUF is what the kernel really holds (TCP autotuning moves it, 16 KiB
 * to net.ipv4.tcp_wmem's 4 MiB on Debian 12, and only up but under memory
 * pressure): kept in *SNDBUF, and read again when FRESH (the caller found no
 * room with the kept one) or never read on this connection. So a publish
 * that fits costs one system call (SIOCOUTQ). */
static size_t socket_room(int fd, int *sndbuf, bool fresh, size_t *whole, size_t *unsent)
{
    int queued = 0;
    *whole = SIZE_MAX;
    *unsent = 0;
    if (ioctl(fd, SIOCOUTQ, &queued) != 0 || queued < 0)
        return SIZE_MAX; /* the kernel does not say: write as before */
    if (fresh || *sndbuf <= 0) {
        socklen_t sl = sizeof *sndbuf;
        if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, sndbuf, &sl) != 0 || *sndbuf <= 0) {
            *sndbuf = 0;
            return SIZE_MAX;
        }
    }
    *whole = (size_t)*sndbuf / 4 * 3;
    *unsent = (size_t)queued;
    return *unsent >= *whole ? 0 : *whole - *unsent;
}

/* What TLS adds on the wire to N bytes of AMQP (per-record overhead). */
static size_t tls_extra(const struct broker *b, size_t n)
{
    return b->tls ? (n / BROKER_TLS_RECORD + 1) * BROKER_TLS_RECORD_OVERHEAD : 0;
}

/* The socket's room now in bytes of AMQP frames (TLS's overhead taken off). */
static size_t frame_room(struct broker *b, bool fresh, size_t *whole, size_t *unsent)
{
    size_t room = socket_room(amqp_get_sockfd(b->conn), &b->sndbuf, fresh, whole, unsent);
    if (room != SIZE_MAX) {
        size_t t = tls_extra(b, room);
        room = room > t ? room - t : 0;
    }
    if (*whole != SIZE_MAX) {
        size_t t = tls_extra(b, *whole);
        *whole = *whole > t ? *whole - t : 0;
    }
    return room;
}

/* The smallest body piece broker_write_rest sends before the last one. */
static size_t min_piece(size_t whole)
{
    return whole / 4 < BROKER_MIN_PIECE ? whole / 4 + 1 : BROKER_MIN_PIECE;
}

/* Where a publish of HEAD bytes of method and header frames and a BODY_LEN
 * body stands. A body that is being written in pieces comes first, whole:
 * nothing goes out between its frames. One that would fit once the broker
 * reads what waits, waits. One larger than the whole room starts when its
 * head and a piece of its body fit; with nothing unsent, at once (its head
 * frames go out in one write: a head larger than the whole room, headers
 * beyond 12 KiB on a fresh connection, may still wait in send() for a
 * broker that stops reading right then; TCP_USER_TIMEOUT bounds that). */
enum fit broker_publish_fits(struct broker *b, size_t head, size_t body_len)
{
    if (b->out_body != NULL)
        return FIT_WAIT;
    size_t whole, unsent;
    size_t need = head + body_len;
    size_t room = frame_room(b, false, &whole, &unsent);
    if (need <= room)
        return FIT_WHOLE;
    room = frame_room(b, true, &whole, &unsent); /* the buffer may have grown */
    if (need <= room)
        return FIT_WHOLE;
    if (need <= whole)
        return FIT_WAIT;
    if (unsent == 0 ||
        (room > head && room - head >= min_piece(whole) + BROKER_BODY_FRAME_OVERHEAD))
        return FIT_PIECES;
    return FIT_WAIT;
}

bool broker_has_room(struct broker *b, size_t body_len)
{
    if (b->state != BROKER_UP || b->conn == NULL)
        return false;
    return broker_publish_fits(b, BROKER_FRAME_OVERHEAD, body_len) != FIT_WAIT;
}

void broker_drop_out(struct broker *b)
{
    free(b->out_body);
    b->out_body = NULL;
    b->out_len = b->out_off = 0;
    event_del(b->out_ev);
}

/* Write more of the body being written in pieces: whole body frames, each no
 * larger than the room now, so that send() never waits; again in
 * BROKER_OUT_POLL_MS while some is left. AMQP_STATUS_OK, or rabbitmq-c's
 * error (the caller loses the connection). */
int broker_write_rest(struct broker *b)
{
    size_t frame_body = (size_t)amqp_get_frame_max(b->conn) - BROKER_BODY_FRAME_OVERHEAD;
    while (b->out_off < b->out_len) {
        size_t whole, unsent;
        size_t room = frame_room(b, true, &whole, &unsent);
        if (room <= BROKER_BODY_FRAME_OVERHEAD)
            break;
        size_t left = b->out_len - b->out_off;
        size_t piece = left < frame_body ? left : frame_body;
        if (piece > room - BROKER_BODY_FRAME_OVERHEAD)
            piece = room - BROKER_BODY_FRAME_OVERHEAD;
        if (piece < left && piece < min_piece(whole))
            break;
        amqp_frame_t f = {.frame_type = AMQP_FRAME_BODY, .channel = b->channel};
        f.payload.body_fragment = (amqp_bytes_t){piece, b->out_body + b->out_off};
        int rc = amqp_send_frame(b->conn, &f);
        if (rc != AMQP_STATUS_OK)
            return rc;
        b->out_off += piece;
    }
    if (b->out_off < b->out_len) {
        struct timeval tv = {0, BROKER_OUT_POLL_MS * 1000};
        event_add(b->out_ev, &tv);
        return AMQP_STATUS_OK;
    }
    log_debug("broker: a %zu-byte body written in pieces", b->out_len);
    broker_drop_out(b);
    broker_pump_soon(b);
    return AMQP_STATUS_OK;
}

void broker_on_out(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct broker *b = arg;
    if (b->conn == NULL || b->out_body == NULL)
        return;
    /* A broker that reads, but too slowly to take the body within [http]
     * timeout, would keep every other publish of this worker waiting behind
     * it for as long as it trickles: its request has had its 503 by now, and
     * a message cannot be abandoned halfway on the channel. */
    if (broker_mono_ms() >= b->out_until) {
        char why[BROKER_REASON_LEN];
        snprintf(why, sizeof why,
                 "a %zu-byte body was not taken within %llu ms (%zu bytes written): connection "
                 "dropped",
                 b->out_len, (unsigned long long)b->cfg->write_timeout_ms, b->out_off);
        broker_lost(b, why);
        return;
    }
    int rc = broker_write_rest(b);
    if (rc != AMQP_STATUS_OK)
        broker_lost(b, amqp_error_string2(rc));
}

void broker_cork(struct broker *b)
{
    int on = 1;
    if (b->corked || b->conn == NULL)
        return;
    if (setsockopt(amqp_get_sockfd(b->conn), IPPROTO_TCP, TCP_CORK, &on, sizeof on) != 0)
        return; /* not TCP: each write goes out as it comes */
    b->corked = true;
    /* Behind every callback already due in this turn: the turn's last. */
    event_active(b->flush_ev, EV_TIMEOUT, 0);
}

void broker_uncork(struct broker *b)
{
    int off = 0;
    event_del(b->flush_ev);
    if (!b->corked)
        return;
    b->corked = false;
    if (b->conn != NULL)
        (void)setsockopt(amqp_get_sockfd(b->conn), IPPROTO_TCP, TCP_CORK, &off, sizeof off);
}

void broker_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    broker_uncork(arg);
}
