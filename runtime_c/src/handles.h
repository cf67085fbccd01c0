/*
 * Context handles: what rknn_init gives the caller is an index and a generation into the process's handle
 * table, never the context's address, so a stale handle (after rknn_destroy) or a made-up one is refused
 * without reading freed or foreign memory.
 */
#ifndef SIM_HANDLES_H
#define SIM_HANDLES_H

#include "rknn_api.h"

struct sim_ctx;

/* A new handle for `c` (never 0), or 0 when the table cannot grow. */
rknn_context sim_handle_add(struct sim_ctx *c);
/* The live context of `h` with a use counted (release it with sim_handle_release), or NULL. */
struct sim_ctx *sim_handle_acquire(rknn_context h);
void sim_handle_release(rknn_context h);
/* Invalidate `h` (later acquires fail), wait until no call uses its context, and return it (or NULL). */
struct sim_ctx *sim_handle_remove(rknn_context h);

#endif
