/*
 * RKNN_QUERY_PERF_DETAIL text in the vendor's layout (rknn-c-abi.md section 5.1): a layer table with
 * fixed-width columns, the per-frame totals, and the operator time ranking table. Times are the cost
 * model's estimates for the model's target NPU (docs/cost-model.md).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *s, const char *fmt, ...)
{
    if (s->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->p ? s->p + s->len : NULL, s->p ? s->cap - s->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            s->oom = 1;
            return;
        }
        if (s->p && (size_t)n < s->cap - s->len) {
            s->len += (size_t)n;
            return;
        }
        size_t ncap = (s->cap ? s->cap * 2 : 4096) + (size_t)n + 1;
        char *np = realloc(s->p, ncap);
        if (np == NULL) {
            s->oom = 1;
            return;
        }
        s->p = np;
        s->cap = ncap;
    }
}

static void sb_rule(sbuf *s, size_t w)
{
    for (size_t i = 0; i < w; i++)
        sb_printf(s, "-");
    sb_printf(s, "\n");
}

/* The vendor table's DataType column: sim_dtype_name in capitals (INT8, UINT8, FLOAT16, ...) in buf. */
static const char *dtype_name(uint32_t t, char *buf, size_t n)
{
    const char *name = sim_dtype_name(t);
    size_t i = 0;
    for (; name[i] != '\0' && i + 1 < n; i++)
        buf[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 'a' + 'A' : name[i]);
    buf[i] = '\0';
    return buf;
}

/* "(1,3,224,224)" into out; "\" if t is NULL. */
static void shape_str(const sim_tensor *t, char *out, size_t n)
{
    if (t == NULL) {
        snprintf(out, n, "\\");
        return;
    }
    size_t l = (size_t)snprintf(out, n, "(");
    for (uint32_t d = 0; d < t->n_dims && l < n; d++)
        l += (size_t)snprintf(out + l, n - l, d ? ",%lld" : "%lld", (long long)t->dims[d]);
    if (l < n)
        snprintf(out + l, n - l, ")");
}

/* Joins shapes with ',' and shortens to width-1 characters with "..." like the vendor. */
static void shapes_cell(const sim_graph *g, const uint32_t *idx, uint32_t n, char *out, size_t width)
{
    char buf[1024];
    size_t l = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < n && l < sizeof(buf) - 1; i++) {
        if (idx[i] == SIM_NONE)
            continue;
        char one[160];
        shape_str(&g->tensors[idx[i]], one, sizeof(one));
        l += (size_t)snprintf(buf + l, sizeof(buf) - l, "%s%s", l ? "," : "", one);
    }
    if (l == 0)
        snprintf(buf, sizeof(buf), "\\");
    size_t max = width - 1;
    if (strlen(buf) > max) {
        buf[max - 3] = 0;
        strcat(buf, "...");
    }
    snprintf(out, width, "%s", buf);
}

typedef struct rank_row {
    char type[64];
    uint32_t calls;
    int64_t cpu, npu;
} rank_row;

static int rank_cmp(const void *a, const void *b)
{
    const rank_row *x = a, *y = b;
    int64_t tx = x->cpu + x->npu, ty = y->cpu + y->npu;
    if (tx != ty)
        return tx > ty ? -1 : 1;
    return strcmp(x->type, y->type);
}

static void rank_add(rank_row *rows, uint32_t *n, const char *type, int cpu, int64_t us)
{
    for (uint32_t i = 0; i < *n; i++)
        if (strcmp(rows[i].type, type) == 0) {
            rows[i].calls++;
            (cpu ? &rows[i].cpu : &rows[i].npu)[0] += us;
            return;
        }
    rank_row *r = &rows[(*n)++];
    snprintf(r->type, sizeof(r->type), "%s", type);
    r->calls = 1;
    r->cpu = cpu ? us : 0;
    r->npu = cpu ? 0 : us;
}

/* Column widths of the vendor's layer table; a cell keeps at least one blank before the next column. */
static const int k_widths[11] = {5, 19, 9, 7, 41, 23, 25, 13, 21, 21, 13};

static void table_row(sbuf *s, const char *cells[12])
{
    for (int i = 0; i < 11; i++)
        sb_printf(s, "%-*.*s", k_widths[i], k_widths[i] - 1, cells[i]);
    sb_printf(s, "%s\n", cells[11]);
}

#define ROW(s, ...) do { const char *cells_[12] = {__VA_ARGS__}; table_row((s), cells_); } while (0)

/* "100.0%/0.0%/0.0%" (on core 0) or "33.3%/33.3%/33.3%" (split over the active cores); "0.0%/..." if idle. */
static void workload(const sim_platform *pf, uint32_t active, char *out, size_t n)
{
    size_t l = 0;
    for (uint32_t i = 0; i < pf->cores && l < n; i++)
        l += (size_t)snprintf(out + l, n - l, "%s%.1f%%", i ? "/" : "", i < active ? 100.0 / active : 0.0);
}

char *sim_perf_detail_text(const sim_ctx *c)
{
    const sim_model *m = c->m;
    const sim_graph *g = &m->g;
    const sim_platform *pf = m->platform;
    const uint32_t cores = sim_cost_cores(pf, c->core_mask);
    sbuf s = {0};
    const size_t width = 222;
    uint32_t n_rows = m->n_in + g->n_ops + m->n_out;
    rank_row *rank = calloc(n_rows + 1, sizeof(rank_row));
    if (rank == NULL)
        return NULL;
    uint32_t n_rank = 0;
    sb_rule(&s, width);
    const char *title = "Network Layer Information Table";
    sb_printf(&s, "%*s%s%*s\n", 74, "", title, (int)(width - 74 - strlen(title)), "");
    sb_rule(&s, width);
    ROW(&s, "ID", "OpType", "DataType", "Target", "InputShape", "OutputShape",
              "Cycles(DDR/NPU/Total)", "Time(us)", "MacUsage(%)", "WorkLoad(0/1/2)", "RW(KB)", "FullName");
    sb_rule(&s, width);
    uint32_t id = 1;
    int64_t total_us = 0;
    double total_kb = 0.0;
    char idb[16], shp_in[64], shp_out[64], cyc[64], tm[32], mac[64], wl[64], rw[32], full[320], dt_cell[16];
    for (uint32_t i = 0; i < m->n_in; i++) {
        const sim_tensor *t = &g->tensors[m->ins[i].tensor];
        uint64_t bytes = (uint64_t)t->n_elems * sim_dtype_size(t->dtype);
        int64_t us = llround(sim_cost_io_us(pf, bytes));
        uint32_t one = m->ins[i].tensor;
        snprintf(idb, sizeof(idb), "%u", id++);
        shapes_cell(g, &one, 1, shp_out, 23);
        snprintf(cyc, sizeof(cyc), "0/0/0");
        snprintf(tm, sizeof(tm), "%lld", (long long)us);
        workload(pf, 0, wl, sizeof(wl));
        snprintf(rw, sizeof(rw), "%.0f", (double)bytes / 1024.0);
        snprintf(full, sizeof(full), "InputOperator:%s", t->name);
        sim_one_line(full);
        ROW(&s, idb, "InputOperator", dtype_name(t->dtype, dt_cell, sizeof dt_cell), "CPU", "\\", shp_out, cyc, tm, "\\",
                  wl, rw, full);
        total_us += us;
        total_kb += (double)bytes / 1024.0;
        rank_add(rank, &n_rank, "InputOperator", 1, us);
    }
    for (uint32_t k = 0; k < g->n_ops; k++) {
        const sim_op *op = &g->ops[k];
        const sim_layer_static *L = &m->layers[k];
        const uint32_t split = sim_cost_splits(L) ? cores : 1;
        const double est = sim_cost_layer_us(pf, L, cores);
        int64_t us = llround(est);
        uint64_t total_cyc = (uint64_t)llround(est * pf->npu_hz / 1e6);
        uint64_t npu_cyc = (uint64_t)llround(L->compute_s / split * pf->npu_hz);
        uint64_t ddr_cyc = (uint64_t)llround(L->memory_s * pf->npu_hz);
        uint32_t dt = g->tensors[op->outputs[0]].dtype;
        double peak = pf->peak_int8_macs_per_cycle * (dt == SIM_I8 ? 1.0 : pf->fp16_ratio);
        /* MAC array usage of each active core: its share of the MACs over the layer's cycles */
        double usage = total_cyc && L->cost_class != RKNNLINK_COST_FREE
                           ? 100.0 * (double)L->macs / split / ((double)total_cyc * peak) : 0.0;
        if (usage > 100.0)
            usage = 100.0;
        snprintf(idb, sizeof(idb), "%u", id++);
        shapes_cell(g, op->inputs, op->n_inputs, shp_in, 41);
        shapes_cell(g, op->outputs, op->n_outputs, shp_out, 23);
        snprintf(cyc, sizeof(cyc), "%llu/%llu/%llu", (unsigned long long)ddr_cyc, (unsigned long long)npu_cyc,
                 (unsigned long long)total_cyc);
        snprintf(tm, sizeof(tm), "%lld", (long long)us);
        size_t l = 0;
        for (uint32_t i = 0; i < pf->cores && l < sizeof(mac); i++)
            l += (size_t)snprintf(mac + l, sizeof(mac) - l, "%s%.2f", i ? "/" : "", i < split ? usage : 0.0);
        workload(pf, split, wl, sizeof(wl));
        snprintf(rw, sizeof(rw), "%.0f", (double)L->bytes_rw / 1024.0);
        snprintf(full, sizeof(full), "%s:%s", m->defs[k]->onnx_name ? m->defs[k]->onnx_name : "Op", op->name);
        sim_one_line(full);
        ROW(&s, idb, L->npu_type, dtype_name(dt, dt_cell, sizeof dt_cell), "NPU", shp_in,
                  shp_out, cyc, tm, mac, wl, rw, full);
        total_us += us;
        total_kb += (double)L->bytes_rw / 1024.0;
        rank_add(rank, &n_rank, L->npu_type, 0, us);
    }
    for (uint32_t i = 0; i < m->n_out; i++) {
        const sim_tensor *t = &g->tensors[m->outs[i].tensor];
        uint64_t bytes = (uint64_t)t->n_elems * sim_dtype_size(t->dtype);
        int64_t us = llround(sim_cost_io_us(pf, bytes));
        uint32_t one = m->outs[i].tensor;
        snprintf(idb, sizeof(idb), "%u", id++);
        shapes_cell(g, &one, 1, shp_in, 41);
        snprintf(tm, sizeof(tm), "%lld", (long long)us);
        workload(pf, 0, wl, sizeof(wl));
        snprintf(rw, sizeof(rw), "%.0f", (double)bytes / 1024.0);
        snprintf(full, sizeof(full), "OutputOperator:%s", t->name);
        sim_one_line(full);
        ROW(&s, idb, "OutputOperator", dtype_name(t->dtype, dt_cell, sizeof dt_cell), "CPU", shp_in, "\\", "0/0/0", tm, "\\",
                  wl, rw, full);
        total_us += us;
        total_kb += (double)bytes / 1024.0;
        rank_add(rank, &n_rank, "OutputOperator", 1, us);
    }
    sb_rule(&s, width);
    sb_printf(&s, "Total Operator Elapsed Per Frame Time(us): %lld\n", (long long)total_us);
    sb_printf(&s, "Total Memory Read/Write Per Frame Size(KB): %.2f\n", total_kb);
    sb_rule(&s, width);
    sb_printf(&s, "\n");
    sb_rule(&s, 107);
    const char *t2 = "Operator Time Consuming Ranking Table";
    sb_printf(&s, "%*s%s\n", 35, "", t2);
    sb_rule(&s, 107);
    sb_printf(&s, "%-24s%-12s%-13s%-13s%-13s%-16s%s\n", "OpType", "CallNumber", "CPUTime(us)", "GPUTime(us)",
              "NPUTime(us)", "TotalTime(us)", "TimeRatio(%)");
    sb_rule(&s, 107);
    qsort(rank, n_rank, sizeof(rank_row), rank_cmp);
    int64_t cpu_sum = 0, npu_sum = 0;
    for (uint32_t i = 0; i < n_rank; i++) {
        int64_t tot = rank[i].cpu + rank[i].npu;
        char calls[16], cpu[24], gpu[8] = "0", npu[24], totb[24], ratio[24];
        snprintf(calls, sizeof(calls), "%u", rank[i].calls);
        snprintf(cpu, sizeof(cpu), "%lld", (long long)rank[i].cpu);
        snprintf(npu, sizeof(npu), "%lld", (long long)rank[i].npu);
        snprintf(totb, sizeof(totb), "%lld", (long long)tot);
        snprintf(ratio, sizeof(ratio), "%.2f%%", total_us ? 100.0 * (double)tot / (double)total_us : 0.0);
        sb_printf(&s, "%-24.23s%-12s%-13s%-13s%-13s%-16s%s\n", rank[i].type, calls, cpu, gpu, npu, totb, ratio);
        cpu_sum += rank[i].cpu;
        npu_sum += rank[i].npu;
    }
    char cpu[24], npu[24], totb[24];
    snprintf(cpu, sizeof(cpu), "%lld", (long long)cpu_sum);
    snprintf(npu, sizeof(npu), "%lld", (long long)npu_sum);
    snprintf(totb, sizeof(totb), "%lld", (long long)(cpu_sum + npu_sum));
    sb_printf(&s, "%-24s%-12s%-13s%-13s%-13s%-16s\n", "Total", "", cpu, "0", npu, totb);
    sb_rule(&s, 107);
    free(rank);
    if (s.oom) {
        free(s.p);
        return NULL;
    }
    return s.p;
}
