/* Small shared helpers of the simulator core: model pool, kernel scratch, logging, errors, CRC-32. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim_core.h"

#define POOL_ALIGN 64u

void *sim_pool_alloc(sim_pool *p, size_t bytes)
{
    size_t need = (bytes + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
    if (need < bytes)
        return NULL;
    sim_pool_block *b = p->head;
    if (b == NULL || b->size - b->used < need) {
        size_t cap = need > (size_t)(256u << 10) ? need : (size_t)(256u << 10);
        size_t hdr = (sizeof(sim_pool_block) + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
        if (cap > SIZE_MAX - hdr)
            return NULL;
        void *mem = NULL;
        if (posix_memalign(&mem, POOL_ALIGN, hdr + cap) != 0)
            return NULL;
        sim_pool_block *nb = mem;
        nb->next = p->head;
        nb->size = cap;
        nb->used = 0;
        p->head = nb;
        b = nb;
    }
    size_t hdr = (sizeof(sim_pool_block) + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
    unsigned char *r = (unsigned char *)b + hdr + b->used;
    b->used += need;
    memset(r, 0, need);
    return r;
}

void sim_pool_free(sim_pool *p)
{
    sim_pool_block *b = p->head;
    while (b) {
        sim_pool_block *n = b->next;
        free(b);
        b = n;
    }
    p->head = NULL;
}

/* ---- kernel scratch ---- */
static void *scratch_get(sim_scratch *self, size_t bytes)
{
    sim_scratch_impl *s = (sim_scratch_impl *)self;
    size_t need = (bytes + 63u) & ~(size_t)63u;
    if (need < bytes || need == 0)
        need = 64;
    for (uint32_t i = 0; i < s->n_blocks; i++) {
        if (s->sizes[i] - s->used[i] >= need) {
            void *r = (unsigned char *)s->blocks[i] + s->used[i];
            s->used[i] += need;
            return r;
        }
    }
    if (s->n_blocks >= 16)
        return NULL;
    size_t cap = need < (size_t)(64u << 10) ? (size_t)(64u << 10) : need;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, cap) != 0)
        return NULL;
    s->blocks[s->n_blocks] = mem;
    s->sizes[s->n_blocks] = cap;
    s->used[s->n_blocks] = need;
    s->n_blocks++;
    return mem;
}

void sim_scratch_init(sim_scratch_impl *s)
{
    memset(s, 0, sizeof(*s));
    s->api.get = scratch_get;
}

/* Between calls, merge several blocks into one big enough for the previous call's total use. */
void sim_scratch_reset(sim_scratch_impl *s)
{
    if (s->n_blocks > 1) {
        size_t total = 0;
        for (uint32_t i = 0; i < s->n_blocks; i++) {
            total += s->sizes[i];
            free(s->blocks[i]);
        }
        s->n_blocks = 0;
        void *mem = NULL;
        if (posix_memalign(&mem, 64, total) == 0) {
            s->blocks[0] = mem;
            s->sizes[0] = total;
            s->n_blocks = 1;
        }
    }
    for (uint32_t i = 0; i < s->n_blocks; i++)
        s->used[i] = 0;
}

void sim_scratch_free(sim_scratch_impl *s)
{
    for (uint32_t i = 0; i < s->n_blocks; i++)
        free(s->blocks[i]);
    s->n_blocks = 0;
}

/* ---- data types ---- */
size_t sim_dtype_size(uint32_t dtype)
{
    switch (dtype) {
    case SIM_F32: return 4;
    case SIM_F16: return 2;
    case SIM_I8: return 1;
    case SIM_U8: return 1;
    case SIM_I16: return 2;
    case SIM_I32: return 4;
    case SIM_I64: return 8;
    case SIM_BOOL: return 1;
    default: return 0;
    }
}

size_t sim_work_elem_size(uint32_t dtype)
{
    return dtype == SIM_I8 ? 1 : 4;
}

/* ---- logging: vendor-like "E RKNN: [hh:mm:ss.mmm] text" on stderr, filtered by RKNN_LOG_LEVEL ---- */
static int log_level(void)
{
    const char *e = getenv("RKNN_LOG_LEVEL");
    if (e == NULL || *e == 0)
        return 0;
    char *end = NULL;
    long v = strtol(e, &end, 10);
    return (end == e) ? 0 : (int)(v < -1 ? -1 : v > 9 ? 9 : v);
}

void sim_log(int level, const char *fmt, ...)
{
    if (level > log_level())
        return;
    static const char tags[] = "EWID";
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    time_t sec = ts.tv_sec;
    localtime_r(&sec, &tm);
    fprintf(stderr, "%c RKNN: [%02d:%02d:%02d.%03ld] %s\n", tags[level < 0 ? 0 : (level > 3 ? 3 : level)],
            tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, msg);
}

/* Error texts are one line: control characters (e.g. a newline inside a hostile tensor name) become '?'. */
void sim_one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7F)
            *s = '?';
}

static _Thread_local char g_init_error[SIM_ERR_LEN];

void sim_set_init_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_init_error, sizeof(g_init_error), fmt, ap);
    va_end(ap);
    sim_one_line(g_init_error);
}

RKNN_EXPORT const char *rknnlink_sim_init_error(void)
{
    return g_init_error;
}

void sim_ctx_error(sim_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
    va_end(ap);
    sim_one_line(c->last_error);
    sim_log(SIM_LOG_ERROR, "%s", c->last_error);
}

/* CRC-32 (IEEE 802.3, reflected, as zlib computes it); the table is built on the stack per call. */
uint32_t sim_crc32(const unsigned char *p, size_t n)
{
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}
