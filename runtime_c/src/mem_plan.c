/*
 * Activation memory plan: every intermediate tensor gets an offset in one arena, and two tensors share
 * bytes only if their lifetimes (producer .. last reader, inclusive) do not overlap. Tensors are placed
 * largest first at the best-fitting gap among the already placed tensors that are alive at the same
 * time (greedy-by-size best fit). The plan is computed twice: in the working representation (float32
 * for FLOAT16/FLOAT32, int8 for INT8) for the CPU arena, and in the declared dtype sizes for the
 * NPU-style number reported by RKNN_QUERY_MEM_SIZE (total_internal_size).
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

int sim_plan_memory(sim_model *m, char *err, size_t err_len)
{
    const sim_graph *g = &m->g;
    uint32_t nt = g->n_tensors;
    uint32_t *first = malloc((size_t)nt * sizeof(uint32_t));
    uint32_t *last = malloc((size_t)nt * sizeof(uint32_t));
    plan_item *items = malloc((size_t)nt * sizeof(plan_item));
    m->work_off = sim_pool_alloc(&m->pool, (size_t)nt * sizeof(uint64_t));
    if (!first || !last || !items || !m->work_off) {
        free(first); free(last); free(items);
        snprintf(err, err_len, "out of memory planning activation memory");
        return -1;
    }
    for (uint32_t t = 0; t < nt; t++) {
        first[t] = SIM_NONE;
        last[t] = 0;
        m->work_off[t] = UINT64_MAX;
    }
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
    if (rc == 0) {
        for (uint32_t i = 0; i < n; i++)
            items[i].size = align_up((uint64_t)g->tensors[items[i].tensor].n_elems *
                                     sim_work_elem_size(g->tensors[items[i].tensor].dtype));
        rc = place(items, n, &m->work_size);
        for (uint32_t i = 0; rc == 0 && i < n; i++)
            m->work_off[items[i].tensor] = items[i].off;
    }
    free(first); free(last); free(items);
    if (rc) {
        snprintf(err, err_len, "out of memory planning activation memory");
        return -1;
    }
    return 0;
}
