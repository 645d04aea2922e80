/* backlog.c - requests waiting for room toward the broker (backlog.h): a
 * doubly linked list threaded through a fixed array of nodes, so that adding
 * at the back, leaving from anywhere and taking the front are O(1), the
 * order is kept, and a request that leaves from behind a stuck front frees
 * its node at once (a ring would keep its slot as a hole until the front
 * moved, and refuse new requests early during a long stall). */
#include "bridge/backlog.h"

#include <stdlib.h>

#define BACKLOG_MAX_CAP ((size_t)1 << 30)
#define NIL SIZE_MAX /* no node */

enum node_state {
    NODE_FREE,    /* on the free list */
    NODE_WAITING, /* in the list: can be cancelled, tried, failed */
    NODE_TAKEN,   /* taken by backlog_flush (its try running) or backlog_fail_all (not
                     answered yet): no longer cancellable */
};

struct node {
    void *item;            /* the caller's, NULL when free */
    size_t prev, next;     /* neighbours in the list (next: in the free list too) */
    enum node_state state; /* see above */
};

struct backlog {
    struct node *node;        /* cap entries */
    size_t cap;               /* most items at once */
    size_t head, tail;        /* oldest and newest waiting, NIL if none */
    size_t free;              /* first free node, NIL if none */
    size_t live;              /* waiting (NODE_WAITING) */
    backlog_try_fn *try_fn;   /* publish one */
    backlog_fail_fn *fail_fn; /* answer one */
    void *arg;                /* for both */
    bool flushing;            /* inside backlog_flush */
};

struct backlog *backlog_new(size_t cap, backlog_try_fn *try_fn, backlog_fail_fn *fail_fn, void *arg)
{
    if (cap == 0 || cap > BACKLOG_MAX_CAP || try_fn == NULL || fail_fn == NULL)
        return NULL;
    struct backlog *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->node = calloc(cap, sizeof *b->node);
    if (b->node == NULL) {
        free(b);
        return NULL;
    }
    for (size_t i = 0; i < cap; i++) {
        b->node[i].state = NODE_FREE;
        b->node[i].next = i + 1 < cap ? i + 1 : NIL;
        b->node[i].prev = NIL;
    }
    b->cap = cap;
    b->head = b->tail = NIL;
    b->free = 0;
    b->try_fn = try_fn;
    b->fail_fn = fail_fn;
    b->arg = arg;
    return b;
}

void backlog_free(struct backlog *b)
{
    if (b == NULL)
        return;
    free(b->node);
    free(b);
}

static void unlink_node(struct backlog *b, size_t i)
{
    struct node *n = &b->node[i];
    if (n->prev != NIL)
        b->node[n->prev].next = n->next;
    else
        b->head = n->next;
    if (n->next != NIL)
        b->node[n->next].prev = n->prev;
    else
        b->tail = n->prev;
    n->prev = n->next = NIL;
    b->live--;
}

/* Node I waits again: at the back (a new item) or at the front (one that
 * found no room, so that its order and its ticket hold). */
static void link_node(struct backlog *b, size_t i, bool front)
{
    struct node *n = &b->node[i];
    n->state = NODE_WAITING;
    if (front) {
        n->prev = NIL;
        n->next = b->head;
        if (b->head != NIL)
            b->node[b->head].prev = i;
        else
            b->tail = i;
        b->head = i;
    } else {
        n->next = NIL;
        n->prev = b->tail;
        if (b->tail != NIL)
            b->node[b->tail].next = i;
        else
            b->head = i;
        b->tail = i;
    }
    b->live++;
}

static void release_node(struct backlog *b, size_t i)
{
    struct node *n = &b->node[i];
    n->item = NULL;
    n->state = NODE_FREE;
    n->prev = NIL;
    n->next = b->free;
    b->free = i;
}

int backlog_add(struct backlog *b, void *item, uint64_t *ticket)
{
    if (item == NULL || b->free == NIL)
        return -1;
    size_t i = b->free;
    struct node *n = &b->node[i];
    b->free = n->next;
    n->item = item;
    link_node(b, i, false);
    *ticket = (uint64_t)i;
    return 0;
}

bool backlog_cancel(struct backlog *b, uint64_t ticket, const void *item)
{
    if (ticket >= (uint64_t)b->cap)
        return false;
    size_t i = (size_t)ticket;
    if (b->node[i].state != NODE_WAITING || b->node[i].item != item)
        return false;
    unlink_node(b, i);
    release_node(b, i);
    return true;
}

size_t backlog_flush(struct backlog *b)
{
    if (b->flushing)
        return 0;
    b->flushing = true;
    size_t gone = 0;
    while (b->head != NIL) {
        size_t i = b->head;
        struct node *n = &b->node[i];
        unlink_node(b, i);
        n->state = NODE_TAKEN;
        if (b->try_fn(b->arg, n->item, (uint64_t)i)) {
            release_node(b, i);
            gone++;
            continue;
        }
        /* No room: back to the front, the same node, so its ticket holds. */
        link_node(b, i, true);
        break;
    }
    b->flushing = false;
    return gone;
}

size_t backlog_fail_all(struct backlog *b, const char *why)
{
    /* Take the whole list first: what the callback adds waits on, and what
     * it cancels among these is no longer cancellable (answered here). */
    size_t i = b->head;
    for (size_t j = i; j != NIL; j = b->node[j].next)
        b->node[j].state = NODE_TAKEN;
    b->head = b->tail = NIL;
    b->live = 0;
    size_t n = 0;
    while (i != NIL) {
        size_t next = b->node[i].next;
        void *item = b->node[i].item;
        release_node(b, i);
        b->fail_fn(b->arg, item, why);
        n++;
        i = next;
    }
    return n;
}

size_t backlog_live(const struct backlog *b)
{
    return b->live;
}

void *backlog_front(const struct backlog *b)
{
    return b->head != NIL ? b->node[b->head].item : NULL;
}
