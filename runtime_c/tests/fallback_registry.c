/*
 * TEST-ONLY stand-in for src/ops/registry.c, linked by runtime_c/Makefile only while the kernels'
 * registry does not exist yet. Naive float kernels for the few ops the core tests use (Add, Mul, Relu,
 * Reshape), plus an int8 Relu so the executor's int8 path is exercised.
 */
#include <string.h>

#include "sim_graph.h"

static int prep_ok(const sim_graph *g, sim_op *op, char *err, size_t n)
{
    if (op->n_inputs != 1 || op->n_outputs != 1 || op->inputs[0] == SIM_NONE ||
        g->tensors[op->inputs[0]].n_elems != g->tensors[op->outputs[0]].n_elems ||
        g->tensors[op->inputs[0]].kind == SIM_T_CONST) {
        strncpy(err, "needs one activation input and one output of the same size", n - 1);
        return -6;
    }
    return 0;
}

static int prep_binary(const sim_graph *g, sim_op *op, char *err, size_t n)
{
    if (op->n_inputs != 2 || op->n_outputs != 1 || op->inputs[0] == SIM_NONE || op->inputs[1] == SIM_NONE) {
        strncpy(err, "binary op needs two inputs and one output", n - 1);
        return -6;
    }
    int64_t no = g->tensors[op->outputs[0]].n_elems;
    for (int i = 0; i < 2; i++) {
        int64_t ni = g->tensors[op->inputs[i]].n_elems;
        if (ni != no && ni != 1) {
            strncpy(err, "fallback binary op supports equal shapes or scalars only", n - 1);
            return -6;
        }
    }
    return 0;
}

static int binary(sim_kernel_call *c, int mul)
{
    const sim_tensor *o = c->out[0].t;
    int64_t na = c->in[0].t->n_elems, nb = c->in[1].t->n_elems;
    for (int64_t i = 0; i < o->n_elems; i++) {
        float a = c->in[0].f32[na == 1 ? 0 : i], b = c->in[1].f32[nb == 1 ? 0 : i];
        c->out[0].f32[i] = sim_apply_act(c->op->act, c->op->act_p0, c->op->act_p1, mul ? a * b : a + b);
    }
    return 0;
}

static int run_add(sim_kernel_call *c) { return binary(c, 0); }
static int run_mul(sim_kernel_call *c) { return binary(c, 1); }

static int run_relu(sim_kernel_call *c)
{
    for (int64_t i = 0; i < c->out[0].t->n_elems; i++) {
        float x = c->in[0].f32[i];
        c->out[0].f32[i] = sim_apply_act(c->op->act, c->op->act_p0, c->op->act_p1, x > 0 ? x : 0);
    }
    return 0;
}

static int run_relu_i8(sim_kernel_call *c)
{
    const sim_tensor *ti = c->in[0].t, *to = c->out[0].t;
    for (int64_t i = 0; i < to->n_elems; i++) {
        float x = ti->scale * (float)(c->in[0].i8[i] - ti->zp);
        c->out[0].i8[i] = sim_quant_i8(x > 0 ? x : 0, to->scale, to->zp);
    }
    return 0;
}

static int run_copy(sim_kernel_call *c)
{
    memcpy(c->out[0].f32, c->in[0].f32, (size_t)c->out[0].t->n_elems * sizeof(float));
    return 0;
}

static const sim_op_def k_defs[] = {
    {SIM_OP_ADD, "Add", "Add", prep_binary, run_add, NULL, NULL, NULL},
    {SIM_OP_MUL, "Mul", "Mul", prep_binary, run_mul, NULL, NULL, NULL},
    {SIM_OP_RELU, "Relu", "Relu", prep_ok, run_relu, run_relu_i8, NULL, NULL},
    {SIM_OP_RESHAPE, "Reshape", "Reshape", prep_ok, run_copy, NULL, NULL, NULL},
};

const sim_op_def *sim_op_find(uint32_t type)
{
    for (size_t i = 0; i < sizeof(k_defs) / sizeof(k_defs[0]); i++)
        if (k_defs[i].type == type)
            return &k_defs[i];
    return NULL;
}
