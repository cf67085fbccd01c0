/*
 * The handle table: slot index + generation per context handle. It is the runtime's one piece of global
 * mutable state, by necessity: a handle must stay checkable after its context is gone. Every access holds
 * `table.lock`; a slot's `users` counts calls inside its context, and removal waits for them to leave
 * before the context may be freed. A freed slot's generation moves on, so its old handles never match again.
 */
#include <pthread.h>
#include <stdlib.h>

#include "handles.h"

#ifdef __arm__ /* 32-bit rknn_context: 16 bits of index, 16 of generation */
#define INDEX_BITS 16
#else
#define INDEX_BITS 32
#endif
#define INDEX_MASK ((1ull << INDEX_BITS) - 1)
#define GEN_MASK ((1ull << (8 * sizeof(rknn_context) - INDEX_BITS)) - 1)
#define MAX_SLOTS (INDEX_MASK - 1)

typedef struct slot {
    struct sim_ctx *ctx; /* NULL: free (once users is 0) */
    uint64_t gen;        /* 1..GEN_MASK */
    uint32_t users;
} slot;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    slot *slots;
    uint64_t n, cap;
} table = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0};

static rknn_context encode(uint64_t index, uint64_t gen)
{
    return (rknn_context)((gen << INDEX_BITS) | (index + 1));
}

/* The slot of `h` if it is live, else NULL. Caller holds table.lock. */
static slot *find(rknn_context h)
{
    uint64_t raw = (uint64_t)h;
    uint64_t index = raw & INDEX_MASK;
    uint64_t gen = (raw >> INDEX_BITS) & GEN_MASK;
    if (index == 0 || index > table.n)
        return NULL;
    slot *s = &table.slots[index - 1];
    return s->ctx != NULL && s->gen == gen ? s : NULL;
}

rknn_context sim_handle_add(struct sim_ctx *c)
{
    pthread_mutex_lock(&table.lock);
    uint64_t i = 0;
    while (i < table.n && (table.slots[i].ctx != NULL || table.slots[i].users != 0))
        i++;
    if (i == table.n) {
        if (table.n == table.cap) {
            uint64_t cap = table.cap ? table.cap * 2 : 64;
            slot *grown = cap <= MAX_SLOTS ? realloc(table.slots, cap * sizeof(slot)) : NULL;
            if (grown == NULL) {
                pthread_mutex_unlock(&table.lock);
                return 0;
            }
            table.slots = grown;
            table.cap = cap;
        }
        table.slots[table.n++] = (slot){NULL, 0, 0};
    }
    slot *s = &table.slots[i];
    s->gen = s->gen % GEN_MASK + 1; /* never 0, so no handle is 0 */
    s->ctx = c;
    rknn_context h = encode(i, s->gen);
    pthread_mutex_unlock(&table.lock);
    return h;
}

struct sim_ctx *sim_handle_acquire(rknn_context h)
{
    pthread_mutex_lock(&table.lock);
    slot *s = find(h);
    struct sim_ctx *c = NULL;
    if (s != NULL) {
        s->users++;
        c = s->ctx;
    }
    pthread_mutex_unlock(&table.lock);
    return c;
}

void sim_handle_release(rknn_context h)
{
    uint64_t index = (uint64_t)h & INDEX_MASK;
    pthread_mutex_lock(&table.lock);
    if (index >= 1 && index <= table.n && table.slots[index - 1].users > 0) {
        if (--table.slots[index - 1].users == 0)
            pthread_cond_broadcast(&table.idle);
    }
    pthread_mutex_unlock(&table.lock);
}

struct sim_ctx *sim_handle_remove(rknn_context h)
{
    pthread_mutex_lock(&table.lock);
    slot *s = find(h);
    struct sim_ctx *c = NULL;
    if (s != NULL) {
        uint64_t index = (uint64_t)s - (uint64_t)table.slots;
        index /= sizeof(slot);
        c = s->ctx;
        s->ctx = NULL; /* later acquires fail at once */
        while (table.slots[index].users != 0)
            pthread_cond_wait(&table.idle, &table.lock); /* the table may move: index, not pointer */
    }
    pthread_mutex_unlock(&table.lock);
    return c;
}
