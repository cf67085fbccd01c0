/*
 * Attribute lookup for kernels. The builder has already resolved ONNX defaults that depend on the
 * opset, so kernels only need "value or default" access by name.
 */
#include <string.h>

#include "ops_common.h"

const sim_attr *sim_attr_get(const sim_op *op, const char *name)
{
    if (!op || !name || !op->attrs) return NULL;
    for (uint32_t i = 0; i < op->n_attrs; i++) {
        const sim_attr *a = &op->attrs[i];
        if (a->name && strcmp(a->name, name) == 0) return a;
    }
    return NULL;
}

int64_t sim_attr_int(const sim_op *op, const char *name, int64_t dflt)
{
    const sim_attr *a = sim_attr_get(op, name);
    if (!a || a->count < 1) return dflt;
    if ((a->type == SIM_A_INT || a->type == SIM_A_INTS) && a->ints) return a->ints[0];
    if ((a->type == SIM_A_FLOAT || a->type == SIM_A_FLOATS) && a->floats) return (int64_t)a->floats[0];
    return dflt;
}

float sim_attr_float(const sim_op *op, const char *name, float dflt)
{
    const sim_attr *a = sim_attr_get(op, name);
    if (!a || a->count < 1) return dflt;
    if ((a->type == SIM_A_FLOAT || a->type == SIM_A_FLOATS) && a->floats) return a->floats[0];
    if ((a->type == SIM_A_INT || a->type == SIM_A_INTS) && a->ints) return (float)a->ints[0];
    return dflt;
}

uint32_t sim_attr_ints(const sim_op *op, const char *name, int64_t *out, uint32_t max)
{
    const sim_attr *a = sim_attr_get(op, name);
    if (!a || a->count < 1) return 0;
    uint32_t n = a->count;
    if (a->type == SIM_A_INT || a->type == SIM_A_INTS) {
        if (!a->ints) return 0;
        for (uint32_t i = 0; i < n && i < max; i++) out[i] = a->ints[i];
        return n;
    }
    if (a->type == SIM_A_FLOAT || a->type == SIM_A_FLOATS) {
        if (!a->floats) return 0;
        for (uint32_t i = 0; i < n && i < max; i++) out[i] = (int64_t)a->floats[i];
        return n;
    }
    return 0;
}
