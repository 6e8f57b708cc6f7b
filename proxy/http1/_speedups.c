/* proxy.http1._speedups: the request path's hottest byte loops, in C.

   Part of the compiled core (proxy/compiled: built by `python -m proxy.compiled build`,
   loaded only while current). Each function here has a pure-Python twin that defines what
   it does and runs when the core is interpreted:

     split_fields      <-> proxy.http1.grammar.split_fields_py
     request_line      <-> proxy.http1.grammar.request_line_py
     status_line       <-> proxy.http1.grammar.status_line_py
     valid_host        <-> proxy.http1.grammar.valid_host_py
     name_index        <-> proxy.http1.grammar.name_index_py
     strip_fields      <-> proxy.http1.render.strip_fields_py
     render_request    <-> proxy.http1.render.render_request_py
     render_response   <-> proxy.http1.render.render_response_py
     forward_request   <-> proxy.http1.render.forward_request_head_py
     forward_response  <-> proxy.http1.render.forward_response_head_py
     block_end         <-> proxy.http1.grammar.block_end_py
     request_head      <-> proxy.http1.request.request_head_py
     response_head     <-> proxy.http1.response.response_head_py
     hex_id            <-> proxy.http1.render.hex_id_py
     random_hex        (no twin: the tracer's Random makes ids when interpreted)
     trace_names       <-> proxy.tracing.context.trace_names_py
     traceparent       <-> proxy.tracing.context.traceparent_py
     parse_traceparent <-> proxy.tracing.context.parse_traceparent_py
     relay_response    <-> the event path: ResponseParser, then forward.response_head

   tests/proxy/http1/test_speedups.py feeds both the same generated inputs and requires the
   same result; the framing test matrix runs on both cores in CI. A function that meets an
   input it does not handle exactly (a part that is not bytes, an id out of range) answers
   None or -2 and its caller asks the twin. Why C: counted with callgrind
   (bench.instructions, docs/performance.md), these were about half of a compiled proxy's
   instructions per request: the regex engine, match objects, bytes formatting and rich
   comparisons cost more than the bytes they look at.

   Every loop is bounded by the buffer's end; nothing is written outside an object this
   file allocated with the size it computed first. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

/* RFC 9110 5.6.2: tchar. */
static unsigned char TCHAR[256];
/* RFC 9110 5.5: field-value octets: HTAB, SP, VCHAR, obs-text (no CTL, no DEL). */
static unsigned char FVCHAR[256];
/* The value of a lower-case hex digit, -1 for any other byte. */
static signed char HEXV[256];

static void
init_tables(void)
{
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) TCHAR[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) TCHAR[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) TCHAR[c] = 1;
    for (const char *p = extra; *p; p++) TCHAR[(unsigned char)*p] = 1;
    memset(HEXV, -1, sizeof HEXV);
    for (int c = '0'; c <= '9'; c++) HEXV[c] = (signed char)(c - '0');
    for (int c = 'a'; c <= 'f'; c++) HEXV[c] = (signed char)(c - 'a' + 10);
    FVCHAR['\t'] = 1;
    for (int c = 0x20; c <= 0x7e; c++) FVCHAR[c] = 1;
    for (int c = 0x80; c <= 0xff; c++) FVCHAR[c] = 1;
}

/* The name in lower case: the same object when it has no upper-case letter. */
static PyObject *
lowered(PyObject *name)
{
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(name);
    Py_ssize_t n = PyBytes_GET_SIZE(name), i = 0;
    while (i < n && !(s[i] >= 'A' && s[i] <= 'Z')) i++;
    if (i == n) {
        Py_INCREF(name);
        return name;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) return NULL;
    unsigned char *d = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t j = 0; j < n; j++) {
        unsigned char c = s[j];
        d[j] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    return out;
}

/* Field names repeat from request to request (Host, Content-Length, the same few dozen):
   a small direct-mapped cache hands out the same name object and its lowered twin, so a
   field costs one allocation fewer, or two, and the lowered name keeps its hash between
   requests (the set lookups that filter fields hash it once, not per request). Bounded:
   CACHED_NAME_SLOTS entries of at most CACHED_NAME_MAX bytes; a collision replaces the slot.

   Whole fields repeat too (Server: nginx, Content-Type: text/html, Accept-Ranges): a slot
   also keeps the last (name, value) pair seen under its name, and split_fields hands the
   same tuple out when the next value is equal, saving a bytes object and a tuple. Only
   values of at most CACHED_VALUE_MAX bytes, and never those of the fields that carry
   credentials (Authorization, Proxy-Authorization, Cookie, Set-Cookie): no secret
   outlives its request in the cache. */
#define CACHED_NAME_SLOTS 256
#define CACHED_NAME_MAX 48
#define CACHED_VALUE_MAX 64
static struct {
    PyObject *name;
    PyObject *low;
    PyObject *pair; /* the last (name, value) under this name, or NULL */
    int secret;     /* a credential-carrying field: its values are never kept */
} names_cache[CACHED_NAME_SLOTS];

static int
is_secret(PyObject *low)
{
    const char *s = PyBytes_AS_STRING(low);
    switch (PyBytes_GET_SIZE(low)) {
    case 6: return memcmp(s, "cookie", 6) == 0;
    case 10: return memcmp(s, "set-cookie", 10) == 0;
    case 13: return memcmp(s, "authorization", 13) == 0;
    case 19: return memcmp(s, "proxy-authorization", 19) == 0;
    default: return 0;
    }
}

/* The name object and its lowered twin for s[0:n]; `slot` (when not NULL) gets the cache
   slot that holds them, or -1 when the name is not cached. */
#define FNV_START 2166136261u /* FNV-1a */
#define FNV_STEP(h, c) (((h) ^ (c)) * 16777619u)

static int
hashed_field_name(const unsigned char *s, Py_ssize_t n, unsigned int h, PyObject **name,
                  PyObject **low, int *slot_out);

static int
field_name(const unsigned char *s, Py_ssize_t n, PyObject **name, PyObject **low, int *slot_out)
{
    unsigned int h = FNV_START;
    for (Py_ssize_t i = 0; i < n; i++) h = FNV_STEP(h, s[i]);
    return hashed_field_name(s, n, h, name, low, slot_out);
}

/* field_name with the FNV-1a hash of s[0:n] already computed (split_fields hashes a name
   while it checks its characters). */
static int
hashed_field_name(const unsigned char *s, Py_ssize_t n, unsigned int h, PyObject **name,
                  PyObject **low, int *slot_out)
{
    int cacheable = n <= CACHED_NAME_MAX;
    int slot = (int)((h ^ (h >> 16)) & (CACHED_NAME_SLOTS - 1));
    if (slot_out != NULL) *slot_out = cacheable ? slot : -1;
    PyObject *cached = names_cache[slot].name;
    if (cacheable && cached != NULL && PyBytes_GET_SIZE(cached) == n &&
        memcmp(PyBytes_AS_STRING(cached), s, (size_t)n) == 0) {
        *name = Py_NewRef(cached);
        *low = Py_NewRef(names_cache[slot].low);
        return 1;
    }
    PyObject *nm = PyBytes_FromStringAndSize((const char *)s, n);
    if (nm == NULL) return 0;
    PyObject *lw = lowered(nm);
    if (lw == NULL || (cacheable && PyObject_Hash(lw) == -1)) {
        Py_DECREF(nm);
        Py_XDECREF(lw);
        return 0;
    }
    if (cacheable) {
        Py_XSETREF(names_cache[slot].name, Py_NewRef(nm));
        Py_XSETREF(names_cache[slot].low, Py_NewRef(lw));
        Py_CLEAR(names_cache[slot].pair);
        names_cache[slot].secret = is_secret(lw);
    }
    *name = nm;
    *low = lw;
    return 1;
}

static int
ssize_arg(PyObject *obj, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(obj);
    return !(*out == -1 && PyErr_Occurred());
}

/* The (buf, start, end, ...) arguments: the bytes, and the bounds clamped to them as
   slicing clamps. 0 with TypeError (`usage`) or the int conversion's error set. */
static int
span_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
          const unsigned char **s, Py_ssize_t *start, Py_ssize_t *end)
{
    if (nargs != want || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return 0;
    }
    if (!ssize_arg(args[1], start) || !ssize_arg(args[2], end)) return 0;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (*start < 0) *start = 0;
    if (*start > size) *start = size;
    if (*end > size) *end = size;
    if (*end < *start) *end = *start;
    *s = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    return 1;
}

/* Where the run of field-value octets (FVCHAR) from `i` ends. Eight bytes a turn while
   none is below 0x20 or DEL ("hasless" and "haszero" on the word: exact for "any byte"),
   then byte by byte from the word that has one (HTAB, the CR, or a refused octet). */
static Py_ssize_t
value_run(const unsigned char *s, Py_ssize_t i, Py_ssize_t end)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (i + 8 <= end) {
        uint64_t w, del;
        memcpy(&w, s + i, 8);
        del = w ^ (ones * 0x7f);
        if ((((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs) break;
        i += 8;
    }
    while (i < end && FVCHAR[s[i]]) i++;
    return i;
}

/* split_fields(buf, start, end, max_headers) -> (fields, names) | 0 | 1

   The CRLF-ended field lines of buf[start:end] (RFC 9112 5: token ":" OWS value OWS):
   ([(name, value)], [lowered name]) with OWS stripped from each value; 1 when the block
   has more than max_headers lines; 0 when any line is malformed. */
static PyObject *
split_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *s;
    Py_ssize_t start, end, max_headers;
    if (!span_args(args, nargs, 4, "split_fields(buf: bytes, start, end, max_headers)", &s,
                   &start, &end) ||
        !ssize_arg(args[3], &max_headers))
        return NULL;

    Py_ssize_t lines = 0;
    for (const unsigned char *p = s + start, *e = s + end;
         p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        lines++;
    if (lines > max_headers) return PyLong_FromLong(1);

    PyObject *fields = PyList_New(lines);
    PyObject *names = PyList_New(lines);
    if (fields == NULL || names == NULL) goto error;
    Py_ssize_t i = start;
    for (Py_ssize_t k = 0; k < lines; k++) {
        Py_ssize_t name_start = i;
        unsigned int h = FNV_START;
        while (i < end && TCHAR[s[i]]) h = FNV_STEP(h, s[i++]);
        if (i == name_start || i >= end || s[i] != ':') goto malformed;
        Py_ssize_t name_end = i++;
        while (i < end && (s[i] == ' ' || s[i] == '\t')) i++;
        Py_ssize_t value_start = i;
        i = value_run(s, i, end);
        if (i + 1 >= end || s[i] != '\r' || s[i + 1] != '\n') goto malformed;
        Py_ssize_t value_end = i;
        while (value_end > value_start && (s[value_end - 1] == ' ' || s[value_end - 1] == '\t'))
            value_end--;
        i += 2;
        PyObject *name, *low;
        int slot;
        if (!hashed_field_name(s + name_start, name_end - name_start, h, &name, &low, &slot))
            goto error;
        Py_ssize_t vlen = value_end - value_start;
        PyObject *kept = slot >= 0 ? names_cache[slot].pair : NULL, *pair;
        if (kept != NULL && PyTuple_GET_ITEM(kept, 0) == name &&
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(kept, 1)) == vlen &&
            memcmp(PyBytes_AS_STRING(PyTuple_GET_ITEM(kept, 1)), s + value_start,
                   (size_t)vlen) == 0) {
            pair = Py_NewRef(kept); /* the same field as last time */
            Py_DECREF(name);
        } else {
            PyObject *value = PyBytes_FromStringAndSize((const char *)s + value_start, vlen);
            pair = value == NULL ? NULL : PyTuple_New(2);
            if (pair == NULL) {
                Py_XDECREF(value);
                Py_DECREF(name);
                Py_DECREF(low);
                goto error;
            }
            PyTuple_SET_ITEM(pair, 0, name);
            PyTuple_SET_ITEM(pair, 1, value);
            if (slot >= 0 && vlen <= CACHED_VALUE_MAX && !names_cache[slot].secret)
                Py_XSETREF(names_cache[slot].pair, Py_NewRef(pair));
        }
        PyList_SET_ITEM(fields, k, pair);
        PyList_SET_ITEM(names, k, low);
    }
    if (i != end) goto malformed; /* bytes after the last CRLF: the parsers never pass any */
    PyObject *out = PyTuple_New(2);
    if (out == NULL) goto error;
    PyTuple_SET_ITEM(out, 0, fields);
    PyTuple_SET_ITEM(out, 1, names);
    return out;

malformed:
    Py_DECREF(fields);
    Py_DECREF(names);
    return PyLong_FromLong(0);
error:
    Py_XDECREF(fields);
    Py_XDECREF(names);
    return NULL;
}

/* name_index(names, key, start) -> int: the index of `key` in the list `names` from
   `start`, -1 when absent, -2 when `names` is not a list of bytes (the twin decides).
   `key in names` compares through PyObject_RichCompare, ~60 instructions an element; this
   compares lengths, then bytes. */
static PyObject *
name_index(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "name_index(names, key, start)");
        return NULL;
    }
    if (!ssize_arg(args[2], &start)) return NULL;
    PyObject *names = args[0], *key = args[1];
    if (!PyList_CheckExact(names) || !PyBytes_CheckExact(key)) return PyLong_FromLong(-2);
    Py_ssize_t klen = PyBytes_GET_SIZE(key), n = PyList_GET_SIZE(names);
    const char *k = PyBytes_AS_STRING(key);
    for (Py_ssize_t i = start < 0 ? 0 : start; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(names, i);
        if (!PyBytes_CheckExact(item)) return PyLong_FromLong(-2);
        if (item == key || (PyBytes_GET_SIZE(item) == klen &&
                            memcmp(PyBytes_AS_STRING(item), k, (size_t)klen) == 0))
            return PyLong_FromSsize_t(i);
    }
    return PyLong_FromLong(-1);
}

/* trace_names(names) -> int: where the trace context is among the lowered `names`, as
   tracing.context.trace_names_py answers: (index of the first "traceparent" + 1) * 2, plus
   1 when a B3 name (b3, x-b3-traceid, -spanid, -parentspanid, -sampled, -flags) is there;
   0 for none; -2 when `names` is not a list of bytes (the twin decides). */
static PyObject *
trace_names(PyObject *module, PyObject *names)
{
    if (!PyList_CheckExact(names)) return PyLong_FromLong(-2);
    Py_ssize_t at = -1, n = PyList_GET_SIZE(names);
    int other = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(names, i);
        if (!PyBytes_CheckExact(item)) return PyLong_FromLong(-2);
        const char *s = PyBytes_AS_STRING(item);
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        if (len == 11 && memcmp(s, "traceparent", 11) == 0) {
            if (at < 0) at = i;
        } else if ((len == 2 && memcmp(s, "b3", 2) == 0) ||
                   (len >= 10 && memcmp(s, "x-b3-", 5) == 0 &&
                    ((len == 12 && memcmp(s + 5, "traceid", 7) == 0) ||
                     (len == 11 && memcmp(s + 5, "spanid", 6) == 0) ||
                     (len == 17 && memcmp(s + 5, "parentspanid", 12) == 0) ||
                     (len == 12 && memcmp(s + 5, "sampled", 7) == 0) ||
                     (len == 10 && memcmp(s + 5, "flags", 5) == 0)))) {
            other = 1;
        }
    }
    return PyLong_FromSsize_t((at + 1) * 2 + other);
}

/* -- start lines and Host ---------------------------------------------------------------- */

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The bytes s[0:n], as the same object each time for the versions and the reason nearly
   every start line carries (a bytes object is immutable: sharing one is invisible). */
static PyObject *V11, *V10, *REASON_OK;

static PyObject *
common_bytes(const unsigned char *s, Py_ssize_t n)
{
    if (n == 3 && s[0] == '1' && s[1] == '.' && (s[2] == '1' || s[2] == '0'))
        return Py_NewRef(s[2] == '1' ? V11 : V10);
    if (n == 2 && s[0] == 'O' && s[1] == 'K') return Py_NewRef(REASON_OK);
    return PyBytes_FromStringAndSize((const char *)s, n);
}

/* request_line(buf, start, end) -> (method, target, version, next) | None: RFC 9112 3,
   `token SP 1*(%x21-7E) SP "HTTP/" DIGIT "." DIGIT CRLF` at buf[start:end], as
   grammar.REQUEST_LINE.match; `next` is where the line ends (after its CRLF). */
static PyObject *
request_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *s;
    Py_ssize_t start, end;
    if (!span_args(args, nargs, 3, "request_line(buf: bytes, start, end)", &s, &start, &end))
        return NULL;
    Py_ssize_t i = start;
    while (i < end && TCHAR[s[i]]) i++;
    Py_ssize_t method_end = i;
    if (method_end == start || i >= end || s[i] != ' ') Py_RETURN_NONE;
    Py_ssize_t target_start = ++i;
    while (i < end && s[i] >= 0x21 && s[i] <= 0x7e) i++;
    Py_ssize_t target_end = i;
    if (target_end == target_start || end - i < 11 || memcmp(s + i, " HTTP/", 6) != 0 ||
        !is_digit(s[i + 6]) || s[i + 7] != '.' || !is_digit(s[i + 8]) || s[i + 9] != '\r' ||
        s[i + 10] != '\n')
        Py_RETURN_NONE;
    PyObject *method, *ignored;
    if (!field_name(s + start, method_end - start, &method, &ignored, NULL)) return NULL;
    Py_DECREF(ignored);
    PyObject *target = PyBytes_FromStringAndSize((const char *)s + target_start,
                                                 target_end - target_start);
    PyObject *version = common_bytes(s + i + 6, 3);
    PyObject *next = PyLong_FromSsize_t(i + 11);
    PyObject *out = (target && version && next) ? PyTuple_Pack(4, method, target, version, next)
                                                : NULL;
    Py_DECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(version);
    Py_XDECREF(next);
    return out;
}

/* status_line(buf, start, end) -> (version, status, reason | None, next) | None: RFC 9112
   4, `"HTTP/" DIGIT "." DIGIT SP 3DIGIT [ SP reason ] CRLF`, as grammar.STATUS_LINE.match
   (the reason None when its SP is left out too). */
static PyObject *
status_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *s;
    Py_ssize_t start, end;
    if (!span_args(args, nargs, 3, "status_line(buf: bytes, start, end)", &s, &start, &end))
        return NULL;
    const unsigned char *p = s + start;
    if (end - start < 14 || memcmp(p, "HTTP/", 5) != 0 || !is_digit(p[5]) || p[6] != '.' ||
        !is_digit(p[7]) || p[8] != ' ' || !is_digit(p[9]) || !is_digit(p[10]) ||
        !is_digit(p[11]))
        Py_RETURN_NONE;
    Py_ssize_t i = start + 12, reason_start = -1;
    if (s[i] == ' ') {
        reason_start = ++i;
        while (i < end && FVCHAR[s[i]]) i++;
    }
    if (end - i < 2 || s[i] != '\r' || s[i + 1] != '\n') Py_RETURN_NONE;
    long status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    PyObject *version = common_bytes(p + 5, 3);
    PyObject *code = PyLong_FromLong(status);
    PyObject *reason = reason_start < 0 ? Py_NewRef(Py_None)
                                        : common_bytes(s + reason_start, i - reason_start);
    PyObject *next = PyLong_FromSsize_t(i + 2);
    PyObject *out = (version && code && reason && next)
                        ? PyTuple_Pack(4, version, code, reason, next)
                        : NULL;
    Py_XDECREF(version);
    Py_XDECREF(code);
    Py_XDECREF(reason);
    Py_XDECREF(next);
    return out;
}

/* RFC 3986 reg-name characters (unreserved, sub-delims, pct-encoded's "%"). */
static unsigned char REGNAME[256];
/* An IP-literal's characters, as grammar.HOST takes them: hex digits, ":" and ".". */
static unsigned char IPLIT[256];

static void
init_host_tables(void)
{
    const char *regname = "-._~!$&'()*+,;=%";
    for (int c = '0'; c <= '9'; c++) REGNAME[c] = IPLIT[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) REGNAME[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) REGNAME[c] = 1;
    for (const char *q = regname; *q; q++) REGNAME[(unsigned char)*q] = 1;
    for (int c = 'A'; c <= 'F'; c++) IPLIT[c] = 1;
    for (int c = 'a'; c <= 'f'; c++) IPLIT[c] = 1;
    IPLIT[':'] = IPLIT['.'] = 1;
}

/* valid_host(value) -> bool: RFC 9110 7.2 `uri-host [ ":" port ]` as grammar.HOST
   fullmatches it (an empty host and an empty port are allowed). */
static PyObject *
valid_host(PyObject *module, PyObject *value)
{
    if (!PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "valid_host(value: bytes)");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value), i = 0;
    if (n > 0 && s[0] == '[') {
        i = 1;
        while (i < n && IPLIT[s[i]]) i++;
        if (i == 1 || i >= n || s[i] != ']') Py_RETURN_FALSE;
        i++;
    } else {
        while (i < n && REGNAME[s[i]]) i++;
    }
    if (i < n) {
        if (s[i] != ':') Py_RETURN_FALSE;
        i++;
        while (i < n && is_digit(s[i])) i++;
    }
    return PyBool_FromLong(i == n);
}

/* -- whole heads ------------------------------------------------------------------------- */

/* block_end(buf, pos) -> int: where the first CRLF CRLF at or after `pos` starts, -1 when
   there is none: buf.find(b"\r\n\r\n", pos), without bytes.find's argument parsing. */
static PyObject *
block_end(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "block_end(buf: bytes, pos)");
        return NULL;
    }
    if (!ssize_arg(args[1], &pos)) return NULL;
    const char *s = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (pos < 0) pos = pos + size < 0 ? 0 : pos + size; /* as bytes.find reads a start */
    /* From CR to CR with memchr: a head has one per line, and glibc's memmem sets up a
       table per call that costs more than the scan. */
    const char *p = s + pos, *e = s + size;
    while (e - p >= 4 && (p = memchr(p, '\r', (size_t)(e - p - 3))) != NULL) {
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n') return PyLong_FromSsize_t(p - s);
        p++;
    }
    return PyLong_FromLong(-1);
}

/* The field names a parser must read, by their lowered bytes. */
enum { OTHER, HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, EXPECT };

static int
is_name(PyObject *low, const char *want, Py_ssize_t n)
{
    return PyBytes_GET_SIZE(low) == n && memcmp(PyBytes_AS_STRING(low), want, (size_t)n) == 0;
}

static int
special(PyObject *low)
{
    switch (PyBytes_GET_SIZE(low)) {
    case 4: return is_name(low, "host", 4) ? HOST : OTHER;
    case 6: return is_name(low, "expect", 6) ? EXPECT : OTHER;
    case 10: return is_name(low, "connection", 10) ? CONNECTION : OTHER;
    case 14: return is_name(low, "content-length", 14) ? CONTENT_LENGTH : OTHER;
    case 17: return is_name(low, "transfer-encoding", 17) ? TRANSFER_ENCODING : OTHER;
    default: return OTHER;
    }
}

/* The bytes equal `want` (lower case) ignoring ASCII case. */
static int
equals_lower(PyObject *value, const char *want, Py_ssize_t n)
{
    if (PyBytes_GET_SIZE(value) != n) return 0;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(value);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)want[i]) return 0;
    }
    return 1;
}

/* What grammar.body_framing answers for the heads it sees most, decided here in one pass
   over the names: at most one Content-Length of 1-18 digits, or (HTTP/1.1) one
   Transfer-Encoding that is exactly "chunked" and no Content-Length; at most one Connection
   holding one token (no comma). Anything else (and every head body_framing would refuse)
   is 0: the caller declines and the Python twin decides. Also counted for the request's
   checks: the Host fields (the first one's index in host_at) and whether Expect is there. */
typedef struct {
    PyObject *length; /* new reference: an int, or None */
    int chunked, keep_alive, expect, upgrade_token, hosts;
    Py_ssize_t host_at;
} Framing;

static int
simple_framing(PyObject *fields, PyObject *names, int v11, Framing *f)
{
    Py_ssize_t n = PyList_GET_SIZE(names), cl = -1, te = -1, conn = -1;
    f->length = NULL;
    f->chunked = f->expect = f->upgrade_token = f->hosts = 0;
    f->host_at = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        switch (special(PyList_GET_ITEM(names, i))) {
        case HOST:
            if (f->hosts++ == 0) f->host_at = i;
            break;
        case CONTENT_LENGTH:
            if (cl >= 0) return 0;
            cl = i;
            break;
        case TRANSFER_ENCODING:
            if (te >= 0) return 0;
            te = i;
            break;
        case CONNECTION:
            if (conn >= 0) return 0;
            conn = i;
            break;
        case EXPECT: f->expect = 1; break;
        default: break;
        }
    }
    if (te >= 0) {
        if (cl >= 0 || !v11) return 0;
        if (!equals_lower(PyTuple_GET_ITEM(PyList_GET_ITEM(fields, te), 1), "chunked", 7))
            return 0;
        f->chunked = 1;
    }
    if (cl >= 0) {
        PyObject *v = PyTuple_GET_ITEM(PyList_GET_ITEM(fields, cl), 1);
        Py_ssize_t len = PyBytes_GET_SIZE(v);
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(v);
        if (len < 1 || len > 18) return 0;
        long long value = 0;
        for (Py_ssize_t i = 0; i < len; i++) {
            if (!is_digit(d[i])) return 0;
            value = value * 10 + (d[i] - '0');
        }
        f->length = PyLong_FromLongLong(value);
        if (f->length == NULL) return -1;
    }
    int close = 0, keep = 0;
    if (conn >= 0) {
        PyObject *v = PyTuple_GET_ITEM(PyList_GET_ITEM(fields, conn), 1);
        if (memchr(PyBytes_AS_STRING(v), ',', (size_t)PyBytes_GET_SIZE(v)) != NULL) goto decline;
        close = equals_lower(v, "close", 5);
        keep = equals_lower(v, "keep-alive", 10);
        f->upgrade_token = equals_lower(v, "upgrade", 7);
    }
    f->keep_alive = v11 ? !close : keep;
    if (f->length == NULL) f->length = Py_NewRef(Py_None);
    return 1;
decline:
    Py_CLEAR(f->length);
    return 0;
}

/* Which fields of `headers` to forward, in keep[0:n] (1: forward): those whose lowered name
   (`names`, same order) is not in the set `drop`, nor listed by the Connection field (RFC
   9110 7.6.1), as render.strip_fields_py decides. Decided here: no Connection field, or one
   whose value is a single token (no comma) that `drop` holds already or that names no
   field present ("keep-alive", "close": nearly always). 0 for anything else, and when the
   arguments are not a list of that length (of bytes names, of bytes pairs) and a set: the
   Python twin then decides, and raises what it raises. -1 with an error set. */
static int
keep_mask(PyObject *headers, PyObject *names, PyObject *drop, char *keep)
{
    if (!PyList_CheckExact(headers) || !PyList_CheckExact(names) ||
        !PyAnySet_CheckExact(drop) || PyList_GET_SIZE(headers) != PyList_GET_SIZE(names))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(names), conn = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(names, i), *pair = PyList_GET_ITEM(headers, i);
        if (!PyBytes_CheckExact(name) || !PyTuple_CheckExact(pair) ||
            PyTuple_GET_SIZE(pair) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            return 0;
        if (special(name) == CONNECTION) {
            if (conn >= 0) return 0; /* two Connection fields: the twin */
            conn = i;
        }
    }
    if (conn >= 0) {
        PyObject *value = PyTuple_GET_ITEM(PyList_GET_ITEM(headers, conn), 1);
        const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(value);
        Py_ssize_t len = PyBytes_GET_SIZE(value);
        if (memchr(v, ',', (size_t)len) != NULL) return 0;
        PyObject *name, *token;
        if (!field_name(v, len, &name, &token, NULL)) return -1; /* the lowered token */
        Py_DECREF(name);
        int dropped = PySet_Contains(drop, token);
        int present = 0;
        Py_ssize_t tlen = PyBytes_GET_SIZE(token);
        for (Py_ssize_t i = 0; dropped == 0 && !present && i < n; i++) {
            PyObject *other = PyList_GET_ITEM(names, i);
            present = PyBytes_GET_SIZE(other) == tlen &&
                      memcmp(PyBytes_AS_STRING(other), PyBytes_AS_STRING(token), (size_t)tlen) == 0;
        }
        Py_DECREF(token);
        if (dropped < 0) return -1;
        if (present) return 0; /* it names a field to drop as well: the twin */
    }
    /* The set lookups may run Python code (an __eq__ in `drop`) that could change the
       lists: the caller rechecks their sizes against n after this. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        Py_INCREF(name);
        int dropped = PySet_Contains(drop, name);
        Py_DECREF(name);
        if (dropped < 0) return -1;
        keep[i] = !dropped;
        if (PyList_GET_SIZE(names) != n || PyList_GET_SIZE(headers) != n) return 0;
    }
    return 1;
}

/* A mask for n fields: on the stack for the usual heads, else from the heap. */
#define MASK_ON_STACK 128

/* strip_fields(headers, names, drop) -> list | None

   The (name, value) pairs of `headers` to forward (keep_mask), in a new list, as
   render.strip_fields_py answers; None where keep_mask declines. */
static PyObject *
strip_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "strip_fields(headers, names, drop)");
        return NULL;
    }
    PyObject *headers = args[0], *names = args[1], *drop = args[2];
    Py_ssize_t n = PyList_Check(names) ? PyList_GET_SIZE(names) : 0;
    char stack[MASK_ON_STACK], *keep = n <= MASK_ON_STACK ? stack : PyMem_Malloc((size_t)n);
    if (keep == NULL) return PyErr_NoMemory();
    PyObject *out = NULL;
    int ok = keep_mask(headers, names, drop, keep);
    if (ok == 0) out = Py_NewRef(Py_None);
    if (ok == 1) out = PyList_New(n);
    if (ok == 1 && out != NULL) {
        /* Filled in place and its size set to what was kept (the slots past it stay NULL,
           outside the list), not grown by appends. */
        Py_ssize_t kept = 0;
        Py_SET_SIZE(out, 0);
        for (Py_ssize_t i = 0; i < n; i++)
            if (keep[i]) {
                PyList_SET_ITEM(out, kept, Py_NewRef(PyList_GET_ITEM(headers, i)));
                Py_SET_SIZE(out, ++kept);
            }
    }
    if (keep != stack) PyMem_Free(keep);
    return out;
}

/* request_head(buf, start, end, max_headers) -> tuple | None

   The head buf[start:end] (end excludes the final CRLF) as request.request_head_py answers
   it, (method, target, version, fields, names, content_length, chunked, keep_alive, upgrade,
   expect_continue, host), for the requests nearly all are: an origin-form target, HTTP/1.1
   with one valid Host (or HTTP/1.0), body framing as simple_framing takes it, no Expect and
   no Upgrade. None for anything else, refusals included: the twin decides those.

   response_head(buf, start, end, max_headers) -> tuple | None

   The head as response.response_head_py answers it, (version, status, reason, fields,
   names, content_length, chunked, keep_alive), for HTTP/1.1 and 1.0 status lines with a
   status in 100-599 and body framing as simple_framing takes it; None for anything else.

   Both are one function: the start line differs, the rest is the same walk. */
static PyObject *
head(PyObject *module, PyObject *const *args, Py_ssize_t nargs, int request)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, request
                                             ? "request_head(buf, start, end, max_headers)"
                                             : "response_head(buf, start, end, max_headers)");
        return NULL;
    }
    PyObject *line = request ? request_line(module, args, 3) : status_line(module, args, 3);
    if (line == NULL || line == Py_None) return line;
    /* request: (method, target, version, next); response: (version, status, reason, next) */
    PyObject *version = PyTuple_GET_ITEM(line, request ? 2 : 0);
    const char *ver = PyBytes_AS_STRING(version);
    int v11 = memcmp(ver, "1.1", 3) == 0, usual = v11 || memcmp(ver, "1.0", 3) == 0;
    if (request) {
        usual = usual && PyBytes_AS_STRING(PyTuple_GET_ITEM(line, 1))[0] == '/' &&
                !is_name(PyTuple_GET_ITEM(line, 0), "CONNECT", 7);
    } else {
        long code = PyLong_AsLong(PyTuple_GET_ITEM(line, 1)); /* three digits: no error */
        usual = usual && code >= 100 && code <= 599;
    }
    PyObject *split = NULL, *out = NULL;
    Framing f = {NULL, 0, 0, 0, 0, 0, -1};
    int ok = 0;
    if (usual) {
        PyObject *split_args[4] = {args[0], PyTuple_GET_ITEM(line, 3), args[2], args[3]};
        split = split_fields(module, split_args, 4);
        ok = split == NULL ? -1 : PyTuple_Check(split) ? 1 : 0; /* an int: refused */
    }
    PyObject *fields = ok == 1 ? PyTuple_GET_ITEM(split, 0) : NULL;
    PyObject *names = ok == 1 ? PyTuple_GET_ITEM(split, 1) : NULL;
    if (ok == 1) ok = simple_framing(fields, names, v11, &f);
    PyObject *host = Py_None;
    if (ok == 1 && request) {
        if (f.expect || f.upgrade_token || f.hosts > 1 || (v11 && f.hosts == 0)) ok = 0;
        if (ok == 1 && f.hosts == 1) {
            host = PyTuple_GET_ITEM(PyList_GET_ITEM(fields, f.host_at), 1);
            PyObject *valid = valid_host(module, host);
            ok = valid == NULL ? -1 : valid == Py_True;
            Py_XDECREF(valid);
        }
    }
    PyObject *chunked = f.chunked ? Py_True : Py_False;
    PyObject *keep_alive = f.keep_alive ? Py_True : Py_False;
    if (ok == 1 && request)
        out = PyTuple_Pack(11, PyTuple_GET_ITEM(line, 0), PyTuple_GET_ITEM(line, 1), version,
                           fields, names, f.length, chunked, keep_alive, Py_None, Py_False, host);
    else if (ok == 1)
        out = PyTuple_Pack(8, version, PyTuple_GET_ITEM(line, 1), PyTuple_GET_ITEM(line, 2),
                           fields, names, f.length, chunked, keep_alive);
    else if (ok == 0)
        out = Py_NewRef(Py_None);
    Py_XDECREF(f.length); /* simple_framing leaves it NULL or a new reference */
    Py_XDECREF(split);
    Py_DECREF(line);
    return out;
}

static PyObject *
request_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return head(module, args, nargs, 1);
}

static PyObject *
response_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    return head(module, args, nargs, 0);
}

/* -- hex ids ----------------------------------------------------------------------------- */

static const char HEX[] = "0123456789abcdef";
/* HEX2[2b], HEX2[2b+1]: the two lower-case hex digits of the byte b (init_tables). */
static char HEX2[512];

/* `digits` lower-case hex digits of `value` (0 <= value < 16**digits) at `out`; 0 when the
   value is not such an int (the caller returns None: the Python twin decides). */
static int
put_hex(PyObject *value, int digits, char *out)
{
    unsigned char raw[16];
    int nbytes = digits / 2;
    if (!PyLong_CheckExact(value) || digits % 2 || nbytes > (int)sizeof raw) return 0;
    if (digits <= 16) { /* the usual ids: one machine word, no byte array */
        unsigned long long v = PyLong_AsUnsignedLongLong(value);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear(); /* negative or too large */
            return 0;
        }
        if (digits < 16 && v >> (4 * digits) != 0) return 0;
        for (int i = digits - 1; i >= 0; i--, v >>= 4) out[i] = HEX[v & 15];
        return 1;
    }
    if (_PyLong_AsByteArray((PyLongObject *)value, raw, (size_t)nbytes, 0, 0) < 0) {
        PyErr_Clear(); /* negative or too large */
        return 0;
    }
    for (int i = 0; i < nbytes; i++) {
        out[2 * i] = HEX[raw[i] >> 4];
        out[2 * i + 1] = HEX[raw[i] & 15];
    }
    return 1;
}

/* hex_id(value, digits) -> bytes | None: b"%0{digits}x" % value, for 0 <= value <
   16**digits and an even `digits` up to 32; None otherwise. */
static PyObject *
hex_id(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hex_id(value, digits)");
        return NULL;
    }
    long digits = PyLong_AsLong(args[1]);
    if (digits == -1 && PyErr_Occurred()) return NULL;
    char buf[32];
    if (digits < 2 || digits > 32 || !put_hex(args[0], (int)digits, buf)) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(buf, digits);
}

/* Random ids (trace and span ids: unique, not secret) without a Python int: xoshiro256**
   seeded from getrandom(2) at import and again in a forked child (pthread_atfork), so two
   processes never share a sequence. */
static uint64_t RNG[4];

static int
seed_rng(void)
{
    for (int tries = 0; tries < 8; tries++) {
        if (getrandom(RNG, sizeof RNG, 0) == (ssize_t)sizeof RNG &&
            (RNG[0] | RNG[1] | RNG[2] | RNG[3]) != 0)
            return 1;
    }
    return 0;
}

static void
reseed_in_child(void)
{
    if (!seed_rng()) RNG[0] ^= (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL;
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
next_random(void)
{
    uint64_t out = rotl(RNG[1] * 5, 7) * 9, t = RNG[1] << 17;
    RNG[2] ^= RNG[0];
    RNG[3] ^= RNG[1];
    RNG[1] ^= RNG[2];
    RNG[0] ^= RNG[3];
    RNG[2] ^= t;
    RNG[3] = rotl(RNG[3], 45);
    return out;
}

/* random_hex(digits) -> bytes: 16 or 32 lower-case hex digits of fresh random bits, never
   all zeros (W3C: an all-zero id is invalid). */
static PyObject *
random_hex(PyObject *module, PyObject *arg)
{
    long digits = PyLong_AsLong(arg);
    if (digits == -1 && PyErr_Occurred()) return NULL;
    if (digits != 16 && digits != 32) {
        PyErr_SetString(PyExc_ValueError, "random_hex(digits): 16 or 32");
        return NULL;
    }
    char buf[32];
    uint64_t words[2], any = 0;
    do {
        any = 0;
        for (int w = 0; w < digits / 16; w++) any |= words[w] = next_random();
    } while (any == 0);
    for (int w = 0; w < digits / 16; w++) { /* a byte, two digits, a turn */
        uint64_t v = words[w];
        for (int i = 14; i >= 0; i -= 2, v >>= 8) memcpy(buf + 16 * w + i, HEX2 + 2 * (v & 255), 2);
    }
    return PyBytes_FromStringAndSize(buf, digits);
}

/* traceparent(trace, span, sampled) -> bytes | None: the W3C header value
   b"00-" + trace + b"-" + span + (b"-01" if sampled else b"-00") for a trace id of 32 and a
   span id of 16 bytes (the hex digits); None for other arguments (the twin decides). */
static PyObject *
traceparent(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "traceparent(trace, span, sampled)");
        return NULL;
    }
    char buf[55] = "00-";
    int sampled = PyObject_IsTrue(args[2]);
    if (sampled < 0) return NULL;
    if (!PyBytes_CheckExact(args[0]) || PyBytes_GET_SIZE(args[0]) != 32 ||
        !PyBytes_CheckExact(args[1]) || PyBytes_GET_SIZE(args[1]) != 16)
        Py_RETURN_NONE;
    memcpy(buf + 3, PyBytes_AS_STRING(args[0]), 32);
    memcpy(buf + 36, PyBytes_AS_STRING(args[1]), 16);
    buf[35] = '-';
    buf[52] = '-';
    buf[53] = '0';
    buf[54] = sampled ? '1' : '0';
    return PyBytes_FromStringAndSize(buf, 55);
}

/* `n` lower-case hex digits at `s` into n/2 bytes at `out`; 0 if any is not [0-9a-f].
   No branch per digit: a -1 anywhere makes the OR of all of them negative. */
static int
get_hex(const unsigned char *s, int n, unsigned char *out)
{
    int bad = 0;
    for (int i = 0; i < n; i += 2) {
        int hi = HEXV[s[i]], lo = HEXV[s[i + 1]];
        bad |= hi | lo;
        out[i / 2] = (unsigned char)(((unsigned)hi << 4) | (unsigned)lo);
    }
    return bad >= 0;
}

static int
is_space(unsigned char c) /* bytes.strip()'s ASCII whitespace */
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* parse_traceparent(value) -> (trace_id, span_id, sampled) | None: a W3C traceparent
   `version-trace_id-parent_id-flags[-rest]` (lower-case hex; version ff refused, version 00
   without a rest; zero ids refused), surrounding ASCII whitespace ignored. The ids are
   answered as the hex digits they arrived as (32 and 16 bytes). */
static PyObject *
parse_traceparent(PyObject *module, PyObject *value)
{
    if (!PyBytes_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "parse_traceparent(value: bytes)");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(value);
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    while (n > 0 && is_space(s[n - 1])) n--;
    while (n > 0 && is_space(s[0])) s++, n--;
    unsigned char version, tid[16], sid[8], flags;
    if (n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || !get_hex(s, 2, &version) ||
        !get_hex(s + 3, 32, tid) || !get_hex(s + 36, 16, sid) || !get_hex(s + 53, 2, &flags))
        Py_RETURN_NONE;
    if (n > 55) { /* the rest: "-" then anything but LF (the regex's `(-.*)?`) */
        if (s[55] != '-' || memchr(s + 56, '\n', (size_t)(n - 56)) != NULL || version == 0)
            Py_RETURN_NONE;
    }
    if (version == 0xff) Py_RETURN_NONE;
    int tid_zero = 1, sid_zero = 1;
    for (int i = 0; i < 16; i++) tid_zero &= tid[i] == 0;
    for (int i = 0; i < 8; i++) sid_zero &= sid[i] == 0;
    if (tid_zero || sid_zero) Py_RETURN_NONE;
    PyObject *t = PyBytes_FromStringAndSize((const char *)s + 3, 32);
    PyObject *p = PyBytes_FromStringAndSize((const char *)s + 36, 16);
    PyObject *out = (t && p) ? PyTuple_Pack(3, t, p, (flags & 1) ? Py_True : Py_False) : NULL;
    Py_XDECREF(t);
    Py_XDECREF(p);
    return out;
}

/* -- rendering --------------------------------------------------------------------------- */

/* The number of `c` in s[0:n], hopping with memchr (SIMD in glibc): a rendered head
   holds one CR and one LF per line, so this is a handful of calls. */
static Py_ssize_t
count_byte(const char *s, Py_ssize_t n, char c)
{
    Py_ssize_t count = 0;
    const char *p = s, *e = s + n;
    while (p < e && (p = memchr(p, c, (size_t)(e - p))) != NULL) {
        count++;
        p++;
    }
    return count;
}

/* The size of the field lines of `fields` (a list or tuple of (bytes, bytes)) whose `keep`
   flag is set (all when keep is NULL), added to *total, and their count to *lines; 0 when
   `fields` or one of them is not of that shape. */
static int
measure(PyObject *fields, const char *keep, Py_ssize_t *total, Py_ssize_t *lines)
{
    if (!PyList_CheckExact(fields) && !PyTuple_CheckExact(fields)) return 0;
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(fields);
    PyObject **items = PySequence_Fast_ITEMS(fields);
    for (Py_ssize_t j = 0; j < nh; j++) {
        if (keep != NULL && !keep[j]) continue;
        PyObject *pair = items[j];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) return 0;
        PyObject *n = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(n) || !PyBytes_CheckExact(v)) return 0;
        *total += PyBytes_GET_SIZE(n) + 2 + PyBytes_GET_SIZE(v) + 2;
        *lines += 1;
    }
    return 1;
}

/* Write the field lines `measure` counted at d; the end. */
static char *
put_fields(char *d, PyObject *fields, const char *keep)
{
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(fields);
    PyObject **items = PySequence_Fast_ITEMS(fields);
    for (Py_ssize_t j = 0; j < nh; j++) {
        if (keep != NULL && !keep[j]) continue;
        PyObject *n = PyTuple_GET_ITEM(items[j], 0), *v = PyTuple_GET_ITEM(items[j], 1);
        memcpy(d, PyBytes_AS_STRING(n), (size_t)PyBytes_GET_SIZE(n));
        d += PyBytes_GET_SIZE(n);
        *d++ = ':';
        *d++ = ' ';
        memcpy(d, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
        d += PyBytes_GET_SIZE(v);
        *d++ = '\r';
        *d++ = '\n';
    }
    return d;
}

/* `first` (the start line without its CRLF, `nfirst` pieces) then the fields of `headers`
   whose `keep` flag is set (all when NULL), then those of `extra` (when not NULL), then the
   empty line, then the bytes `tail` (when not NULL: a body sent with the head, unchecked).
   None when a piece or a field is not bytes (the caller's Python twin renders those);
   ValueError, as the twin raises it, when CR, LF or NUL is inside any part of the head. */
static PyObject *
render_parts(PyObject *const *first, Py_ssize_t nfirst, PyObject *headers, const char *keep,
             PyObject *extra, PyObject *tail)
{
    Py_ssize_t total = 2 + 2, lines = 2; /* CRLF after the start line, the empty line */
    for (Py_ssize_t j = 0; j < nfirst; j++) {
        if (!PyBytes_CheckExact(first[j])) Py_RETURN_NONE;
        total += PyBytes_GET_SIZE(first[j]);
    }
    if (!measure(headers, keep, &total, &lines) ||
        (extra != NULL && !measure(extra, NULL, &total, &lines)) ||
        (tail != NULL && !PyBytes_CheckExact(tail)))
        Py_RETURN_NONE;
    Py_ssize_t ntail = tail != NULL ? PyBytes_GET_SIZE(tail) : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total + ntail);
    if (out == NULL) return NULL;
    char *d = PyBytes_AS_STRING(out);
    for (Py_ssize_t j = 0; j < nfirst; j++) {
        Py_ssize_t n = PyBytes_GET_SIZE(first[j]);
        memcpy(d, PyBytes_AS_STRING(first[j]), (size_t)n);
        d += n;
    }
    *d++ = '\r';
    *d++ = '\n';
    d = put_fields(d, headers, keep);
    if (extra != NULL) d = put_fields(d, extra, NULL);
    *d++ = '\r';
    *d++ = '\n';
    if (ntail) memcpy(d, PyBytes_AS_STRING(tail), (size_t)ntail);
    /* We wrote one CR and one LF per line: any more came inside a part (it would split the
       head: RFC 9110 5.5), as would a NUL. Checked on the whole head, not per part. */
    const char *h = PyBytes_AS_STRING(out);
    if (count_byte(h, total, '\n') != lines || count_byte(h, total, '\r') != lines ||
        memchr(h, '\0', (size_t)total) != NULL) {
        PyObject *shown = PyBytes_FromStringAndSize(PyBytes_AS_STRING(out),
                                                    total < 200 ? total : 200);
        Py_DECREF(out);
        if (shown == NULL) return NULL;
        PyErr_Format(PyExc_ValueError, "CR, LF or NUL inside a head being rendered: %R", shown);
        Py_DECREF(shown);
        return NULL;
    }
    return out;
}

static PyObject *
render(PyObject *const *first, Py_ssize_t nfirst, PyObject *headers)
{
    return render_parts(first, nfirst, headers, NULL, NULL, NULL);
}

static PyObject *SP, *HTTP_SLASH, *HTTP_ONLY; /* " ", " HTTP/", "HTTP/" */

/* render_request(method, target, version, headers) -> bytes | None:
   `method SP target SP HTTP/version CRLF`, the fields, the empty line. */
static PyObject *
render_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "render_request(method, target, version, headers)");
        return NULL;
    }
    /* HTTP_SLASH is " HTTP/": the SP between target and version is part of it. */
    PyObject *first[5] = {args[0], SP, args[1], HTTP_SLASH, args[2]};
    return render(first, 5, args[3]);
}

/* " 200 ": the status code between its spaces, the same object per code in 100-599. */
static PyObject *CODES[600];

static PyObject *
status_code(PyObject *status)
{
    if (!PyLong_CheckExact(status)) return Py_NewRef(Py_None);
    int overflow = 0;
    long code = PyLong_AsLongAndOverflow(status, &overflow);
    if (overflow || (code == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    int cached = code >= 100 && code < 600;
    if (cached && CODES[code] != NULL) return Py_NewRef(CODES[code]);
    char digits[32];
    int n = snprintf(digits, sizeof digits, " %ld ", code);
    PyObject *out = PyBytes_FromStringAndSize(digits, n);
    if (out != NULL && cached) CODES[code] = Py_NewRef(out);
    return out;
}

/* render_response(version, status, reason, headers) -> bytes | None:
   `HTTP/version SP status SP reason CRLF`, the fields, the empty line. */
static PyObject *
render_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "render_response(version, status, reason, headers)");
        return NULL;
    }
    PyObject *code = status_code(args[1]);
    if (code == NULL || code == Py_None) return code;
    PyObject *first[4] = {HTTP_ONLY, args[0], code, args[2]};
    PyObject *out = render(first, 4, args[3]);
    Py_DECREF(code);
    return out;
}

/* The head: `first`, the fields of `headers` that keep_mask keeps, those of `extra`, the
   empty line; None where keep_mask or render_parts declines. */
static PyObject *
forward(PyObject *const *first, Py_ssize_t nfirst, PyObject *const *args, PyObject *tail)
{
    PyObject *headers = args[0], *names = args[1], *drop = args[2], *extra = args[3];
    Py_ssize_t n = PyList_Check(names) ? PyList_GET_SIZE(names) : 0;
    char stack[MASK_ON_STACK], *keep = n <= MASK_ON_STACK ? stack : PyMem_Malloc((size_t)n);
    if (keep == NULL) return PyErr_NoMemory();
    int ok = keep_mask(headers, names, drop, keep);
    /* keep_mask checked that the lists still hold n fields after its last set lookup, and
       nothing runs Python code from there; render_parts checks each field's shape again. */
    PyObject *out = ok == 1 ? render_parts(first, nfirst, headers, keep, extra, tail)
                    : ok == 0 ? Py_NewRef(Py_None) : NULL;
    if (keep != stack) PyMem_Free(keep);
    return out;
}

/* forward_request(method, target, version, headers, names, drop, extra) -> bytes | None:
   render_request(method, target, version, strip_fields(headers, names, drop) + extra) in
   one pass, with no list in between; None where either would answer None (the Python twin,
   render.forward_request_head_py, then decides). */
static PyObject *
forward_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "forward_request(method, target, version, headers, names, drop, extra)");
        return NULL;
    }
    PyObject *first[5] = {args[0], SP, args[1], HTTP_SLASH, args[2]};
    return forward(first, 5, args + 3, NULL);
}

/* forward_response(version, status, reason, headers, names, drop, extra, body) -> bytes |
   None: render_response(version, status, reason, strip_fields(headers, names, drop) + extra)
   + body in one pass, one buffer (twin: render.forward_response_head_py). */
static PyObject *
forward_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "forward_response(version, status, reason, headers, "
                                         "names, drop, extra, body)");
        return NULL;
    }
    PyObject *code = status_code(args[1]);
    if (code == NULL || code == Py_None) return code;
    PyObject *first[4] = {HTTP_ONLY, args[0], code, args[2]};
    PyObject *out = forward(first, 4, args + 3, args[7]);
    Py_DECREF(code);
    return out;
}

/* -- a whole response relayed in one call --------------------------------------------- */

/* The names relay_response drops (forward.RESPONSE_DROP): copied from the frozenset the
   caller passes, rebuilt only when another set comes (a frozenset cannot change, so the
   copy stays true while the set is the same object, which holds it alive). */
#define DROP_MAX 32
#define DROP_NAME_MAX 48
static PyObject *drop_owner;
static Py_ssize_t drop_count;
static uint64_t drop_lengths; /* bit n: a name of n bytes is in the table (n < 64) */
static struct {
    Py_ssize_t n;
    char name[DROP_NAME_MAX];
} drop_names[DROP_MAX];

/* 1: the table holds `drop`; 0: a set this table cannot hold (the caller declines). */
static int
load_drop(PyObject *drop)
{
    if (drop == drop_owner) return 1;
    if (!PyFrozenSet_CheckExact(drop) || PySet_GET_SIZE(drop) > DROP_MAX) return 0;
    PyObject *it = PyObject_GetIter(drop), *key;
    if (it == NULL) return -1;
    Py_ssize_t k = 0;
    int ok = 1;
    uint64_t lengths = 0;
    while (ok && (key = PyIter_Next(it)) != NULL) {
        if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) > DROP_NAME_MAX) ok = 0;
        else {
            drop_names[k].n = PyBytes_GET_SIZE(key);
            memcpy(drop_names[k].name, PyBytes_AS_STRING(key), (size_t)drop_names[k].n);
            lengths |= 1ULL << drop_names[k].n;
            k++;
        }
        Py_DECREF(key);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return -1;
    if (!ok) {
        Py_CLEAR(drop_owner);
        return 0;
    }
    drop_count = k;
    drop_lengths = lengths;
    Py_XSETREF(drop_owner, Py_NewRef(drop));
    return 1;
}

/* s[0:n] in lower case equals `low` (which is compared as it is: an upper-case byte in it
   never matches, as a lowered name never equals it). */
static int
lower_equals(const unsigned char *s, Py_ssize_t n, const char *low, Py_ssize_t m)
{
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)low[i]) return 0;
    }
    return 1;
}

static int
dropped(const unsigned char *s, Py_ssize_t n)
{
    if (n > DROP_NAME_MAX || !(drop_lengths >> n & 1)) return 0;
    for (Py_ssize_t k = 0; k < drop_count; k++)
        if (lower_equals(s, n, drop_names[k].name, drop_names[k].n)) return 1;
    return 0;
}

typedef struct {
    Py_ssize_t name, name_len, value, value_len;
} Span;

/* relay_response(buf, max_headers, max_head_bytes, drop) -> (status, out, keep_alive,
   length) | None

   `buf` as one whole response to a request that is not HEAD: a status line of HTTP/1.1 or
   1.0 with a final status that has a body (200-599 but 204 and 304), the field lines, one
   Content-Length (1-18 digits) and exactly that many body bytes, nothing after them. `out`
   is what the event path sends downstream for it (ResponseParser's events, then
   forward.response_head with `drop` and the body): the status line as HTTP/1.1, the fields
   whose lowered name is not in `drop` nor the Connection field's token, their values
   without OWS, "content-length: N", the empty line, the body. `keep_alive`: the upstream
   connection may carry another request. None for anything else: no Transfer-Encoding, at
   most one Connection field holding one token that `drop` holds or that names no field
   present; a head ResponseParser would refuse is declined too, so the event path refuses
   it with its message. The twin is that event path (tests/proxy/http1/test_speedups.py
   compares the two). */
static PyObject *
relay_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t max_headers, max_head;
    if (nargs != 4 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "relay_response(buf: bytes, max_headers, max_head_bytes, drop)");
        return NULL;
    }
    if (!ssize_arg(args[1], &max_headers) || !ssize_arg(args[2], &max_head)) return NULL;
    int loaded = load_drop(args[3]);
    if (loaded <= 0) return loaded < 0 ? NULL : Py_NewRef(Py_None);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);

    /* The status line, as status_line reads it. */
    if (size < 16 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '1' && s[7] != '0') ||
        s[8] != ' ' || !is_digit(s[9]) || !is_digit(s[10]) || !is_digit(s[11]))
        Py_RETURN_NONE;
    int v11 = s[7] == '1';
    long status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (status < 200 || status > 599 || status == 204 || status == 304) Py_RETURN_NONE;
    Py_ssize_t i = 12, reason = 12;
    if (s[12] == ' ') {
        reason = ++i;
        while (i < size && FVCHAR[s[i]]) i++;
    }
    Py_ssize_t reason_len = i - reason;
    if (size - i < 2 || s[i] != '\r' || s[i + 1] != '\n') Py_RETURN_NONE;
    i += 2;

    /* The head's end: the first CRLF CRLF (block_end), within max_head_bytes. */
    const unsigned char *p = s + i - 2, *e = s + size, *blank = NULL;
    while (e - p >= 4 && (p = memchr(p, '\r', (size_t)(e - p - 3))) != NULL) {
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            blank = p;
            break;
        }
        p++;
    }
    if (blank == NULL) Py_RETURN_NONE;
    Py_ssize_t fields_end = blank - s + 2, body = fields_end + 2;
    if (body > max_head) Py_RETURN_NONE;

    /* The field lines, as split_fields reads them. */
    Span spans[MASK_ON_STACK];
    char keep[MASK_ON_STACK];
    Py_ssize_t n = 0, cl = -1, conn = -1, out_size = 0;
    while (i < fields_end) {
        if (n == MASK_ON_STACK || n == max_headers) Py_RETURN_NONE;
        Span *f = &spans[n];
        f->name = i;
        while (i < fields_end && TCHAR[s[i]]) i++;
        f->name_len = i - f->name;
        if (f->name_len == 0 || i >= fields_end || s[i] != ':') Py_RETURN_NONE;
        i++;
        while (i < fields_end && (s[i] == ' ' || s[i] == '\t')) i++;
        f->value = i;
        i = value_run(s, i, fields_end);
        if (i + 1 >= fields_end || s[i] != '\r' || s[i + 1] != '\n') Py_RETURN_NONE;
        Py_ssize_t value_end = i;
        while (value_end > f->value && (s[value_end - 1] == ' ' || s[value_end - 1] == '\t'))
            value_end--;
        f->value_len = value_end - f->value;
        i += 2;
        const unsigned char *name = s + f->name;
        switch (f->name_len) {
        case 10:
            if (lower_equals(name, 10, "connection", 10)) {
                if (conn >= 0) Py_RETURN_NONE;
                conn = n;
            }
            break;
        case 14:
            if (lower_equals(name, 14, "content-length", 14)) {
                if (cl >= 0) Py_RETURN_NONE;
                cl = n;
            }
            break;
        case 17:
            if (lower_equals(name, 17, "transfer-encoding", 17)) Py_RETURN_NONE;
            break;
        default: break;
        }
        keep[n] = !dropped(name, f->name_len);
        if (keep[n]) out_size += f->name_len + 2 + f->value_len + 2;
        n++;
    }
    if (cl < 0 || spans[cl].value_len < 1 || spans[cl].value_len > 18) Py_RETURN_NONE;
    long long length = 0;
    for (Py_ssize_t k = 0; k < spans[cl].value_len; k++) {
        unsigned char c = s[spans[cl].value + k];
        if (!is_digit(c)) Py_RETURN_NONE;
        length = length * 10 + (c - '0');
    }
    if (size - body != length) Py_RETURN_NONE; /* not all there, or more after it */
    int keep_alive = v11;
    if (conn >= 0) {
        const unsigned char *v = s + spans[conn].value;
        Py_ssize_t len = spans[conn].value_len;
        if (memchr(v, ',', (size_t)len) != NULL) Py_RETURN_NONE;
        if (lower_equals(v, len, "close", 5)) keep_alive = 0;
        else if (lower_equals(v, len, "keep-alive", 10)) keep_alive = 1;
        if (!dropped(v, len)) { /* a listed name: only one that names no field present */
            for (Py_ssize_t k = 0; k < n; k++)
                if (spans[k].name_len == len &&
                    lower_equals(s + spans[k].name, len, (const char *)v, len))
                    Py_RETURN_NONE;
            /* the token in lower case compares with lowered names: a token with an
               upper-case letter is left to the event path */
            for (Py_ssize_t k = 0; k < len; k++)
                if (v[k] >= 'A' && v[k] <= 'Z') Py_RETURN_NONE;
        }
    }

    char digits[24];
    int ndigits = 0;
    long long v = length;
    do { /* the decimal digits, written from the end of `digits` */
        digits[23 - ndigits++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    out_size += 9 + 3 + 1 + reason_len + 2 + 16 + ndigits + 2 + 2 + length;
    PyObject *out = PyBytes_FromStringAndSize(NULL, out_size);
    if (out == NULL) return NULL;
    char *d = PyBytes_AS_STRING(out);
    memcpy(d, "HTTP/1.1 ", 9);
    memcpy(d + 9, s + 9, 3);
    d[12] = ' ';
    memcpy(d + 13, s + reason, (size_t)reason_len);
    d += 13 + reason_len;
    *d++ = '\r';
    *d++ = '\n';
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!keep[k]) continue;
        memcpy(d, s + spans[k].name, (size_t)spans[k].name_len);
        d += spans[k].name_len;
        *d++ = ':';
        *d++ = ' ';
        memcpy(d, s + spans[k].value, (size_t)spans[k].value_len);
        d += spans[k].value_len;
        *d++ = '\r';
        *d++ = '\n';
    }
    memcpy(d, "content-length: ", 16);
    memcpy(d + 16, digits + 24 - ndigits, (size_t)ndigits);
    d += 16 + ndigits;
    memcpy(d, "\r\n\r\n", 4);
    memcpy(d + 4, s + body, (size_t)length);
    PyObject *code = PyLong_FromLong(status), *len_obj = PyLong_FromLongLong(length);
    PyObject *result = code && len_obj ? PyTuple_Pack(4, code, out, keep_alive ? Py_True : Py_False,
                                                      len_obj)
                                       : NULL;
    Py_XDECREF(code);
    Py_XDECREF(len_obj);
    Py_DECREF(out);
    return result;
}

static PyMethodDef methods[] = {
    {"split_fields", (PyCFunction)(void (*)(void))split_fields, METH_FASTCALL,
     "split_fields(buf, start, end, max_headers) -> (fields, names) | 0 (malformed) | 1 "
     "(too many lines)"},
    {"strip_fields", (PyCFunction)(void (*)(void))strip_fields, METH_FASTCALL,
     "strip_fields(headers, names, drop) -> list | None"},
    {"request_line", (PyCFunction)(void (*)(void))request_line, METH_FASTCALL,
     "request_line(buf, start, end) -> (method, target, version, next) | None"},
    {"status_line", (PyCFunction)(void (*)(void))status_line, METH_FASTCALL,
     "status_line(buf, start, end) -> (version, status, reason, next) | None"},
    {"valid_host", (PyCFunction)valid_host, METH_O, "valid_host(value) -> bool"},
    {"name_index", (PyCFunction)(void (*)(void))name_index, METH_FASTCALL,
     "name_index(names, key, start) -> int (-1: absent, -2: not a list of bytes)"},
    {"trace_names", (PyCFunction)trace_names, METH_O,
     "trace_names(names) -> int ((first traceparent's index + 1) * 2 + any B3 name; -2)"},
    {"random_hex", (PyCFunction)random_hex, METH_O,
     "random_hex(digits) -> bytes (16 or 32 hex digits of fresh random bits, not all zero)"},
    {"hex_id", (PyCFunction)(void (*)(void))hex_id, METH_FASTCALL,
     "hex_id(value, digits) -> bytes | None"},
    {"traceparent", (PyCFunction)(void (*)(void))traceparent, METH_FASTCALL,
     "traceparent(trace, span, sampled) -> bytes | None (ids as 32 and 16 hex digits)"},
    {"parse_traceparent", (PyCFunction)parse_traceparent, METH_O,
     "parse_traceparent(value) -> (trace, span, sampled) | None (ids as hex digits)"},
    {"render_request", (PyCFunction)(void (*)(void))render_request, METH_FASTCALL,
     "render_request(method, target, version, headers) -> bytes | None"},
    {"render_response", (PyCFunction)(void (*)(void))render_response, METH_FASTCALL,
     "render_response(version, status, reason, headers) -> bytes | None"},
    {"forward_request", (PyCFunction)(void (*)(void))forward_request, METH_FASTCALL,
     "forward_request(method, target, version, headers, names, drop, extra) -> bytes | None"},
    {"forward_response", (PyCFunction)(void (*)(void))forward_response, METH_FASTCALL,
     "forward_response(version, status, reason, headers, names, drop, extra, body) -> bytes | "
     "None"},
    {"block_end", (PyCFunction)(void (*)(void))block_end, METH_FASTCALL,
     "block_end(buf, pos) -> int (-1: no CRLF CRLF from pos)"},
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL,
     "request_head(buf, start, end, max_headers) -> tuple | None"},
    {"response_head", (PyCFunction)(void (*)(void))response_head, METH_FASTCALL,
     "response_head(buf, start, end, max_headers) -> tuple | None"},
    {"relay_response", (PyCFunction)(void (*)(void))relay_response, METH_FASTCALL,
     "relay_response(buf, max_headers, max_head_bytes, drop) -> (status, out, keep_alive, "
     "length) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "proxy.http1._speedups",
    "The request path's hottest byte loops in C (see the source's first comment).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_tables();
    init_host_tables();
    for (int b = 0; b < 256; b++) {
        HEX2[2 * b] = HEX[b >> 4];
        HEX2[2 * b + 1] = HEX[b & 15];
    }
    if (!seed_rng()) {
        PyErr_SetString(PyExc_OSError, "getrandom() gave no seed for trace ids");
        return NULL;
    }
    if (pthread_atfork(NULL, NULL, reseed_in_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    SP = PyBytes_FromString(" ");
    HTTP_SLASH = PyBytes_FromString(" HTTP/");
    HTTP_ONLY = PyBytes_FromString("HTTP/");
    V11 = PyBytes_FromString("1.1");
    V10 = PyBytes_FromString("1.0");
    REASON_OK = PyBytes_FromString("OK");
    if (SP == NULL || HTTP_SLASH == NULL || HTTP_ONLY == NULL || V11 == NULL || V10 == NULL ||
        REASON_OK == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
