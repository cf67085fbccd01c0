/*
 * A small JSON reader for the double: the vendor .rknn container ends with a JSON model description
 * (rknn-c-abi.md section 6), which is all the double needs to know about a model's inputs and outputs.
 * Parses into a flat node array owned by the caller; every read is bounded by the text's length.
 */
#ifndef VENDOR_DOUBLE_JSON_H
#define VENDOR_DOUBLE_JSON_H

#include <stddef.h>

enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

typedef struct {
    int type;
    int first_child;      /* -1 when none */
    int next;             /* next sibling, -1 when last */
    const char *key;      /* member name inside an object (raw, not unescaped), else NULL */
    size_t key_len;
    const char *str;      /* raw string contents (JSON_STRING) */
    size_t str_len;
    double number;        /* JSON_NUMBER, JSON_BOOL (0/1) */
} json_node;

typedef struct {
    json_node *nodes;
    int count;
    int capacity;
} json_doc;

/* Parse `text` (length `len`) into `doc` (nodes allocated here; free with json_free). 0 on success. */
int json_parse(json_doc *doc, const char *text, size_t len);
void json_free(json_doc *doc);

/* Member `key` of object node `obj`, or -1. */
int json_get(const json_doc *doc, int obj, const char *key);
/* Element `index` of array node `arr`, or -1. */
int json_at(const json_doc *doc, int arr, int index);
int json_length(const json_doc *doc, int arr);
/* Copy a string node into `out` (NUL-terminated, truncated to cap-1, simple escapes decoded). 0 on success. */
int json_copy_string(const json_doc *doc, int node, char *out, size_t cap);

#endif
