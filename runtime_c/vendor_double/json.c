/* Recursive-descent JSON reader (see json.h). Depth and node count are bounded. */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *p;
    const char *end;
    json_doc *doc;
} parser;

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

static int new_node(parser *ps, int type) {
    json_doc *doc = ps->doc;
    if (doc->count == doc->capacity) {
        int cap = doc->capacity ? doc->capacity * 2 : 64;
        if (cap > (1 << 22)) return -1;
        json_node *grown = realloc(doc->nodes, (size_t)cap * sizeof(*grown));
        if (!grown) return -1;
        doc->nodes = grown;
        doc->capacity = cap;
    }
    json_node *n = &doc->nodes[doc->count];
    memset(n, 0, sizeof(*n));
    n->type = type;
    n->first_child = -1;
    n->next = -1;
    return doc->count++;
}

/* Scan a string starting at the opening quote; sets start and len to its raw contents. */
static int scan_string(parser *ps, const char **start, size_t *len) {
    if (ps->p >= ps->end || *ps->p != '"') return -1;
    ps->p++;
    const char *s = ps->p;
    while (ps->p < ps->end && *ps->p != '"') {
        if (*ps->p == '\\') {
            if (ps->end - ps->p < 2) return -1;
            ps->p++;
        }
        ps->p++;
    }
    if (ps->p >= ps->end) return -1;
    *start = s;
    *len = (size_t)(ps->p - s);
    ps->p++;
    return 0;
}

static int parse_value(parser *ps, int depth);

static int parse_container(parser *ps, int depth, int is_object) {
    int self = new_node(ps, is_object ? JSON_OBJECT : JSON_ARRAY);
    if (self < 0) return -1;
    char close = is_object ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    int last = -1;
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return self;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        if (is_object) {
            skip_ws(ps);
            if (scan_string(ps, &key, &key_len) != 0) return -1;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return -1;
            ps->p++;
        }
        int child = parse_value(ps, depth + 1);
        if (child < 0) return -1;
        ps->doc->nodes[child].key = key;
        ps->doc->nodes[child].key_len = key_len;
        if (last < 0) ps->doc->nodes[self].first_child = child;
        else ps->doc->nodes[last].next = child;
        last = child;
        skip_ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            return self;
        }
        return -1;
    }
}

static int parse_literal(parser *ps, const char *word, int type, double value) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return -1;
    ps->p += n;
    int self = new_node(ps, type);
    if (self >= 0) ps->doc->nodes[self].number = value;
    return self;
}

static int parse_number(parser *ps) {
    char buf[64];
    size_t n = 0;
    while (ps->p < ps->end && n + 1 < sizeof(buf) && strchr("+-0123456789.eE", *ps->p)) buf[n++] = *ps->p++;
    if (n == 0) return -1;
    buf[n] = '\0';
    char *stop = NULL;
    double value = strtod(buf, &stop);
    if (stop != buf + n) return -1;
    int self = new_node(ps, JSON_NUMBER);
    if (self >= 0) ps->doc->nodes[self].number = value;
    return self;
}

static int parse_value(parser *ps, int depth) {
    if (depth > JSON_MAX_DEPTH) return -1;
    skip_ws(ps);
    if (ps->p >= ps->end) return -1;
    switch (*ps->p) {
    case '{': return parse_container(ps, depth, 1);
    case '[': return parse_container(ps, depth, 0);
    case '"': {
        const char *s;
        size_t len;
        if (scan_string(ps, &s, &len) != 0) return -1;
        int self = new_node(ps, JSON_STRING);
        if (self >= 0) {
            ps->doc->nodes[self].str = s;
            ps->doc->nodes[self].str_len = len;
        }
        return self;
    }
    case 't': return parse_literal(ps, "true", JSON_BOOL, 1);
    case 'f': return parse_literal(ps, "false", JSON_BOOL, 0);
    case 'n': return parse_literal(ps, "null", JSON_NULL, 0);
    default: return parse_number(ps);
    }
}

int json_parse(json_doc *doc, const char *text, size_t len) {
    memset(doc, 0, sizeof(*doc));
    parser ps = {text, text + len, doc};
    int root = parse_value(&ps, 0);
    skip_ws(&ps);
    if (root != 0 || ps.p != ps.end) {
        json_free(doc);
        return -1;
    }
    return 0;
}

void json_free(json_doc *doc) {
    free(doc->nodes);
    memset(doc, 0, sizeof(*doc));
}

int json_get(const json_doc *doc, int obj, const char *key) {
    if (obj < 0 || obj >= doc->count || doc->nodes[obj].type != JSON_OBJECT) return -1;
    size_t n = strlen(key);
    for (int c = doc->nodes[obj].first_child; c >= 0; c = doc->nodes[c].next) {
        if (doc->nodes[c].key_len == n && memcmp(doc->nodes[c].key, key, n) == 0) return c;
    }
    return -1;
}

int json_at(const json_doc *doc, int arr, int index) {
    if (arr < 0 || arr >= doc->count || doc->nodes[arr].type != JSON_ARRAY) return -1;
    int i = 0;
    for (int c = doc->nodes[arr].first_child; c >= 0; c = doc->nodes[c].next, i++) {
        if (i == index) return c;
    }
    return -1;
}

int json_length(const json_doc *doc, int arr) {
    if (arr < 0 || arr >= doc->count || doc->nodes[arr].type != JSON_ARRAY) return 0;
    int i = 0;
    for (int c = doc->nodes[arr].first_child; c >= 0; c = doc->nodes[c].next) i++;
    return i;
}

int json_copy_string(const json_doc *doc, int node, char *out, size_t cap) {
    if (cap == 0 || node < 0 || node >= doc->count || doc->nodes[node].type != JSON_STRING) return -1;
    const char *s = doc->nodes[node].str;
    size_t len = doc->nodes[node].str_len, o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < len) {
            c = s[++i];
            if (c == 'n') c = '\n';
            else if (c == 't') c = '\t';
            else if (c == 'u') { /* keep \uXXXX out of names: replaced by '?' */
                i += (len - i > 4) ? 4 : len - i - 1;
                c = '?';
            }
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}
