/* trace.h - W3C trace context (https://www.w3.org/TR/trace-context/ and
 * the baggage draft): checking a request's traceparent, tracestate and
 * baggage before they are copied into a message, and starting a trace
 * when a request brings none. The bridge records no spans of its own: a
 * valid traceparent passes unchanged, so the consumer's span is the
 * caller's child. */
#ifndef BRIDGE_TRACE_H
#define BRIDGE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_PARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_ID_LEN 32     /* the trace id's hex digits */
#define TRACE_STATE_MAX 512 /* tracestate: the length every vendor must pass on */
#define TRACE_STATE_MEMBERS 32
#define TRACE_BAGGAGE_MAX 8192
#define TRACE_BAGGAGE_MEMBERS 180

/* Per-worker generator of new trace and span ids; no locking. */
struct trace_gen {
    uint64_t s; /* splitmix64 state, seeded from getrandom */
};

void trace_gen_init(struct trace_gen *g);
/* A new traceparent, version 00, sampled: OUT (TRACE_PARENT_LEN + 1). */
void trace_parent_new(struct trace_gen *g, char out[TRACE_PARENT_LEN + 1]);

/* V (a request's one traceparent) in the spec's form: version 00 exactly,
 * or a later version (not ff) whose first four fields are read as 00's;
 * lower-case hex, trace and parent id not all zeros. When valid, its
 * version-00 form into OUT (TRACE_PARENT_LEN + 1) and true. */
bool trace_parent_parse(const char *v, char out[TRACE_PARENT_LEN + 1]);
/* Is V (LEN bytes) a tracestate list the bridge passes on: at most
 * TRACE_STATE_MAX bytes and TRACE_STATE_MEMBERS members, each key=value
 * with the spec's key and value characters (empty members allowed)? */
bool trace_state_valid(const char *v, size_t len);
/* Is V (LEN bytes) baggage the bridge passes on: at most TRACE_BAGGAGE_MAX
 * bytes and TRACE_BAGGAGE_MEMBERS members, each a token key, '=', then a
 * value and properties of printable ASCII but '"' and '\'? */
bool trace_baggage_valid(const char *v, size_t len);

#endif
