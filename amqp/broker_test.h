/* broker_test.h - the broker's frame handling driven without a socket, for
 * tests/unit/test_broker.c: pretend a connection on a channel, remember
 * publishes as broker_publish does (without sending them), and feed decoded
 * frames as the frame pump would. The bridge itself never calls these. */
#ifndef BRIDGE_BROKER_TEST_H
#define BRIDGE_BROKER_TEST_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct bridge_msg;

/* As a connection whose channel CHANNEL just opened: up, next tag 1. */
void broker_test_up(struct broker *b, uint16_t channel);
/* As a channel renewal: fail what waits on the current channel (503), then
 * go on with CHANNEL (no frames sent). */
void broker_test_renew(struct broker *b, uint16_t channel);
/* broker_publish's bookkeeping for M and CTX without the send; *TAG as
 * broker_publish gives it. 0, or -1 when it would refuse. */
int broker_test_enlist(struct broker *b, const struct bridge_msg *m, void *ctx, uint64_t *tag)
    __attribute__((warn_unused_result));
/* The correlation id of rpc HANDLE into OUT; its length. */
size_t broker_test_cid(const struct broker *b, uint64_t handle, char *out, size_t outlen);
/* One decoded frame, as the frame pump hands it on. */
void broker_test_frame(struct broker *b, const amqp_frame_t *f);
/* Bytes the rpc reply buffer holds allocated now. */
size_t broker_test_reply_capacity(const struct broker *b);

#endif
