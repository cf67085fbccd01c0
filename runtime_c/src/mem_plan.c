/*
 * Activation memory plan: every intermediate tensor gets an offset in one arena, and two tensors share
 * bytes only if their lifetimes (producer .. last reader, inclusive) do not overlap. Tensors are placed
 * largest first at the best-fitting gap among the already placed tensors that are alive at the same
 * time (greedy-by-size best fit). The plan is computed twice: in the working representation (float32
 * for FLOAT16/FLOAT32, int8 for INT8) for the CPU arena, and in the declared dtype sizes for the
 * NPU-style number reported by RKNN_QUERY_MEM_SIZE (total_internal_size).
 *
 * In the CPU arena a Reshape (Flatten, Squeeze and Unsqueeze lower to it) whose output is a pure view of
 * its input (both intermediate, same dtype, size and quantisation, no fused activation) shares its input's
 * bytes: the two tensors form one item whose lifetime is the union of theirs, and the kernel skips the
 * copy when its input and output pointers are equal. Per-layer dumps copy each output right after its
 * producer, so they are unaffected.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"

#define PLAN_ALIGN 64u

typedef struct plan_item {
    uint32_t tensor, first, last;
    uint64_t size, off;
} plan_item;

static int by_size_desc(const void *a, const void *b)
{
    const plan_item *x = a, *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return x->tensor < y->tensor ? -1 : (x->tensor > y->tensor);
}

static int by_off(const void *a, const void *b)
{
    const plan_item *const *x = a, *const *y = b;
    if ((*x)->off != (*y)->off)
        return (*x)->off < (*y)->off ? -1 : 1;
    return 0;
}

/* Places items (sizes set) and returns the arena size; items[i].off is filled. */
static int place(plan_item *items, uint32_t n, uint64_t *total)
{
    plan_item **live = malloc((size_t)(n ? n : 1) * sizeof(*live));
    if (live == NULL)
        return -1;
    qsort(items, n, sizeof(*items), by_size_desc);
    uint64_t arena = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t nl = 0;
        for (uint32_t j = 0; j < i; j++)
            if (items[j].first <= items[i].last && items[i].first <= items[j].last)
                live[nl++] = &items[j];
        qsort(live, nl, sizeof(*live), by_off);
        uint64_t prev_end = 0, best = UINT64_MAX, best_gap = UINT64_MAX;
        for (uint32_t j = 0; j < nl; j++) {
            if (live[j]->off > prev_end) {
                uint64_t gap = live[j]->off - prev_end;
                if (gap >= items[i].size && gap < best_gap) {
                    best_gap = gap;
                    best = prev_end;
                }
            }
            uint64_t end = live[j]->off + live[j]->size;
            if (end > prev_end)
                prev_end = end;
        }
        items[i].off = best != UINT64_MAX ? best : prev_end;
        if (items[i].off + items[i].size > arena)
            arena = items[i].off + items[i].size;
    }
    free(live);
    *total = arena;
    return 0;
}

static uint64_t align_up(uint64_t v)
{
    return (v + PLAN_ALIGN - 1) & ~(uint64_t)(PLAN_ALIGN - 1);
}

/* Whether op k's output 0 may share its input 0's bytes (see the header comment). */
static int is_view_reshape(const sim_graph *g, const sim_op *op)
{
    if (op->type != SIM_OP_RESHAPE || op->act != SIM_ACT_NONE || op->n_inputs < 1 || op->n_outputs != 1)
        return 0;
    uint32_t xi = op->inputs[0], yi = op->outputs[0];
    if (xi == SIM_NONE || xi >= g->n_tensors || yi >= g->n_tensors || xi == yi)
        return 0;
    const sim_tensor *x = &g->tensors[xi], *y = &g->tensors[yi];
    if (x->kind != SIM_T_INTERMEDIATE || y->kind != SIM_T_INTERMEDIATE || x->dtype != y->dtype ||
        x->n_elems != y->n_elems)
        return 0;
    if (x->dtype != SIM_I8)
        return 1;
    return x->qnt != SIM_Q_CHANNEL && y->qnt != SIM_Q_CHANNEL && x->qnt == y->qnt && x->scale == y->scale &&
           x->zp == y->zp;
}

/* The CPU arena plan: items (one per intermediate tensor, lifetimes set) merged by view groups (root[t]
 * the tensor whose bytes t uses), placed, and every tensor's offset set from its root's. */
static int place_work(sim_model *m, const plan_item *items, uint32_t n, const uint32_t *root)
{
    const sim_graph *g = &m->g;
    plan_item *groups = malloc((size_t)(n ? n : 1) * sizeof(plan_item));
    uint32_t *slot = malloc((size_t)g->n_tensors * sizeof(uint32_t));
    if (!groups || !slot) {
        free(groups); free(slot);
        return -1;
    }
    for (uint32_t t = 0; t < g->n_tensors; t++)
        slot[t] = SIM_NONE;
    uint32_t ng = 0;
    for (uint32_t i = 0; i < n; i++) { /* roots first: a view's root is produced before it */
        uint32_t t = items[i].tensor;
        if (root[t] != t)
            continue;
        slot[t] = ng;
        groups[ng] = items[i];
        groups[ng].size = align_up((uint64_t)g->tensors[t].n_elems * sim_work_elem_size(g->tensors[t].dtype));
        ng++;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = items[i].tensor;
        if (root[t] == t)
            continue;
        plan_item *gr = &groups[slot[root[t]]];
        if (items[i].first < gr->first)
            gr->first = items[i].first;
        if (items[i].last > gr->last)
            gr->last = items[i].last;
    }
    int rc = place(groups, ng, &m->work_size);
    for (uint32_t i = 0; rc == 0 && i < ng; i++)
        slot[groups[i].tensor] = i; /* place() sorted the groups */
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        uint32_t t = items[i].tensor;
        m->work_off[t] = groups[slot[root[t]]].off;
    }
    free(groups); free(slot);
    return rc;
}

int sim_plan_memory(sim_model *m, char *err, size_t err_len)
{
    const sim_graph *g = &m->g;
    uint32_t nt = g->n_tensors;
    uint32_t *first = malloc((size_t)nt * sizeof(uint32_t));
    uint32_t *last = malloc((size_t)nt * sizeof(uint32_t));
    uint32_t *root = malloc((size_t)(nt ? nt : 1) * sizeof(uint32_t));
    plan_item *items = malloc((size_t)nt * sizeof(plan_item));
    m->work_off = sim_pool_alloc(&m->pool, (size_t)nt * sizeof(uint64_t));
    if (!first || !last || !root || !items || !m->work_off) {
        free(first); free(last); free(root); free(items);
        snprintf(err, err_len, "out of memory planning activation memory");
        return -1;
    }
    for (uint32_t t = 0; t < nt; t++) {
        first[t] = SIM_NONE;
        last[t] = 0;
        m->work_off[t] = UINT64_MAX;
        root[t] = t;
    }
    for (uint32_t k = 0; k < g->n_ops; k++) /* execution order: a view's input has its root already */
        if (is_view_reshape(g, &g->ops[k]))
            root[g->ops[k].outputs[0]] = root[g->ops[k].inputs[0]];
    uint64_t conv_max = 0;
    for (uint32_t k = 0; k < g->n_ops; k++) {
        const sim_op *op = &g->ops[k];
        uint64_t conv = 0;
        for (uint32_t i = 0; i < op->n_inputs; i++) {
            uint32_t t = op->inputs[i];
            if (t == SIM_NONE)
                continue;
            if (k > last[t])
                last[t] = k;
            const sim_tensor *ts = &g->tensors[t];
            if (ts->kind != SIM_T_CONST && ts->dtype == SIM_I8)
                conv += align_up((uint64_t)ts->n_elems * 4u);
        }
        for (uint32_t i = 0; i < op->n_outputs; i++) {
            uint32_t t = op->outputs[i];
            first[t] = k;
            if (k > last[t])
                last[t] = k;
            if (g->tensors[t].dtype == SIM_I8)
                conv += align_up((uint64_t)g->tensors[t].n_elems * 4u);
        }
        if (conv > conv_max)
            conv_max = conv;
    }
    m->conv_scratch = conv_max;
    uint32_t n = 0;
    m->io_size = 0;
    for (uint32_t t = 0; t < nt; t++) {
        const sim_tensor *ts = &g->tensors[t];
        if (ts->kind == SIM_T_INPUT || ts->kind == SIM_T_OUTPUT)
            m->io_size += (uint64_t)ts->n_elems * sim_dtype_size(ts->dtype);
        if (ts->kind != SIM_T_INTERMEDIATE)
            continue;
        items[n].tensor = t;
        items[n].first = first[t];
        items[n].last = last[t] > first[t] ? last[t] : first[t];
        items[n].size = align_up((uint64_t)ts->n_elems * sim_dtype_size(ts->dtype));
        n++;
    }
    int rc = place(items, n, &m->npu_internal_size);
    if (rc == 0)
        rc = place_work(m, items, n, root);
    free(first); free(last); free(root); free(items);
    if (rc) {
        snprintf(err, err_len, "out of memory planning activation memory");
        return -1;
    }
    return 0;
}
