/* Test harness implementation (see harness.h). */
#include "harness.h"

int tg_failures = 0;
int tg_checks = 0;
uint64_t tg_rng = 0x9E3779B97F4A7C15ull;
sim_par *tg_par = NULL;

float tg_randf(void)
{
    tg_rng ^= tg_rng << 13;
    tg_rng ^= tg_rng >> 7;
    tg_rng ^= tg_rng << 17;
    return (float)((tg_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void *scratch_get(sim_scratch *self, size_t bytes)
{
    tg_scratch *s = (tg_scratch *)self;
    if (s->n >= 64) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) return NULL;
    memset(p, 0xCD, bytes); /* poison: kernels must not rely on zeroed scratch */
    s->blocks[s->n++] = p;
    return p;
}

void tg_init(tgraph *tg, uint32_t type)
{
    memset(tg, 0, sizeof *tg);
    tg->g.tensors = tg->t;
    tg->g.ops = &tg->op;
    tg->g.n_ops = 1;
    tg->op.type = type;
    tg->op.name = "node";
    tg->op.inputs = tg->ins;
    tg->op.outputs = tg->outs;
    tg->op.attrs = tg->attrs;
}

void tg_free(tgraph *tg)
{
    const sim_op_def *def = sim_op_find(tg->op.type);
    if (def && def->release && tg->op.priv) def->release(&tg->op);
    for (uint32_t i = 0; i < tg->g.n_tensors; i++) {
        free(tg->f[i]);
        free(tg->q[i]);
        free(tg->raw[i]);
        free(tg->qs[i]);
        free(tg->qz[i]);
    }
}

int tg_tensor(tgraph *tg, uint32_t dtype, uint32_t kind, int nd, const int64_t *dims, float amp)
{
    int i = (int)tg->g.n_tensors++;
    sim_tensor *t = &tg->t[i];
    t->name = "t";
    t->dtype = dtype;
    t->kind = kind;
    t->n_dims = (uint32_t)nd;
    t->n_elems = 1;
    t->q_axis = -1;
    for (int d = 0; d < nd; d++) {
        t->dims[d] = dims[d];
        t->n_elems *= dims[d];
    }
    size_t n = (size_t)(t->n_elems > 0 ? t->n_elems : 1);
    tg->f[i] = calloc(n, sizeof(float));
    for (size_t e = 0; e < (size_t)t->n_elems; e++) tg->f[i][e] = amp * tg_randf();
    if (dtype == SIM_F16)
        for (size_t e = 0; e < (size_t)t->n_elems; e++) tg->f[i][e] = sim_round_f16(tg->f[i][e]);
    if (kind == SIM_T_CONST) {
        t->fdata = tg->f[i];
        t->data = tg->f[i];
    }
    return i;
}

void tg_quant(tgraph *tg, int ti, float scale, int32_t zp)
{
    sim_tensor *t = &tg->t[ti];
    t->dtype = SIM_I8;
    t->qnt = SIM_Q_AFFINE;
    t->scale = scale;
    t->zp = zp;
    size_t n = (size_t)(t->n_elems > 0 ? t->n_elems : 1);
    free(tg->q[ti]);
    tg->q[ti] = calloc(n, 1);
    for (size_t e = 0; e < (size_t)t->n_elems; e++) {
        tg->q[ti][e] = sim_quant_i8(tg->f[ti][e], scale, zp);
        tg->f[ti][e] = scale * (float)(tg->q[ti][e] - zp);
    }
    if (t->kind == SIM_T_CONST) t->data = tg->q[ti];
}

void tg_input(tgraph *tg, int ti) { tg->ins[tg->op.n_inputs++] = (uint32_t)ti; }
void tg_output(tgraph *tg, int ti) { tg->outs[tg->op.n_outputs++] = (uint32_t)ti; }
void tg_absent_input(tgraph *tg) { tg->ins[tg->op.n_inputs++] = SIM_NONE; }

static sim_attr *new_attr(tgraph *tg, const char *name)
{
    int i = (int)tg->op.n_attrs++;
    snprintf(tg->names[i], sizeof tg->names[i], "%s", name);
    sim_attr *a = &tg->attrs[i];
    a->name = tg->names[i];
    a->ints = tg->ints[i];
    a->floats = tg->floats[i];
    return a;
}

void tg_attr_i(tgraph *tg, const char *name, int64_t v)
{
    sim_attr *a = new_attr(tg, name);
    a->type = SIM_A_INT;
    a->count = 1;
    tg->ints[tg->op.n_attrs - 1][0] = v;
}

void tg_attr_f(tgraph *tg, const char *name, float v)
{
    sim_attr *a = new_attr(tg, name);
    a->type = SIM_A_FLOAT;
    a->count = 1;
    tg->floats[tg->op.n_attrs - 1][0] = v;
}

void tg_attr_is(tgraph *tg, const char *name, int n, const int64_t *v)
{
    sim_attr *a = new_attr(tg, name);
    a->type = SIM_A_INTS;
    a->count = (uint32_t)n;
    memcpy(tg->ints[tg->op.n_attrs - 1], v, (size_t)n * sizeof(int64_t));
}

int tg_prepare_only(tgraph *tg, char *err, size_t err_len)
{
    const sim_op_def *def = sim_op_find(tg->op.type);
    if (!def) return -100;
    if (tg->op.priv && def->release) def->release(&tg->op); /* re-preparing: drop the old state */
    tg->op.priv = NULL;
    err[0] = '\0';
    return def->prepare(&tg->g, &tg->op, err, err_len);
}

int tg_run(tgraph *tg, int use_i8, char *err, size_t err_len)
{
    const sim_op_def *def = sim_op_find(tg->op.type);
    int rc = tg_prepare_only(tg, err, err_len);
    if (rc) return rc;
    sim_kernel_call call;
    memset(&call, 0, sizeof call);
    tg_scratch s;
    memset(&s, 0, sizeof s);
    s.api.get = scratch_get;
    call.graph = &tg->g;
    call.op = &tg->op;
    call.scratch = &s.api;
    call.par = tg_par;
    for (uint32_t i = 0; i < tg->op.n_inputs; i++) {
        uint32_t ti = tg->ins[i];
        if (ti == SIM_NONE) continue;
        call.in[i].t = &tg->t[ti];
        if (tg->t[ti].kind == SIM_T_CONST) {
            call.in[i].f32 = tg->f[ti];
            call.in[i].i8 = tg->t[ti].dtype == SIM_I8 ? tg->q[ti] : NULL;
        } else if (use_i8) {
            call.in[i].i8 = tg->q[ti];
        } else {
            call.in[i].f32 = tg->f[ti];
        }
    }
    for (uint32_t i = 0; i < tg->op.n_outputs; i++) {
        uint32_t ti = tg->outs[i];
        call.out[i].t = &tg->t[ti];
        if (use_i8) {
            if (!tg->q[ti]) tg->q[ti] = calloc((size_t)(tg->t[ti].n_elems + 1), 1);
            call.out[i].i8 = tg->q[ti];
        } else {
            call.out[i].f32 = tg->f[ti];
        }
    }
    if (use_i8 && !def->run_i8) return -101;
    rc = use_i8 ? def->run_i8(&call) : def->run_f32(&call);
    for (int i = 0; i < s.n; i++) free(s.blocks[i]);
    if (use_i8 && rc == 0)
        for (uint32_t i = 0; i < tg->op.n_outputs; i++) {
            sim_tensor *t = &tg->t[tg->outs[i]];
            for (int64_t e = 0; e < t->n_elems; e++) tg->f[tg->outs[i]][e] = t->scale * (float)(tg->q[tg->outs[i]][e] - t->zp);
        }
    return rc;
}

void tg_check_close(const char *what, const float *got, const float *want, int64_t n, float atol, float rtol)
{
    tg_checks++;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(got[i] - want[i]);
        int both_nan = got[i] != got[i] && want[i] != want[i];
        if (both_nan || (isinf(got[i]) && got[i] == want[i])) continue;
        if (!(d <= atol + rtol * fabsf(want[i]))) {
            printf("FAIL %s: element %lld got %.8g want %.8g\n", what, (long long)i, (double)got[i], (double)want[i]);
            tg_failures++;
            return;
        }
    }
}

void tg_check_true(const char *what, int cond)
{
    tg_checks++;
    if (!cond) {
        printf("FAIL %s\n", what);
        tg_failures++;
    }
}

double tg_cosine(const float *a, const float *b, int64_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return (aa == 0 && bb == 0) ? 1.0 : ab / sqrt(aa * bb + 1e-30);
}

static void rev_run(sim_par *self, sim_par_fn fn, void *arg, int64_t n)
{
    (void)self;
    for (int64_t i = n - 1; i >= 0; i--) fn(arg, i, i + 1, (int)(i % 3));
}

void tg_check_i8_vs_float(tgraph *tg, int y, const char *what)
{
    char err[256], buf[400];
    sim_tensor *yt = &tg->t[y];
    size_t n = (size_t)yt->n_elems;
    int8_t *want = malloc(n + 1);
    sim_par *saved = tg_par, rev = {rev_run, 3};
    tg_par = NULL;
    int rc = tg_run(tg, 0, err, sizeof err);
    snprintf(buf, sizeof buf, "%s: float path rc=%d %s", what, rc, err);
    tg_check_true(buf, rc == 0 && want != NULL);
    if (rc == 0 && want) {
        sim_quant_array(tg->f[y], want, n, sim_t_scale(yt), sim_t_zp(yt));
        for (int pass = 0; pass < 2; pass++) {
            tg_par = pass ? &rev : NULL;
            rc = tg_run(tg, 1, err, sizeof err);
            snprintf(buf, sizeof buf, "%s: int8 path %s rc=%d %s", what, pass ? "on 3 threads" : "inline", rc, err);
            tg_check_true(buf, rc == 0 && memcmp(tg->q[y], want, n) == 0);
        }
    }
    tg_par = saved;
    free(want);
}
