/* Test-only writer of rknnlink simulator models (docs/model-format.md v1.0). */
#ifndef RKNNLINK_TEST_MODEL_WRITER_H
#define RKNNLINK_TEST_MODEL_WRITER_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw mw;

mw *mw_new(const char *target, uint32_t build_mode);
void mw_free(mw *w);
void mw_custom_string(mw *w, const char *s);
/* kind: 0 intermediate, 1 const, 2 input, 3 output. qnt 0 none / 2 affine. */
uint32_t mw_tensor(mw *w, const char *name, uint32_t dtype, uint32_t n_dims, const uint32_t *dims, uint32_t kind,
                   uint32_t qnt, float scale, int32_t zp);
/* Constant with raw data (size bytes, must match). */
uint32_t mw_const(mw *w, const char *name, uint32_t dtype, uint32_t n_dims, const uint32_t *dims, const void *data,
                  size_t size, uint32_t qnt, float scale, int32_t zp);
void mw_attr_int(mw *w, const char *name, int64_t v);
void mw_attr_ints(mw *w, const char *name, const int64_t *v, uint32_t n);
void mw_attr_float(mw *w, const char *name, float v);
/* Adds an operator taking the attributes added since the previous operator. */
void mw_op(mw *w, uint32_t type, const char *name, uint32_t n_in, const uint32_t *ins, uint32_t n_out,
           const uint32_t *outs, uint32_t act, float p0, float p1);
void mw_io(mw *w, uint32_t tensor, uint32_t is_output, uint32_t reverse, uint32_t n_norm, const float *mean,
           const float *std, uint32_t layout);
/* Serialises; *size set; malloc'ed. */
uint8_t *mw_finish(mw *w, size_t *size, int with_crc);

#endif
