/*
 * Facts about a prepared graph's operators that both the executor and the kernels' prepare functions
 * need (which path an operator runs on) and the words error messages use for them. Linked with the core
 * helpers (numeric.c, attrs.c, common.c) into the core-only sanitizer build and the kernel unit tests.
 */
#include <stdio.h>

#include "sim_graph.h"

int sim_op_int8_io(const sim_graph *g, const sim_op *op)
{
    for (uint32_t i = 0; i < op->n_inputs; i++) {
        uint32_t t = op->inputs[i];
        if (t != SIM_NONE && g->tensors[t].kind != SIM_T_CONST && g->tensors[t].dtype != SIM_I8) return 0;
    }
    for (uint32_t i = 0; i < op->n_outputs; i++)
        if (g->tensors[op->outputs[i]].dtype != SIM_I8) return 0;
    return 1;
}

const char *sim_dtype_name(uint32_t dtype)
{
    switch (dtype) {
    case SIM_F32: return "float32";
    case SIM_F16: return "float16";
    case SIM_I8: return "int8";
    case SIM_U8: return "uint8";
    case SIM_I16: return "int16";
    case SIM_I32: return "int32";
    case SIM_I64: return "int64";
    case SIM_BOOL: return "bool";
    default: return "unknown";
    }
}

const char *sim_op_inputs_str(const sim_graph *g, const sim_op *op, char *buf, size_t len)
{
    size_t used = 0;
    if (len) buf[0] = '\0';
    for (uint32_t i = 0; i < op->n_inputs && used < len; i++) {
        uint32_t t = op->inputs[i];
        const sim_tensor *ts = t == SIM_NONE ? NULL : &g->tensors[t];
        int w = snprintf(buf + used, len - used, "%s%s%s", i ? ", " : "", ts ? sim_dtype_name(ts->dtype) : "absent",
                         !ts ? "" : ts->kind == SIM_T_CONST ? " constant" : " activation");
        if (w < 0) break;
        used += (size_t)w;
    }
    return buf;
}
