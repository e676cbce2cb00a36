/* The shim's call callbacks in C (the Python callbacks of _monitor.py are their tested twin), and a C
   front for the exception callbacks (ExceptionCallbacks, below).

   Five types, nothing else:
   - RecordBuffer: the pending records of one recorder generation, 64-bit words (timestamp, word)
     in a preallocated array. To the Python code that fills it on the slow path and to the sender
     that drains it, it behaves like the list the Python callbacks fill: len() counts words,
     extend() appends, buf[:n] gives the first n words (as bytes: array('Q', buf[:n]) reads them
     in one copy), del buf[:n] removes them.
   - CodeKeys: the keys of the code objects the callbacks have met, by the code's identity, in a C
     hash table: a copy of CodeTable.call_keys (or of CodeTable.keys, for the exception callbacks)
     that takes no Python object to read.
   - Callbacks: the six call callbacks (bound methods, registered with
     sys.monitoring.register_callback). The hot path creates no Python object: the code key comes
     from the CodeKeys table, the thread key from a thread-local variable, the record is written
     into the buffer. Whatever is not there (a new code object, a new thread, a full buffer, the
     shim's own code) goes to the Python slow path, which fills the dictionaries this module reads.
   - ExceptionCallbacks: RAISE, RERAISE, EXCEPTION_HANDLED and PY_UNWIND for the exception tracker: the
     events of control-flow idioms ended in C, every other event passed to the Python callback.
   - Outbox: what one sender tick writes, framed in memory kept from tick to tick, and the write with
     the GIL released once.

   Only the GIL build is supported (the Python path has the same limit): every field is read and
   written with the GIL held, so a callback and a generation switch never overlap. The one exception
   is an Outbox's send, which reads its own memory with the GIL released: only the sender's thread
   uses an outbox.

   The memory of these types comes from the C library's allocator, not from PyMem_Raw*: it is the
   shim's, not the program's, and tracemalloc (which hooks PyMem_Raw*) must not count it: a buffer
   that grows while a program measures its own memory would show in its figures. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#ifdef Py_GIL_DISABLED
#error "telemetry_shim._native supports GIL builds only"
#endif

/* What _native_path.py expects of this module: raised with every change of its interface, so that
   an extension built from another version of the shim is never used with this one. */
#define NATIVE_API_VERSION 11

#define KIND_START 1
#define KIND_RESUME 2
#define KIND_THROW 3
#define KIND_RETURN 4
#define KIND_YIELD 5
#define KIND_UNWIND 6

/* A code key is code_id << 8 (bits 8-39). */
#define CODE_KEY_MASK UINT64_C(0x000000FFFFFFFF00)

/* Every switch of any Callbacks object takes a new generation; a thread's cached key is valid
   while its generation is the current one of the Callbacks object it is used with. */
static uint64_t last_generation = 0;
static _Thread_local uint64_t thread_generation = 0;
static _Thread_local uint64_t thread_key_cache = 0;
/* The thread state the cached key belongs to: a new thread may get a finished thread's stack,
   and with it its thread-local variables, unreset; thread state ids are never reused. */
static _Thread_local uint64_t thread_state_id = 0;

static inline uint64_t
now_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t = 0;
    (void)PyTime_PerfCounterRaw(&t);
    return (uint64_t)t;
#else
    return (uint64_t)_PyTime_GetPerfCounter();
#endif
}

/* ---- RecordBuffer ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint64_t *words;
    Py_ssize_t length;     /* words in use */
    Py_ssize_t allocated;  /* words allocated */
} RecordBuffer;

static PyTypeObject *RecordBuffer_Type;

static int
buffer_reserve(RecordBuffer *self, Py_ssize_t needed)
{
    if (needed <= self->allocated) {
        return 0;
    }
    Py_ssize_t size = self->allocated > 0 ? self->allocated : 1024;
    while (size < needed) {
        if (size > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(uint64_t)) {
            PyErr_NoMemory();
            return -1;
        }
        size *= 2;
    }
    uint64_t *words = realloc(self->words, (size_t)size * sizeof(uint64_t));
    if (words == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->words = words;
    self->allocated = size;
    return 0;
}

static PyObject *
RecordBuffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t capacity = 0;
    static char *keywords[] = {"capacity_words", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:RecordBuffer", keywords, &capacity)) {
        return NULL;
    }
    if (capacity < 2) {
        PyErr_SetString(PyExc_ValueError, "capacity_words must be at least 2");
        return NULL;
    }
    RecordBuffer *self = (RecordBuffer *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (buffer_reserve(self, capacity) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
RecordBuffer_dealloc(RecordBuffer *self)
{
    PyTypeObject *type = Py_TYPE(self);
    free(self->words);
    self->words = NULL;
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static Py_ssize_t
RecordBuffer_len(RecordBuffer *self)
{
    return self->length;
}

/* extend(iterable of ints): all or nothing, so a bad value never leaves half a record. */
static PyObject *
RecordBuffer_extend(RecordBuffer *self, PyObject *iterable)
{
    PyObject *seq = PySequence_Fast(iterable, "extend() takes an iterable of integers");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count > PY_SSIZE_T_MAX - self->length || buffer_reserve(self, self->length + count) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        Py_DECREF(seq);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint64_t *out = self->words + self->length;
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned long long value = PyLong_AsUnsignedLongLong(items[i]);
        if (value == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        out[i] = (uint64_t)value;
    }
    self->length += count;
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

static int
buffer_slice(RecordBuffer *self, PyObject *key, Py_ssize_t *start, Py_ssize_t *stop)
{
    Py_ssize_t step;
    if (PySlice_Unpack(key, start, stop, &step) < 0) {
        return -1;
    }
    if (step != 1) {
        PyErr_SetString(PyExc_ValueError, "RecordBuffer slices take no step");
        return -1;
    }
    PySlice_AdjustIndices(self->length, start, stop, step);
    if (*stop < *start) {
        *stop = *start;
    }
    return 0;
}

static PyObject *
RecordBuffer_subscript(RecordBuffer *self, PyObject *key)
{
    if (PyIndex_Check(key)) {
        Py_ssize_t index = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (index == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (index < 0) {
            index += self->length;
        }
        if (index < 0 || index >= self->length) {
            PyErr_SetString(PyExc_IndexError, "RecordBuffer index out of range");
            return NULL;
        }
        return PyLong_FromUnsignedLongLong(self->words[index]);
    }
    if (!PySlice_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "RecordBuffer indices are integers or slices");
        return NULL;
    }
    Py_ssize_t start, stop;
    if (buffer_slice(self, key, &start, &stop) < 0) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)(self->words + start),
                                     (stop - start) * (Py_ssize_t)sizeof(uint64_t));
}

static int
RecordBuffer_ass_subscript(RecordBuffer *self, PyObject *key, PyObject *value)
{
    if (value != NULL || !PySlice_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "a RecordBuffer only supports `del buf[start:stop]`");
        return -1;
    }
    Py_ssize_t start, stop;
    if (buffer_slice(self, key, &start, &stop) < 0) {
        return -1;
    }
    memmove(self->words + start, self->words + stop, (size_t)(self->length - stop) * sizeof(uint64_t));
    self->length -= stop - start;
    return 0;
}

static PyMethodDef RecordBuffer_methods[] = {
    {"extend", (PyCFunction)RecordBuffer_extend, METH_O, "Appends 64-bit words (timestamp, word pairs)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot RecordBuffer_slots[] = {
    {Py_tp_doc, "Pending records of one generation: 64-bit words in a preallocated array."},
    {Py_tp_new, RecordBuffer_new},
    {Py_tp_dealloc, RecordBuffer_dealloc},
    {Py_tp_methods, RecordBuffer_methods},
    {Py_sq_length, RecordBuffer_len},
    {Py_mp_length, RecordBuffer_len},
    {Py_mp_subscript, RecordBuffer_subscript},
    {Py_mp_ass_subscript, RecordBuffer_ass_subscript},
    {0, NULL},
};

static PyType_Spec RecordBuffer_spec = {
    .name = "telemetry_shim._native.RecordBuffer",
    .basicsize = sizeof(RecordBuffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = RecordBuffer_slots,
};

/* ---- CodeKeys ------------------------------------------------------------------------------ */

/* identity(code) -> call key, copied from CodeTable.call_keys the first time the callbacks meet a code
   object, so that the next events of that code read it without creating an int for the dict lookup.

   Open addressing (linear probing, at most half full, deletion by backward shift), growing by doubling
   up to `max_entries` codes; past that, a code not in the table is looked up in the dict on each event
   (correct, only slower). Exact for every code it holds, unlike a direct-mapped cache, where two hot
   codes on one slot would evict each other on every call.

   No reference to the code objects: an entry leaves when its code dies, through the code's lifeline
   (CodeTable.forget_also: the weakref callback calls forget(identity) while the code is deallocated,
   before its memory can be given to another object), so an identity here always means the code its
   key was copied for. Entries are only ever copied from call_keys, whose entries have the same
   lifelines (or belong to immortal code, which never dies), and call_keys values never change while
   their code lives. */

typedef struct {
    Py_ssize_t identity;  /* 0: an empty slot (no object has identity 0) */
    uint64_t key;
} CodeKeyEntry;

typedef struct {
    PyObject_HEAD
    CodeKeyEntry *entries;  /* NULL until the first code is added, and once released */
    size_t mask;            /* slots - 1, slots a power of two */
    Py_ssize_t count;
    Py_ssize_t max_entries;
} CodeKeys;

#define CODE_KEYS_FIRST_SLOTS 1024

static PyTypeObject *CodeKeys_Type;

static inline size_t
code_keys_slot(Py_ssize_t identity, size_t mask)
{
    /* Fibonacci hashing: an address's low bits are alignment, its high bits barely change. */
    return (size_t)(((uint64_t)identity * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & mask;
}

static inline int
code_keys_find(const CodeKeys *table, Py_ssize_t identity, uint64_t *key)
{
    const CodeKeyEntry *entries = table->entries;
    if (entries == NULL) {
        return 0;
    }
    size_t mask = table->mask;
    for (size_t i = code_keys_slot(identity, mask);; i = (i + 1) & mask) {
        if (entries[i].identity == identity) {
            *key = entries[i].key;
            return 1;
        }
        if (entries[i].identity == 0) {
            return 0;
        }
    }
}

static void
code_keys_put(CodeKeyEntry *entries, size_t mask, Py_ssize_t identity, uint64_t key)
{
    size_t i = code_keys_slot(identity, mask);
    while (entries[i].identity != 0) {
        i = (i + 1) & mask;
    }
    entries[i].identity = identity;
    entries[i].key = key;
}

/* Adds a code not in the table. Nothing happens when the table is at its limit or its memory cannot be
   had: the code is then looked up in the dict, as every code was before it had a table. */
static void
code_keys_add(CodeKeys *table, Py_ssize_t identity, uint64_t key)
{
    if (table->count >= table->max_entries) {
        return;
    }
    size_t slots = table->entries == NULL ? 0 : table->mask + 1;
    if ((size_t)(table->count + 1) * 2 > slots) {
        size_t grown = slots == 0 ? CODE_KEYS_FIRST_SLOTS : slots * 2;
        CodeKeyEntry *entries = calloc(grown, sizeof(CodeKeyEntry));
        if (entries == NULL) {
            return;
        }
        for (size_t i = 0; i < slots; i++) {
            if (table->entries[i].identity != 0) {
                code_keys_put(entries, grown - 1, table->entries[i].identity, table->entries[i].key);
            }
        }
        free(table->entries);
        table->entries = entries;
        table->mask = grown - 1;
    }
    code_keys_put(table->entries, table->mask, identity, key);
    table->count++;
}

static void
code_keys_remove(CodeKeys *table, Py_ssize_t identity)
{
    CodeKeyEntry *entries = table->entries;
    if (entries == NULL || identity == 0) {
        return;
    }
    size_t mask = table->mask;
    size_t hole = code_keys_slot(identity, mask);
    while (entries[hole].identity != identity) {
        if (entries[hole].identity == 0) {
            return;
        }
        hole = (hole + 1) & mask;
    }
    /* Backward shift: every later entry of the run that may no longer be reachable from its home
       slot across the hole moves into it, so that no tombstone is left behind. */
    for (size_t next = (hole + 1) & mask; entries[next].identity != 0; next = (next + 1) & mask) {
        size_t home = code_keys_slot(entries[next].identity, mask);
        /* Stays when its home lies cyclically in (hole, next]. */
        int stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
        if (!stays) {
            entries[hole] = entries[next];
            hole = next;
        }
    }
    entries[hole].identity = 0;
    entries[hole].key = 0;
    table->count--;
}

static void
code_keys_release(CodeKeys *table)
{
    free(table->entries);
    table->entries = NULL;
    table->mask = 0;
    table->count = 0;
}

static PyObject *
CodeKeys_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t max_entries = 0;
    static char *keywords[] = {"max_entries", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:CodeKeys", keywords, &max_entries)) {
        return NULL;
    }
    if (max_entries < 0 || (size_t)max_entries > ((size_t)1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "max_entries must be between 0 and 2**30");
        return NULL;
    }
    CodeKeys *self = (CodeKeys *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->max_entries = max_entries;
    return (PyObject *)self;
}

static void
CodeKeys_dealloc(CodeKeys *self)
{
    PyTypeObject *type = Py_TYPE(self);
    code_keys_release(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static Py_ssize_t
CodeKeys_len(CodeKeys *self)
{
    return self->count;
}

/* forget(identity): a lifeline's step, run inside the dying code's deallocation. */
static PyObject *
CodeKeys_forget(CodeKeys *self, PyObject *identity)
{
    Py_ssize_t value = PyLong_AsSsize_t(identity);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    code_keys_remove(self, value);
    Py_RETURN_NONE;
}

static PyObject *
CodeKeys_get(CodeKeys *self, PyObject *identity)
{
    Py_ssize_t value = PyLong_AsSsize_t(identity);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    uint64_t key = 0;
    if (value == 0 || !code_keys_find(self, value, &key)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(key);
}

static PyObject *
CodeKeys_get_slots(CodeKeys *self, void *closure)
{
    return PyLong_FromSize_t(self->entries == NULL ? 0 : self->mask + 1);
}

static PyMethodDef CodeKeys_methods[] = {
    {"forget", (PyCFunction)CodeKeys_forget, METH_O, "forget(identity): the code with this identity died."},
    {"get", (PyCFunction)CodeKeys_get, METH_O, "get(identity): the call key held for it, or None."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef CodeKeys_getset[] = {
    {"slots", (getter)CodeKeys_get_slots, NULL, "slots allocated (16 bytes each)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot CodeKeys_slots[] = {
    {Py_tp_doc, "identity(code) -> call key, a C copy of CodeTable.call_keys for the call callbacks."},
    {Py_tp_new, CodeKeys_new},
    {Py_tp_dealloc, CodeKeys_dealloc},
    {Py_tp_methods, CodeKeys_methods},
    {Py_tp_getset, CodeKeys_getset},
    {Py_sq_length, CodeKeys_len},
    {0, NULL},
};

static PyType_Spec CodeKeys_spec = {
    .name = "telemetry_shim._native.CodeKeys",
    .basicsize = sizeof(CodeKeys),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = CodeKeys_slots,
};

/* ---- Callbacks ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    RecordBuffer *buffer;      /* this generation's records */
    PyObject *thread_keys;     /* dict: ident -> thread key (this generation) */
    PyObject *thread_key_get;  /* thread_keys.get, what the slow path takes */
    PyObject *call_keys;       /* dict: identity(code) -> call key (CodeTable.call_keys) */
    CodeKeys *code_keys;       /* the keys of call_keys the callbacks have met, read without the dict */
    PyObject *lifelines;       /* what removes call_keys' and code_keys' entries as codes die, or NULL */
    PyObject *slow_path;       /* slow_path(code, kind, buf, thread_key) -> None or DISABLE */
    PyObject *unwind_hook;     /* hook(code, offset, exception) before an UNWIND record, or NULL */
    PyObject *failed;          /* failed(exc) -> true to re-raise (CallbackFailures.failed) */
    Py_ssize_t limit;          /* words: a fuller buffer drops the event */
    Py_ssize_t dropped;        /* events dropped here, a full buffer (read and reset by the recorder) */
    uint64_t generation;
    int recording;             /* the UNWIND callback records (burst mode: a window is open) */
} Callbacks;

static PyTypeObject *Callbacks_Type;
static PyObject *kind_numbers[KIND_UNWIND + 1];

/* The exception set now, raised by a Python callback or a failure here: what the Python callbacks
   do with it (`failed` is CallbackFailures.failed; True re-raises it into the program). */
static PyObject *
apply_failure_policy(PyObject *failed)
{
    PyObject *exc = PyErr_GetRaisedException();
    if (exc == NULL || failed == NULL) {
        Py_XDECREF(exc);
        Py_RETURN_NONE;
    }
    PyObject *verdict = PyObject_CallOneArg(failed, exc);
    int reraise = 0;
    if (verdict == NULL) {
        PyErr_Clear();  /* the policy itself failed: never surface that in the program */
    }
    else {
        reraise = PyObject_IsTrue(verdict);
        Py_DECREF(verdict);
        if (reraise < 0) {
            PyErr_Clear();
            reraise = 0;
        }
    }
    if (reraise) {
        PyErr_SetRaisedException(exc);
        return NULL;
    }
    Py_DECREF(exc);
    Py_RETURN_NONE;
}

static PyObject *
callback_failed(Callbacks *self)
{
    return apply_failure_policy(self->failed);
}

static PyObject *
call_slow_path(Callbacks *self, PyObject *code, int kind)
{
    /* The slow path runs Python code: another thread may switch generations meanwhile, so it
       holds its own references to this generation's objects. */
    RecordBuffer *buffer = self->buffer;
    PyObject *key_get = self->thread_key_get;
    /* The slow path is where this thread's key is (re)assigned (a new thread on a finished
       one's ident, a thread seeded again): the next event reads it from the table. */
    thread_generation = 0;
    Py_INCREF(buffer);
    Py_INCREF(key_get);
    PyObject *args[4] = {code, kind_numbers[kind], (PyObject *)buffer, key_get};
    PyObject *result = PyObject_Vectorcall(self->slow_path, args, 4, NULL);
    Py_DECREF(key_get);
    Py_DECREF(buffer);
    if (result == NULL) {
        return callback_failed(self);
    }
    return result;
}

/* The key CodeTable.call_keys uses for an object: _tables.identity, which is object.__hash__ (the
   address rotated by 4 bits, as CPython's pointer hash computes it), not id(): id() raises an audit
   event the program would see. */
static inline Py_ssize_t
pointer_identity(PyObject *object)
{
    size_t bits = (size_t)(uintptr_t)object;
    bits = (bits >> 4) | (bits << (8 * sizeof(size_t) - 4));
    Py_ssize_t hash = (Py_ssize_t)bits;
    return hash == -1 ? -2 : hash;
}

/* The key of `code` into *key, from `table` (a C copy of `keys`), else from the dict `keys` (then copied
   into `table`). Returns 1, 0 when the code is not known yet (a slow path defines it), -1 with an
   exception set.
   Not cached in the code object's co_extra: setting an extra grows the code's extra array to every index
   registered so far, and CPython calls every registered free function on each slot when the code is
   freed, so another user's free function (test_code's, after its module was unloaded) ran on code
   objects it never touched and crashed the process. */
static inline int
code_key_from(CodeKeys *table, PyObject *keys, PyObject *code, uint64_t *key)
{
    Py_ssize_t identity = pointer_identity(code);
    if (code_keys_find(table, identity, key)) {
        return 1;
    }
    PyObject *id = PyLong_FromSsize_t(identity);
    if (id == NULL) {
        return -1;
    }
    PyObject *value = PyDict_GetItemWithError(keys, id);  /* borrowed */
    Py_DECREF(id);
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    unsigned long long found = PyLong_AsUnsignedLongLong(value);
    if (found == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *key = (uint64_t)found & CODE_KEY_MASK;
    code_keys_add(table, identity, *key);
    return 1;
}

/* The call key of `code` into *key (0: not recorded), from CodeKeys or CodeTable.call_keys. */
static inline int
code_key_of(Callbacks *self, PyObject *code, uint64_t *key)
{
    return code_key_from(self->code_keys, self->call_keys, code, key);
}

/* This thread's key in this generation into *key (0 when unknown: the slow path registers the
   thread). Returns 0, or -1 with an exception set. */
static inline int
thread_key_of(Callbacks *self, uint64_t *key)
{
    uint64_t state_id = PyThreadState_GetID(PyThreadState_Get());
    if (thread_generation == self->generation && thread_state_id == state_id) {
        *key = thread_key_cache;
        return 0;
    }
    *key = 0;
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ident == NULL) {
        return -1;
    }
    PyObject *value = PyDict_GetItemWithError(self->thread_keys, ident);  /* borrowed */
    Py_DECREF(ident);
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    unsigned long long found = PyLong_AsUnsignedLongLong(value);
    if (found == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (found != 0) {
        thread_key_cache = found;
        thread_generation = self->generation;
        thread_state_id = state_id;
    }
    *key = found;
    return 0;
}

static inline PyObject *
record_event(Callbacks *self, PyObject *code, int kind)
{
    uint64_t ck = 0, tk = 0;
    int known = code_key_of(self, code, &ck);
    if (known < 0 || thread_key_of(self, &tk) < 0) {
        return callback_failed(self);
    }
    RecordBuffer *buffer = self->buffer;
    if (known && ck && tk) {
        if (buffer->length < self->limit && buffer->length + 2 <= buffer->allocated) {
            uint64_t *out = buffer->words + buffer->length;
            out[0] = now_ns();
            out[1] = tk | ck | (uint64_t)kind;
            buffer->length += 2;
        }
        else {
            /* The sender is behind: dropped and counted here, at no more cost than a record. */
            self->dropped++;
        }
        Py_RETURN_NONE;
    }
    return call_slow_path(self, code, kind);
}

static inline int
check_args(Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "a sys.monitoring callback takes %zd arguments, not %zd", expected, nargs);
        return -1;
    }
    return 0;
}

#define CALLBACK(name, kind, nargs_expected)                                                     \
    static PyObject *name(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)              \
    {                                                                                            \
        if (check_args(nargs, nargs_expected) < 0) {                                             \
            return NULL;                                                                         \
        }                                                                                        \
        return record_event(self, args[0], kind);                                                \
    }

CALLBACK(Callbacks_py_start, KIND_START, 2)
CALLBACK(Callbacks_py_resume, KIND_RESUME, 2)
CALLBACK(Callbacks_py_throw, KIND_THROW, 3)
CALLBACK(Callbacks_py_return, KIND_RETURN, 3)
CALLBACK(Callbacks_py_yield, KIND_YIELD, 3)

static PyObject *
Callbacks_py_unwind(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 3) < 0) {
        return NULL;
    }
    if (self->unwind_hook != NULL) {
        /* The exception tracker's PY_UNWIND callback, which applies the failure policy itself:
           an exception out of it is one the policy re-raises. */
        PyObject *hook = self->unwind_hook;
        Py_INCREF(hook);
        PyObject *result = PyObject_Vectorcall(hook, args, 3, NULL);
        Py_DECREF(hook);
        if (result == NULL) {
            return NULL;
        }
        Py_DECREF(result);
        if (!self->recording) {
            Py_RETURN_NONE;
        }
    }
    return record_event(self, args[0], KIND_UNWIND);
}

static uint64_t
next_generation(void)
{
    return ++last_generation;
}

/* switch(buffer, thread_keys, recording): this generation's buffer and thread table, in one C
   call (no other thread runs in between). */
static PyObject *
Callbacks_switch(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 3) < 0) {
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], RecordBuffer_Type) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "switch(RecordBuffer, dict, recording)");
        return NULL;
    }
    int recording = PyObject_IsTrue(args[2]);
    if (recording < 0) {
        return NULL;
    }
    PyObject *key_get = PyObject_GetAttrString(args[1], "get");
    if (key_get == NULL) {
        return NULL;
    }
    RecordBuffer *old_buffer = self->buffer;
    PyObject *old_keys = self->thread_keys;
    PyObject *old_get = self->thread_key_get;
    self->buffer = (RecordBuffer *)Py_NewRef(args[0]);
    self->thread_keys = Py_NewRef(args[1]);
    self->thread_key_get = key_get;
    self->recording = recording;
    self->generation = next_generation();
    Py_XDECREF(old_buffer);
    Py_XDECREF(old_keys);
    Py_XDECREF(old_get);
    Py_RETURN_NONE;
}

static PyObject *
Callbacks_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *buffer, *thread_keys, *call_keys, *code_keys, *slow_path, *unwind_hook, *failed;
    PyObject *lifelines = Py_None;
    Py_ssize_t limit;
    static char *keywords[] = {"buffer", "thread_keys", "call_keys", "code_keys", "slow_path", "unwind_hook",
                               "failed", "limit", "lifelines", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!OOOn|O:Callbacks", keywords, RecordBuffer_Type, &buffer,
                                     &PyDict_Type, &thread_keys, &PyDict_Type, &call_keys, CodeKeys_Type,
                                     &code_keys, &slow_path, &unwind_hook, &failed, &limit, &lifelines)) {
        return NULL;
    }
    if (!PyCallable_Check(slow_path) || !PyCallable_Check(failed)
        || (unwind_hook != Py_None && !PyCallable_Check(unwind_hook))) {
        PyErr_SetString(PyExc_TypeError, "slow_path, failed and unwind_hook (or None) must be callable");
        return NULL;
    }
    PyObject *key_get = PyObject_GetAttrString(thread_keys, "get");
    if (key_get == NULL) {
        return NULL;
    }
    Callbacks *self = (Callbacks *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(key_get);
        return NULL;
    }
    self->buffer = (RecordBuffer *)Py_NewRef(buffer);
    self->thread_keys = Py_NewRef(thread_keys);
    self->thread_key_get = key_get;
    self->call_keys = Py_NewRef(call_keys);
    self->code_keys = (CodeKeys *)Py_NewRef(code_keys);
    /* Held so that call_keys and code_keys are kept true for as long as these callbacks can run, even
       should the CodeTable that armed the lifelines be gone. */
    self->lifelines = lifelines == Py_None ? NULL : Py_NewRef(lifelines);
    self->slow_path = Py_NewRef(slow_path);
    self->unwind_hook = unwind_hook == Py_None ? NULL : Py_NewRef(unwind_hook);
    self->failed = Py_NewRef(failed);
    self->limit = limit;
    self->recording = 1;
    self->generation = next_generation();
    return (PyObject *)self;
}

static int
Callbacks_traverse(Callbacks *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->buffer);
    Py_VISIT(self->thread_keys);
    Py_VISIT(self->thread_key_get);
    Py_VISIT(self->call_keys);
    Py_VISIT(self->lifelines);  /* code_keys holds no object */
    Py_VISIT(self->slow_path);
    Py_VISIT(self->unwind_hook);
    Py_VISIT(self->failed);
    return 0;
}

static int
Callbacks_clear(Callbacks *self)
{
    /* A cleared object must still be safe to call (a callback may still be registered): it then
       sends every event to a slow path that is gone, which is a failure, never a crash. */
    self->limit = 0;
    Py_CLEAR(self->unwind_hook);
    Py_CLEAR(self->thread_key_get);
    Py_CLEAR(self->thread_keys);
    Py_CLEAR(self->call_keys);
    if (self->code_keys != NULL) {
        /* Its memory goes now: the lifelines may keep the object itself a while longer. */
        code_keys_release(self->code_keys);
        Py_CLEAR(self->code_keys);
    }
    Py_CLEAR(self->lifelines);
    Py_CLEAR(self->slow_path);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->buffer);
    return 0;
}

static void
Callbacks_dealloc(Callbacks *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Callbacks_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* Guards for a cleared object (see Callbacks_clear): every entry point checks it. */
static int
callbacks_alive(Callbacks *self)
{
    if (self->buffer == NULL || self->slow_path == NULL || self->failed == NULL || self->call_keys == NULL
        || self->code_keys == NULL || self->thread_keys == NULL || self->thread_key_get == NULL) {
        return 0;
    }
    return 1;
}

#define GUARDED(name, inner)                                                                     \
    static PyObject *name(Callbacks *self, PyObject *const *args, Py_ssize_t nargs)              \
    {                                                                                            \
        if (!callbacks_alive(self)) {                                                            \
            Py_RETURN_NONE;                                                                      \
        }                                                                                        \
        return inner(self, args, nargs);                                                         \
    }

GUARDED(guarded_py_start, Callbacks_py_start)
GUARDED(guarded_py_resume, Callbacks_py_resume)
GUARDED(guarded_py_throw, Callbacks_py_throw)
GUARDED(guarded_py_return, Callbacks_py_return)
GUARDED(guarded_py_yield, Callbacks_py_yield)
GUARDED(guarded_py_unwind, Callbacks_py_unwind)

static PyMethodDef Callbacks_methods[] = {
    {"py_start", (PyCFunction)(void (*)(void))guarded_py_start, METH_FASTCALL, "PY_START(code, offset)"},
    {"py_resume", (PyCFunction)(void (*)(void))guarded_py_resume, METH_FASTCALL, "PY_RESUME(code, offset)"},
    {"py_throw", (PyCFunction)(void (*)(void))guarded_py_throw, METH_FASTCALL, "PY_THROW(code, offset, exception)"},
    {"py_return", (PyCFunction)(void (*)(void))guarded_py_return, METH_FASTCALL, "PY_RETURN(code, offset, value)"},
    {"py_yield", (PyCFunction)(void (*)(void))guarded_py_yield, METH_FASTCALL, "PY_YIELD(code, offset, value)"},
    {"py_unwind", (PyCFunction)(void (*)(void))guarded_py_unwind, METH_FASTCALL,
     "PY_UNWIND(code, offset, exception)"},
    {"switch", (PyCFunction)(void (*)(void))Callbacks_switch, METH_FASTCALL,
     "switch(buffer, thread_keys, recording): a new generation, in one step."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Callbacks_members[] = {
    {"dropped", Py_T_PYSSIZET, offsetof(Callbacks, dropped), 0, "events dropped for a full buffer"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Callbacks_slots[] = {
    {Py_tp_members, Callbacks_members},
    {Py_tp_doc, "The call callbacks of one recorder, writing 16-byte records into a RecordBuffer."},
    {Py_tp_new, Callbacks_new},
    {Py_tp_dealloc, Callbacks_dealloc},
    {Py_tp_traverse, Callbacks_traverse},
    {Py_tp_clear, Callbacks_clear},
    {Py_tp_methods, Callbacks_methods},
    {0, NULL},
};

static PyType_Spec Callbacks_spec = {
    .name = "telemetry_shim._native.Callbacks",
    .basicsize = sizeof(Callbacks),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Callbacks_slots,
};

/* ---- Counter ----------------------------------------------------------------------------------- */

/* itertools.count() for a site's handled tally (_tables.AtomicCounter): next() gives the count so far and adds one,
   and the C callbacks add one without making an int (count_as_handled). */
typedef struct {
    PyObject_HEAD
    long long next;
} Counter;

static PyTypeObject *Counter_Type;

static PyObject *
Counter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Counter", keywords)) {
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static PyObject *
Counter_iternext(Counter *self)
{
    return PyLong_FromLongLong(self->next++);
}

static PyObject *
Counter_repr(Counter *self)
{
    return PyUnicode_FromFormat("Counter(%lld)", self->next);
}

static void
Counter_dealloc(Counter *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyType_Slot Counter_slots[] = {
    {Py_tp_doc, "Counter(): an endless count from 0, as itertools.count(), that the C callbacks advance in place."},
    {Py_tp_new, Counter_new},
    {Py_tp_dealloc, Counter_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, Counter_iternext},
    {Py_tp_repr, Counter_repr},
    {0, NULL},
};

static PyType_Spec Counter_spec = {
    .name = "telemetry_shim._native.Counter",
    .basicsize = sizeof(Counter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Counter_slots,
};

/* ---- ExceptionCallbacks ---------------------------------------------------------------------- */

/* The exception tracker's RAISE, RERAISE, EXCEPTION_HANDLED and PY_UNWIND callbacks, for the events that
   control-flow idioms raise by the thousand (a generator closed at a yield: `any()` over a generator
   expression that stops early). They take in C only the cases the Python callbacks
   (_exceptions/program_threads.py, FlightTable) end at once, with the same state, read from the
   FlightTable at each event (its dicts are replaced after a fork); every other event goes to the Python
   callback, with the same arguments:
   - RAISE of a GeneratorExit (exactly) with a one-entry traceback, at a (code key, offset) of
     closed_points, or of a new StopIteration at a (code key, offset, type) of swallow_points (the
     raising FOR_ITER or SEND ends it in C), or of a new exception with a one-entry traceback at a
     (code key, offset, type) of empty_handler_points whose names still catch it (an `except C: pass`
     in the raising frame), on a program thread with no handled exception to settle, whose site is
     past its first detailed exceptions and within its detail interval: counted as handled on the site,
     as FlightTable.on_raise does (sampling is left to Python);
   - RERAISE of a GeneratorExit, EXCEPTION_HANDLED and PY_UNWIND of any exception, that has no flight
     (its identity not in `inflight`): nothing to do, as in the Python callbacks;
   - the common path of an exception raised and handled: RAISE of a new exception at a (code key, offset,
     type) of raise_points, whose site is past its first detailed exceptions and within its detail
     interval, starts a counted flight (a Flight with the fields its fate needs, nothing else); its
     EXCEPTION_HANDLED marks it handled and pending on its thread; the thread's next RAISE, outside any
     handler, concludes it as handled (counted on its site), as FlightTable.on_raise and on_handled do;
   - a counted flight that propagates: its PY_UNWIND out of a frame of the program (one more frame unwound, and the
     Python caller it unwinds into), its RAISE in that caller (its traceback followed from there on), its RERAISE
     with the traceback it had (a bare `raise` in its handler, the end of a `finally` block) and its RAISE inside its
     own handler (`raise error`), as FlightTable's on_unwind, on_raise and on_reraise do; a StopIteration that the
     caller's loop ends, and a coroutine's unwind until asyncio's handler is hooked, go to Python.
   No reference to the exception, its traceback or the code is kept past the callback. */

static PyObject *str_inflight, *str_closed_points, *str_swallow_points, *str_empty_handler_points,
    *str_pending_by_ident, *str_ignored_idents, *str_dirty_sites, *str_detailed, *str_last_detail_ns,
    *str_handled_counter, *str_dirty, *str_type_ref, *str_first_detailed, *str_detail_interval,
    *str_swallowing_opcodes, *str_site_class, *str_raise_points, *str_flight_class, *str_handled_state,
    *str_max_in_flight, *str_bootstrap_inner, *str_wire, *str_fate_handled, *str_exc_id, *str_tb_id, *str_ident,
    *str_site, *str_last_ns, *str_pending, *str_state, *str_fate, *str_escaped_thread, *str_type_id,
    *str_asyncio_hooked, *str_asyncio_base_events, *str_conclude, *str_slots, *str_propagating_state,
    *str_stop_iteration, *str_frames_unwound, *str_outermost, *str_caller_id, *str_caller_code_id, *str_caller_lasti,
    *str_coroutine, *str_reraises, *str_max_handled_depth;

/* An int made once for a value that recurs: the thread's ident, and identities (the exception a RAISE starts a flight
   for is met again at its EXCEPTION_HANDLED; freed, the next one is often made at the same address). */
typedef struct {
    unsigned long long bits;
    PyObject *object;  /* the int of `bits`, or NULL */
} RecurringInt;

/* The FlightTable's dicts of points, looked up at every RAISE: raise_points, swallow_points and
   empty_handler_points by (code key, offset, id(cls)), closed_points by (code key, offset). */
enum { RAISE_POINTS, SWALLOW_POINTS, EMPTY_HANDLER_POINTS, CLOSED_POINTS, POINT_DICTS };

/* A point met, in a direct-mapped table: its keys, made once (the tuple and its ints cost more than the lookup), and
   what each dict held there when last looked up, valid while that dict's version is the one it had then
   (dict_version). The keys are functions of the values compared, so a hit is always the key a new tuple would be.
   The entries are borrowed: no entry leaves its dict without a new version. */
#define POINT_KEY_SLOTS 256
typedef struct {
    uint64_t code_key;
    Py_ssize_t offset;
    PyTypeObject *cls;       /* compared, never dereferenced */
    PyObject *point;         /* (code key, offset, id(cls)), or NULL */
    PyObject *closed_point;  /* (code key, offset), or NULL: made at the first lookup in closed_points */
    uint64_t versions[POINT_DICTS];  /* each dict's version when its entry was looked up; 0: not looked up */
    PyObject *entries[POINT_DICTS];  /* borrowed; Py_None: absent */
} PointKey;

typedef struct {
    PyObject_HEAD
    PyObject *table;        /* the FlightTable: inflight, the points, dirty_sites */
    PyObject *limits;       /* program_threads: FIRST_DETAILED_PER_SITE, SITE_DETAIL_INTERVAL_NS,
                               SWALLOWS_STOP_ITERATION */
    PyObject *keys;         /* dict: identity(code) -> key (CodeTable.keys, exception locations) */
    CodeKeys *code_keys;    /* the keys of `keys` met so far, read without the dict */
    PyObject *lifelines;    /* what removes the entries of keys and code_keys as codes die, or NULL */
    PyObject *on_raise;     /* the Python callbacks, (code, offset, exception) */
    PyObject *on_reraise;
    PyObject *on_handled;
    PyObject *on_unwind;
    PyObject *failed;       /* CallbackFailures.failed */
    /* The table's containers, read without an attribute lookup per event: the table never rebinds them
       (reset_after_fork clears them in place). */
    PyObject *inflight;              /* dict */
    PyObject *pending_by_ident;      /* dict */
    PyObject *ignored_idents;        /* a dict (or a container) of thread idents */
    PyObject *point_dicts[POINT_DICTS];  /* dicts: raise_points, swallow_points, empty_handler_points, closed_points */
    PyObject *dirty_sites;           /* list */
    /* program_threads.Site, and the offsets of the slots read at every counted RAISE (as member_get reads
       them, without the attribute lookup); another class is read through getattr. */
    PyTypeObject *site_type;
    Py_ssize_t site_detailed, site_last_detail_ns, site_handled_counter, site_dirty, site_type_ref, site_type_id,
        site_stop_iteration;
    /* The counted flights: program_threads.Flight, HANDLED, MAX_IN_FLIGHT, _THREAD_BOOTSTRAP_INNER_CODE (or None)
       and _wire.FATE_HANDLED. */
    PyTypeObject *flight_type;
    /* A Flight made once by its __init__, whose slots (all of them, at flight_slots) a flight made here copies:
       no Python code runs inside the program's event. The offsets of the slots read and written here. */
    PyObject *flight_prototype;
    PyObject *spare_flight;  /* or NULL: see new_flight */
    Py_ssize_t *flight_slots;
    Py_ssize_t flight_slot_count;
    Py_ssize_t flight_slots_start;  /* the slots' first offset when they lie side by side (CPython lays a class's own
                                       __slots__ out so), else -1 */
    Py_ssize_t flight_exc_id, flight_tb_id, flight_ident, flight_site, flight_last_ns, flight_detailed, flight_state,
        flight_pending, flight_fate, flight_escaped_thread, flight_frames_unwound, flight_outermost, flight_caller_id,
        flight_caller_code_id, flight_caller_lasti, flight_coroutine, flight_reraises;
    PyObject *handled_state;
    PyObject *propagating_state;
    PyObject *bootstrap_inner_code;
    PyObject *fate_handled;
    Py_ssize_t max_in_flight;
    Py_ssize_t flights_started;  /* counted flights started by a RAISE here */
    Py_ssize_t flights_handled;  /* their EXCEPTION_HANDLED, here */
    Py_ssize_t flights_settled;  /* the thread's one handled flight concluded as handled at its next RAISE, here */
    Py_ssize_t flights_reraised;  /* their RERAISE, and their RAISE inside their handler, here */
    Py_ssize_t flights_unwound;  /* their PY_UNWIND out of a frame of the program, here */
    Py_ssize_t flights_reached;  /* their RAISE in the Python caller they unwound into, here */
    /* program_threads' limits, read at construction: the shim stretches them (stretch_intervals) before it
       makes its callbacks. */
    long long first_detailed, detail_interval_ns, max_handled_depth;
    char swallows_stop_iteration[256];  /* by opcode: SWALLOWS_STOP_ITERATION */
    Py_ssize_t counted;     /* RAISE events counted here */
    Py_ssize_t passed;      /* RERAISE, EXCEPTION_HANDLED and PY_UNWIND events with nothing to do */
    /* The ints that recur event after event, made once (see recurring_int); the raise points' keys. */
    RecurringInt thread_ident, exc_identity, tb_identity;
    PointKey point_keys[POINT_KEY_SLOTS];
    /* This thread's list in pending_by_ident (borrowed) when last looked up, at that version of the dict, or NULL. */
    unsigned long pending_ident;
    uint64_t pending_version;
    PyObject *pending_list;
    /* The flight last started or found here: inflight held known_exc_bits' int -> known_flight (borrowed) at that
       version of the dict; NULL: none. The exception a RAISE starts a flight for is looked up again at its
       EXCEPTION_HANDLED and concluded at the thread's next RAISE, while the dict holds it alone. */
    unsigned long long known_exc_bits;
    uint64_t known_version;
    PyObject *known_flight;
    /* Whether this thread is in ignored_idents, at that version of the dict; 0: not looked up. */
    unsigned long ignored_ident;
    uint64_t ignored_version;
    int ignored_verdict;
    /* table.asyncio_hooked was found true: it stays so while the hooks are installed, and the callbacks only
       ask Python to hook asyncio while it is false. */
    int asyncio_seen_hooked;
    int alive;  /* see exception_callbacks_alive */
} ExceptionCallbacks;

static PyTypeObject *ExceptionCallbacks_Type;

/* A dict's version: PEP 509's ma_version_tag, a new value (unique in the interpreter) at every change of the dict, on
   the versions that keep it up to date (3.12 and 3.13, where it is deprecated: PEP 699); 0 on later ones, where
   nothing looked up is kept. Read, never written: the dict and its watchers are left alone. */
static inline uint64_t
dict_version(PyObject *dict)
{
#if PY_VERSION_HEX < 0x030E0000
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    return ((PyDictObject *)dict)->ma_version_tag;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#else
    (void)dict;
    return 0;
#endif
}

/* The int of `bits` (signed or not), kept in `kept` (a new reference, or NULL with an exception set). */
static PyObject *
recurring_int(RecurringInt *kept, unsigned long long bits, int is_signed)
{
    if (kept->object == NULL || kept->bits != bits) {
        PyObject *fresh = is_signed ? PyLong_FromLongLong((long long)bits) : PyLong_FromUnsignedLongLong(bits);
        if (fresh == NULL) {
            return NULL;
        }
        Py_XSETREF(kept->object, fresh);
        kept->bits = bits;
    }
    return Py_NewRef(kept->object);
}

/* get_ident() of this thread (a new reference, or NULL with an exception set). */
static PyObject *
thread_ident_int(ExceptionCallbacks *self)
{
    return recurring_int(&self->thread_ident, PyThread_get_thread_ident(), 0);
}

/* identity(exc) (a new reference, or NULL with an exception set). */
static PyObject *
exc_identity_int(ExceptionCallbacks *self, PyObject *exc)
{
    return recurring_int(&self->exc_identity, (unsigned long long)pointer_identity(exc), 1);
}

/* The table's slot of the point (code key, offset, cls), its keys made (the closed point's on demand); or NULL with
   an exception set. */
static PointKey *
point_slot(ExceptionCallbacks *self, uint64_t ck, PyObject *offset, PyTypeObject *cls)
{
    Py_ssize_t at = PyLong_AsSsize_t(offset);
    if (at == -1 && PyErr_Occurred()) {
        return NULL;
    }
    uint64_t mixed = (ck * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)at * 0xC2B2AE3D27D4EB4Full) ^ ((uintptr_t)cls >> 4);
    PointKey *slot = &self->point_keys[(mixed ^ (mixed >> 29)) & (POINT_KEY_SLOTS - 1)];
    if (slot->point == NULL || slot->code_key != ck || slot->offset != at || slot->cls != cls) {
        PyObject *key = PyLong_FromUnsignedLongLong(ck);
        PyObject *type_id = PyLong_FromSsize_t(pointer_identity((PyObject *)cls));
        PyObject *point = key == NULL || type_id == NULL ? NULL : PyTuple_Pack(3, key, offset, type_id);
        Py_XDECREF(type_id);
        Py_XDECREF(key);
        if (point == NULL) {
            return NULL;
        }
        Py_XSETREF(slot->point, point);
        Py_CLEAR(slot->closed_point);
        slot->code_key = ck;
        slot->offset = at;
        slot->cls = cls;
        memset(slot->versions, 0, sizeof slot->versions);
    }
    return slot;
}

/* The entry at the point (code key, offset, id(cls)) of one of the FlightTable's dicts of points (`which`; in
   closed_points at (code key, offset)): a new reference, or NULL (with an exception set on an error). */
static PyObject *
point_entry(ExceptionCallbacks *self, int which, uint64_t ck, PyObject *offset, PyTypeObject *cls)
{
    PyObject *points = self->point_dicts[which];
    if (PyDict_GET_SIZE(points) == 0) {
        return NULL;
    }
    PointKey *slot = point_slot(self, ck, offset, cls);
    if (slot == NULL) {
        return NULL;
    }
    uint64_t version = dict_version(points);
    PyObject *entry = NULL;
    if (version != 0 && slot->versions[which] == version) {
        entry = slot->entries[which];
    }
    else {
        PyObject *key = slot->point;
        if (which == CLOSED_POINTS) {
            if (slot->closed_point == NULL) {
                slot->closed_point = PyTuple_Pack(2, PyTuple_GET_ITEM(slot->point, 0), offset);
            }
            key = slot->closed_point;
        }
        entry = key == NULL ? NULL : PyDict_GetItemWithError(points, key);  /* borrowed */
        if (entry == NULL && PyErr_Occurred()) {
            return NULL;
        }
        if (entry != Py_None) {  /* the dicts hold no None: kept, it means absent */
            slot->entries[which] = entry == NULL ? Py_None : entry;
            slot->versions[which] = version;
        }
    }
    return entry == Py_None ? NULL : Py_XNewRef(entry);
}

/* pending_by_ident.get(ident), `ident` this thread's (borrowed), or NULL (with an exception set on an error):
   kept while the dict is unchanged (a thread's list stays while it lives: a lookup of a large int key per event). */
static PyObject *
thread_pending(ExceptionCallbacks *self, PyObject *ident)
{
    unsigned long thread = PyThread_get_thread_ident();
    uint64_t version = dict_version(self->pending_by_ident);
    if (self->pending_list != NULL && self->pending_ident == thread && self->pending_version == version) {
        return self->pending_list;
    }
    PyObject *pending = PyDict_GetItemWithError(self->pending_by_ident, ident);
    if (pending != NULL && version != 0) {
        self->pending_list = pending;
        self->pending_ident = thread;
        self->pending_version = version;
    }
    return pending;
}

/* Is this thread, whose ident is `ident` (thread_ident_int's), one of the shim's own (in ignored_idents)? 1, 0, -1
   with an exception set. Kept while the dict is unchanged: a lookup of a large int key per event otherwise. */
static int
ignored_thread(ExceptionCallbacks *self, PyObject *ident)
{
    unsigned long thread = (unsigned long)self->thread_ident.bits;
    uint64_t version = PyDict_CheckExact(self->ignored_idents) ? dict_version(self->ignored_idents) : 0;
    if (version != 0 && self->ignored_version == version && self->ignored_ident == thread) {
        return self->ignored_verdict;
    }
    int found = PySequence_Contains(self->ignored_idents, ident);
    if (found >= 0 && version != 0) {
        self->ignored_ident = thread;
        self->ignored_version = version;
        self->ignored_verdict = found;
    }
    return found;
}

/* Remembers that inflight now holds `flight` (borrowed) for the exception of identity `bits` (see known_flight). */
static void
remember_flight(ExceptionCallbacks *self, unsigned long long bits, PyObject *flight)
{
    uint64_t version = dict_version(self->inflight);
    self->known_flight = version != 0 ? flight : NULL;
    self->known_exc_bits = bits;
    self->known_version = version;
}

/* The flight of `exc` (a new reference), or NULL: with no exception set when it has none. */
static PyObject *
flight_of(ExceptionCallbacks *self, PyObject *exc)
{
    if (PyDict_GET_SIZE(self->inflight) == 0) {
        return NULL;  /* the common case: no int made */
    }
    unsigned long long bits = (unsigned long long)pointer_identity(exc);
    if (self->known_flight != NULL && self->known_version == dict_version(self->inflight)) {
        if (self->known_exc_bits == bits) {
            return Py_NewRef(self->known_flight);
        }
        if (PyDict_GET_SIZE(self->inflight) == 1) {
            return NULL;  /* the one flight is another exception's */
        }
    }
    PyObject *exc_id = exc_identity_int(self, exc);
    if (exc_id == NULL) {
        return NULL;
    }
    PyObject *flight = PyDict_GetItemWithError(self->inflight, exc_id);  /* borrowed */
    Py_DECREF(exc_id);
    if (flight != NULL) {
        remember_flight(self, bits, flight);
    }
    return Py_XNewRef(flight);
}

/* Is there a flight for `exc` (its identity in table.inflight)? 1, 0, -1 with an exception set. */
static int
has_flight(ExceptionCallbacks *self, PyObject *exc)
{
    PyObject *flight = flight_of(self, exc);
    if (flight == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(flight);
    return 1;
}

/* The offset of the object slot `name` of `type` (its member descriptor's), or -1 with an exception set. */
static Py_ssize_t
object_slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *descriptor = PyObject_GetAttr((PyObject *)type, name);
    if (descriptor == NULL) {
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type == Py_T_OBJECT_EX && !(member->flags & Py_READONLY)) {
            offset = member->offset;
        }
    }
    Py_DECREF(descriptor);
    if (offset < 0) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not an object slot", type->tp_name, name);
    }
    return offset;
}

/* object.<name> (a new reference, or NULL with an exception set): the slot at `offset` of an instance of `type`
   (a class with __slots__: Site, Flight), read as member_get reads it, without the attribute lookup; anything else
   (or an unset slot, which raises AttributeError) through getattr. */
static PyObject *
slot_attribute(PyTypeObject *type, PyObject *object, Py_ssize_t offset, PyObject *name)
{
    if (Py_IS_TYPE(object, type)) {
        PyObject *value = *(PyObject **)((char *)object + offset);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(object, name);
}

/* object.<name> = value, the same way: 0, or -1 with an exception set. */
static int
set_slot_attribute(PyTypeObject *type, PyObject *object, Py_ssize_t offset, PyObject *name, PyObject *value)
{
    if (Py_IS_TYPE(object, type)) {
        Py_XSETREF(*(PyObject **)((char *)object + offset), Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(object, name, value);
}

static PyObject *
site_attribute(ExceptionCallbacks *self, PyObject *site, Py_ssize_t offset, PyObject *name)
{
    return slot_attribute(self->site_type, site, offset, name);
}

static PyObject *
flight_attribute(ExceptionCallbacks *self, PyObject *flight, Py_ssize_t offset, PyObject *name)
{
    return slot_attribute(self->flight_type, flight, offset, name);
}

static int
set_flight_attribute(ExceptionCallbacks *self, PyObject *flight, Py_ssize_t offset, PyObject *name, PyObject *value)
{
    return set_slot_attribute(self->flight_type, flight, offset, name, value);
}

/* A value as a long long into *value: 0, or -1 with an exception set. Steals the reference. Through
   PyLong_AsLongLongAndOverflow, which reads an int of several digits (a time in nanoseconds) digit by digit, where
   PyLong_AsLongLong goes through a byte array. */
static int
steal_as_long(PyObject *object, long long *value)
{
    if (object == NULL) {
        return -1;
    }
    int overflow = 0;
    *value = PyLong_AsLongLongAndOverflow(object, &overflow);
    Py_DECREF(object);
    if (overflow != 0) {
        PyErr_SetString(PyExc_OverflowError, "a value does not fit in a long long");
        return -1;
    }
    return *value == -1 && PyErr_Occurred() ? -1 : 0;
}

/* The closed generator's site of this RAISE (a new reference), or NULL: with no exception set when
   the event is not one (then Python decides). */
static PyObject *
closed_generator_site(ExceptionCallbacks *self, PyObject *code, PyObject *offset, PyObject *exc)
{
    if (!Py_IS_TYPE(exc, (PyTypeObject *)PyExc_GeneratorExit)) {
        return NULL;
    }
    PyObject *tb = PyException_GetTraceback(exc);
    int one_entry = tb != NULL && PyTraceBack_Check(tb) && ((PyTracebackObject *)tb)->tb_next == NULL;
    Py_XDECREF(tb);
    uint64_t ck = 0;
    if (!one_entry || code_key_from(self->code_keys, self->keys, code, &ck) <= 0 || ck == 0) {
        return NULL;
    }
    return point_entry(self, CLOSED_POINTS, ck, offset, Py_TYPE(exc));
}

static int count_as_handled(ExceptionCallbacks *self, PyObject *site);

/* Is the sampling of `site` not due (past its first detailed exceptions, within its detail interval), as
   FlightTable.on_raise decides before it samples? 1, 0, -1 with an exception set. `now` is the event's time. */
static int
sampling_not_due(ExceptionCallbacks *self, PyObject *site, long long now)
{
    long long detailed, last_detail_ns;
    if (steal_as_long(site_attribute(self, site, self->site_detailed, str_detailed), &detailed) < 0
        || steal_as_long(site_attribute(self, site, self->site_last_detail_ns, str_last_detail_ns), &last_detail_ns) < 0) {
        return -1;
    }
    return detailed >= self->first_detailed && now - last_detail_ns < self->detail_interval_ns;
}

/* The fast paths' end, as FlightTable.on_raise has it: a site whose sampling is not due only counts the
   exception as handled (then 1); otherwise 0 (Python samples it). -1 with an exception set. */
static int
count_unsampled(ExceptionCallbacks *self, PyObject *site)
{
    int not_due = sampling_not_due(self, site, (long long)now_ns());
    if (not_due <= 0) {
        return not_due;
    }
    return count_as_handled(self, site) < 0 ? -1 : 1;
}

/* site.count_handled() (its itertools.count advanced by one C call), and the site marked dirty and listed for the
   sender when it was not: 0, or -1 with an exception set. */
static int
count_as_handled(ExceptionCallbacks *self, PyObject *site)
{
    PyObject *counter = site_attribute(self, site, self->site_handled_counter, str_handled_counter);
    if (counter != NULL && Py_IS_TYPE(counter, Counter_Type)) {
        ((Counter *)counter)->next++;
    }
    else {
        iternextfunc next = counter != NULL && PyIter_Check(counter) ? Py_TYPE(counter)->tp_iternext : NULL;
        PyObject *counted = next != NULL ? next(counter) : NULL;  /* an itertools.count: never exhausted */
        if (counted == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "a site's handled_counter must be an endless iterator");
        }
        if (counted == NULL) {
            Py_XDECREF(counter);
            return -1;
        }
        Py_DECREF(counted);
    }
    Py_XDECREF(counter);
    PyObject *dirty = site_attribute(self, site, self->site_dirty, str_dirty);
    int is_dirty = dirty == NULL ? -1 : PyObject_IsTrue(dirty);
    Py_XDECREF(dirty);
    if (is_dirty <= 0) {
        if (is_dirty < 0) {
            return -1;
        }
        /* As the Python twin: marked, then listed for the sender. */
        if (set_slot_attribute(self->site_type, site, self->site_dirty, str_dirty, Py_True) < 0) {
            return -1;
        }
        if (PyList_Append(self->dirty_sites, site) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Does the instruction at `offset` end a StopIteration in C (program_threads.SWALLOWS_STOP_ITERATION,
   read in co_code, without specialisation or instrumentation)? 1, 0, -1 with an exception set. Most
   StopIterations (a contextmanager's, an iterator's __next__) are raised elsewhere: they go to Python at
   the cost of this test. */
static int
swallowing_instruction(ExceptionCallbacks *self, PyObject *code, PyObject *offset)
{
    if (!PyCode_Check(code)) {
        return 0;
    }
    Py_ssize_t at = PyLong_AsSsize_t(offset);
    if (at == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *raw = PyCode_GetCode((PyCodeObject *)code);  /* cached by the code object */
    if (raw == NULL) {
        return -1;
    }
    int found = PyBytes_Check(raw) && 0 <= at && at < PyBytes_GET_SIZE(raw)
                && self->swallows_stop_iteration[(unsigned char)PyBytes_AS_STRING(raw)[at]];
    Py_DECREF(raw);
    return found;
}

/* Is `exc` a new exception (no flight) raised on a program thread with no handled exception waiting to
   be settled, as FlightTable.on_raise requires before it counts a RAISE at once? 1, 0, -1 with an
   exception set. */
static int
new_on_settled_program_thread(ExceptionCallbacks *self, PyObject *exc)
{
    int found = has_flight(self, exc);
    if (found != 0) {
        return found < 0 ? -1 : 0;
    }
    int outcome = -1;
    PyObject *ident = thread_ident_int(self);
    if (ident == NULL || (found = ignored_thread(self, ident)) != 0) {
        outcome = found > 0 ? 0 : -1;  /* the shim's own thread: nothing is counted there */
        goto done;
    }
    PyObject *pending = thread_pending(self, ident);  /* borrowed */
    if (pending == NULL) {
        outcome = PyErr_Occurred() ? -1 : 1;
    }
    else {
        int waiting = PyObject_IsTrue(pending);  /* a list: no code of the program's */
        outcome = waiting < 0 ? -1 : !waiting;  /* if some wait, Python settles them first */
    }
done:
    Py_XDECREF(ident);
    return outcome;
}


/* Is `site` still the site of `cls`? The type's id in its key is only meaningful while the site's class
   lives: type_ref() tells. 1, 0, -1 with an exception set. */
static int
site_of_class(ExceptionCallbacks *self, PyObject *site, PyTypeObject *cls)
{
    PyObject *type_ref = site_attribute(self, site, self->site_type_ref, str_type_ref);
    if (type_ref == NULL) {
        return -1;
    }
    PyObject *referent = NULL;
    if (PyWeakref_CheckRefExact(type_ref)) {  /* read without calling it */
#if PY_VERSION_HEX >= 0x030D0000
        if (PyWeakref_GetRef(type_ref, &referent) == 0) {
            referent = Py_NewRef(Py_None);  /* dead */
        }
#else
        referent = Py_XNewRef(PyWeakref_GetObject(type_ref));  /* None when dead */
#endif
    }
    else {
        referent = PyObject_CallNoArgs(type_ref);  /* a site of no class: _no_type */
    }
    Py_DECREF(type_ref);
    if (referent == NULL) {
        return -1;
    }
    int same = referent == (PyObject *)cls;
    Py_DECREF(referent);
    return same;
}

/* The swallow_points site of this RAISE (a new reference), or NULL (with no exception set when Python
   decides): a new StopIteration that the raising instruction ends in C (FOR_ITER, SEND), raised on a
   program thread with no handled exception waiting to be settled, as FlightTable.on_raise finds it. */
static PyObject *
swallowed_stop_iteration_site(ExceptionCallbacks *self, PyObject *code, PyObject *offset, PyObject *exc)
{
    PyTypeObject *cls = Py_TYPE(exc);
    uint64_t ck = 0;
    if (!PyType_IsSubtype(cls, (PyTypeObject *)PyExc_StopIteration) || swallowing_instruction(self, code, offset) <= 0
        || code_key_from(self->code_keys, self->keys, code, &ck) <= 0 || ck == 0
        || new_on_settled_program_thread(self, exc) <= 0) {
        return NULL;
    }
    PyObject *site = point_entry(self, SWALLOW_POINTS, ck, offset, cls);
    if (site != NULL && site_of_class(self, site, cls) <= 0) {
        Py_CLEAR(site);
    }
    return site;
}

/* Does the empty handler `except names` catch `cls` now, with the names found as LOAD_GLOBAL finds them
   in the raising frame (the current one: a C callback runs no frame)? program_threads.handler_catches,
   the twin: every name an exception class, one of them a base of `cls`; plain dicts only. 1, 0, -1 with
   an exception set. */
static int
handler_catches(PyObject *names, PyTypeObject *cls)
{
    PyObject *globals = PyEval_GetGlobals();  /* borrowed */
    PyObject *builtins = PyEval_GetBuiltins();
    if (globals == NULL || builtins == NULL || !PyDict_CheckExact(globals) || !PyDict_CheckExact(builtins)
        || !PyTuple_CheckExact(names)) {
        return 0;
    }
    int caught = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *value = PyDict_GetItemWithError(globals, name);  /* borrowed, as the next */
        if (value == NULL && !PyErr_Occurred()) {
            value = PyDict_GetItemWithError(builtins, name);
        }
        if (value == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        if (!PyExceptionClass_Check(value)) {
            return 0;  /* CHECK_EXC_MATCH would raise a TypeError */
        }
        if (PyType_IsSubtype(cls, (PyTypeObject *)value)) {
            caught = 1;
        }
    }
    return caught;
}

/* The empty_handler_points site of this RAISE (a new reference), or NULL (with no exception set when
   Python decides): a new exception raised in this frame (one traceback entry) whose handler in it is an
   empty one that still catches its class, on a program thread with no handled exception waiting to be
   settled, as FlightTable.on_raise finds it. The cheap tests first: most RAISEs are not at such a point. */
static PyObject *
empty_handler_site(ExceptionCallbacks *self, PyObject *code, PyObject *offset, PyObject *exc)
{
    PyObject *tb = PyException_GetTraceback(exc);
    int one_entry = tb != NULL && PyTraceBack_Check(tb) && ((PyTracebackObject *)tb)->tb_next == NULL;
    Py_XDECREF(tb);
    uint64_t ck = 0;
    if (!one_entry || code_key_from(self->code_keys, self->keys, code, &ck) <= 0 || ck == 0) {
        return NULL;
    }
    PyTypeObject *cls = Py_TYPE(exc);
    PyObject *entry = point_entry(self, EMPTY_HANDLER_POINTS, ck, offset, cls);  /* (site, names) */
    if (entry == NULL) {
        return NULL;
    }
    PyObject *site = NULL;
    if (PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 2 && new_on_settled_program_thread(self, exc) > 0
        && site_of_class(self, PyTuple_GET_ITEM(entry, 0), cls) > 0 && handler_catches(PyTuple_GET_ITEM(entry, 1), cls) > 0) {
        site = Py_NewRef(PyTuple_GET_ITEM(entry, 0));
    }
    Py_DECREF(entry);
    return site;
}

/* FlightTable.on_raise's fast paths in C: 1 when this RAISE is a closed generator's GeneratorExit, a
   swallowed StopIteration or an exception that an empty handler catches, that its site only counts (then
   counted), 0 when Python decides, -1 with an exception set. */
static int
count_control_flow(ExceptionCallbacks *self, PyObject *code, PyObject *offset, PyObject *exc)
{
    PyObject *site = closed_generator_site(self, code, offset, exc);
    if (site == NULL && !PyErr_Occurred()) {
        site = swallowed_stop_iteration_site(self, code, offset, exc);
    }
    if (site == NULL && !PyErr_Occurred()) {
        site = empty_handler_site(self, code, offset, exc);
    }
    if (site == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    int outcome = count_unsampled(self, site);
    Py_DECREF(site);
    return outcome;
}


/* ---- counted flights ---- */

/* Is `value` true? 1, 0, -1 with an exception set (also when `value` is NULL). Steals the reference. */
static int
steal_truth(PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* Does `value` equal `expected`? 1, 0, -1 with an exception set (also when `value` is NULL). Steals the
   reference. */
static int
steal_equals(PyObject *value, PyObject *expected)
{
    if (value == NULL) {
        return -1;
    }
    int equal = value == expected ? 1 : PyObject_RichCompareBool(value, expected, Py_EQ);
    Py_DECREF(value);
    return equal;
}

/* Is `value` the int `identity` (as pointer_identity gives it)? 1, 0, -1 with an exception set (also when
   `value` is NULL). Steals the reference; makes no int. */
static int
steal_is_identity(PyObject *value, Py_ssize_t identity)
{
    if (value == NULL) {
        return -1;
    }
    int outcome = 0;
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long found = PyLong_AsLongLongAndOverflow(value, &overflow);
        outcome = found == -1 && PyErr_Occurred() ? -1 : !overflow && found == (long long)identity;
    }
    Py_DECREF(value);
    return outcome;
}

/* inflight.pop(flight.exc_id, None) is flight: 1 (then removed), 0, -1 with an exception set. */
static int
take_from_inflight(ExceptionCallbacks *self, PyObject *flight)
{
    PyObject *exc_id = flight_attribute(self, flight, self->flight_exc_id, str_exc_id);
    if (exc_id == NULL) {
        return -1;
    }
    PyObject *found = self->known_flight == flight && self->known_version == dict_version(self->inflight)
                          ? flight
                          : PyDict_GetItemWithError(self->inflight, exc_id);  /* borrowed */
    int outcome = found == NULL ? (PyErr_Occurred() ? -1 : 0) : found == flight;
    if (found != NULL && PyDict_DelItem(self->inflight, exc_id) < 0) {
        outcome = -1;
    }
    Py_DECREF(exc_id);
    return outcome;
}

/* The thread's handled flights, when a new exception is raised on it: with one waiting and no exception being
   handled, that one is final (FlightTable.on_raise's inline case): concluded as handled here, or by
   table.conclude() when it is detailed or escaped its thread. 1 when none is left waiting, 0 when Python
   settles them, -1 with an exception set. */
static int
settle_handled_flight(ExceptionCallbacks *self, PyObject *ident)
{
    PyObject *pending = thread_pending(self, ident);  /* borrowed */
    if (pending == NULL) {
        return PyErr_Occurred() ? -1 : 1;
    }
    if (!PyList_CheckExact(pending) || PyList_GET_SIZE(pending) > 1) {
        return 0;
    }
    if (PyList_GET_SIZE(pending) == 0) {
        return 1;
    }
    PyObject *current = PyErr_GetHandledException();
    int handling = current != NULL && current != Py_None;
    Py_XDECREF(current);
    if (handling) {
        return 0;
    }
    PyObject *handled = Py_NewRef(PyList_GET_ITEM(pending, 0));
    int outcome = PyList_SetSlice(pending, 0, 1, NULL);
    int concluded = 0;
    if (outcome == 0) {
        outcome = set_flight_attribute(self, handled, self->flight_pending, str_pending, Py_False);
    }
    if (outcome == 0) {
        int is_handled = steal_equals(flight_attribute(self, handled, self->flight_state, str_state),
                                      self->handled_state);
        int undecided = is_handled > 0 ? steal_equals(flight_attribute(self, handled, self->flight_fate, str_fate),
                                                      Py_None)
                                       : is_handled;
        int taken = undecided > 0 ? take_from_inflight(self, handled) : undecided;
        outcome = taken < 0 ? -1 : 0;
        concluded = taken > 0;
    }
    if (outcome == 0 && concluded) {
        int detailed = steal_truth(flight_attribute(self, handled, self->flight_detailed, str_detailed));
        int escaped = detailed == 0 ? steal_truth(flight_attribute(self, handled, self->flight_escaped_thread,
                                                                   str_escaped_thread))
                                    : detailed;
        if (escaped < 0) {
            outcome = -1;
        }
        else if (escaped) {
            PyObject *done = PyObject_CallMethodObjArgs(self->table, str_conclude, handled, Py_False, NULL);
            outcome = done == NULL ? -1 : 0;
            Py_XDECREF(done);
        }
        else {
            PyObject *site = flight_attribute(self, handled, self->flight_site, str_site);
            outcome = site == NULL || set_flight_attribute(self, handled, self->flight_fate, str_fate,
                                                           self->fate_handled) < 0
                              || count_as_handled(self, site) < 0
                          ? -1
                          : 0;
            Py_XDECREF(site);
            if (outcome == 0) {
                self->flights_settled++;
                if (self->spare_flight == NULL && Py_REFCNT(handled) == 1 && Py_IS_TYPE(handled, self->flight_type)) {
                    self->spare_flight = handled;  /* nothing else holds it: the next flight made here reuses it */
                    handled = NULL;
                }
            }
        }
    }
    Py_XDECREF(handled);
    return outcome < 0 ? -1 : 1;
}

/* Flight(exc_id, tb_id, ident, site, last_ns) (a new reference, or NULL with an exception set), without its
   __init__: the prototype's slots, then the given ones; in the spare flight when there is one (a counted flight
   concluded here that nothing else held: its allocation and deallocation cost more than resetting its slots). */
static PyObject *
new_flight(ExceptionCallbacks *self, PyObject *exc_id, PyObject *tb_id, PyObject *ident, PyObject *site,
           PyObject *last_ns)
{
    PyObject *flight = self->spare_flight;
    self->spare_flight = NULL;
    if (flight == NULL) {
        flight = self->flight_type->tp_alloc(self->flight_type, 0);  /* its slots NULL */
        if (flight == NULL) {
            return NULL;
        }
    }
    /* A spare flight's slots mostly hold the prototype's values still. */
    if (self->flight_slots_start >= 0) {
        PyObject **slots = (PyObject **)((char *)flight + self->flight_slots_start);
        PyObject **values = (PyObject **)((char *)self->flight_prototype + self->flight_slots_start);
        for (Py_ssize_t i = 0; i < self->flight_slot_count; i++) {
            if (slots[i] != values[i]) {
                Py_XSETREF(slots[i], Py_XNewRef(values[i]));
            }
        }
    }
    else {
        for (Py_ssize_t i = 0; i < self->flight_slot_count; i++) {
            Py_ssize_t offset = self->flight_slots[i];
            PyObject **slot = (PyObject **)((char *)flight + offset);
            PyObject *value = *(PyObject **)((char *)self->flight_prototype + offset);
            if (*slot != value) {
                Py_XSETREF(*slot, Py_XNewRef(value));
            }
        }
    }
    (void)set_flight_attribute(self, flight, self->flight_exc_id, str_exc_id, exc_id);
    (void)set_flight_attribute(self, flight, self->flight_tb_id, str_tb_id, tb_id);
    (void)set_flight_attribute(self, flight, self->flight_ident, str_ident, ident);
    (void)set_flight_attribute(self, flight, self->flight_site, str_site, site);
    (void)set_flight_attribute(self, flight, self->flight_last_ns, str_last_ns, last_ns);
    return flight;
}

/* FlightTable.on_raise's counted flight: a new exception (it has no flight: the caller has looked) on a program
   thread at a point of raise_points whose site is still its class's, past its first detailed exceptions and within
   its detail interval, while the table has room: a Flight with the fields its fate needs. The thread's handled
   flight is settled first, as there. 1 started, 0 when Python decides, -1 with an exception set. */
static int
start_counted_flight(ExceptionCallbacks *self, PyObject *code, PyObject *offset, PyObject *exc)
{
    PyObject *exc_id = exc_identity_int(self, exc);  /* the key of its flight, if it gets one */
    if (exc_id == NULL) {
        return -1;
    }
    PyObject *ident = thread_ident_int(self);
    if (ident == NULL) {
        Py_DECREF(exc_id);
        return -1;
    }
    int outcome = ignored_thread(self, ident);
    if (outcome == 0) {
        outcome = settle_handled_flight(self, ident);  /* 1: none waits now */
    }
    else if (outcome > 0) {
        outcome = 0;  /* the shim's own thread: Python passes it */
    }
    uint64_t ck = 0;
    PyTypeObject *cls = Py_TYPE(exc);
    PyObject *site = NULL;
    if (outcome > 0) {
        int known = code_key_from(self->code_keys, self->keys, code, &ck);
        outcome = known < 0 ? -1 : known > 0 && ck != 0;
    }
    if (outcome > 0) {
        site = point_entry(self, RAISE_POINTS, ck, offset, cls);
        outcome = site == NULL ? (PyErr_Occurred() ? -1 : 0) : site_of_class(self, site, cls);
    }
    long long now = 0;
    if (outcome > 0) {
        now = (long long)now_ns();
        outcome = PyDict_GET_SIZE(self->inflight) < self->max_in_flight ? sampling_not_due(self, site, now) : 0;
    }
    if (outcome > 0) {
        PyObject *tb = PyException_GetTraceback(exc);  /* NULL: None */
        Py_ssize_t tb_identity = pointer_identity(tb != NULL ? tb : Py_None);
        PyObject *tb_id = recurring_int(&self->tb_identity, (unsigned long long)tb_identity, 1);
        PyObject *last_ns = PyLong_FromLongLong(now);
        Py_XDECREF(tb);
        PyObject *flight = NULL;
        if (tb_id != NULL && last_ns != NULL) {
            flight = new_flight(self, exc_id, tb_id, ident, site, last_ns);
        }
        outcome = flight != NULL && PyDict_SetItem(self->inflight, exc_id, flight) == 0 ? 1 : -1;
        if (outcome > 0) {
            remember_flight(self, (unsigned long long)pointer_identity(exc), flight);
        }
        Py_XDECREF(flight);
        Py_XDECREF(last_ns);
        Py_XDECREF(tb_id);
        if (outcome > 0) {
            self->flights_started++;
        }
    }
    Py_XDECREF(site);
    Py_DECREF(ident);
    Py_DECREF(exc_id);
    return outcome;
}

/* table.asyncio_hooked: 1, 0, -1 with an exception set. Once true, it is false again only when the hooks are
   uninstalled (then hooking does nothing) or, reinstalled, until the sender's next tick hooks asyncio anyway: read
   until it is. */
static int
asyncio_hooked(ExceptionCallbacks *self)
{
    if (self->asyncio_seen_hooked) {
        return 1;
    }
    int hooked = steal_truth(PyObject_GetAttr(self->table, str_asyncio_hooked));
    if (hooked > 0) {
        self->asyncio_seen_hooked = 1;
    }
    return hooked;
}

/* FlightTable.on_handled for `flight`, the exception's: a counted one (not detailed) of this thread whose exception
   is still the one it follows, in code with a key, with asyncio's handler hooked or not imported, is handled and
   pending on its thread. 1 done (or nothing to do, as there), 0 when Python decides, -1 with an exception set. */
static int
handle_counted_flight(ExceptionCallbacks *self, PyObject *code, PyObject *exc, PyObject *flight)
{
    PyObject *ident = thread_ident_int(self);
    PyObject *site = NULL;
    int outcome = ident == NULL ? -1 : steal_truth(flight_attribute(self, flight, self->flight_detailed, str_detailed));
    outcome = outcome == 0 ? 1 : outcome > 0 ? 0 : -1;  /* a detailed one: Python reads its handler's line */
    if (outcome > 0) {
        int same_thread = steal_equals(flight_attribute(self, flight, self->flight_ident, str_ident), ident);
        outcome = same_thread < 0 ? -1 : same_thread ? 1 : 2;  /* 2: another thread's: nothing to do */
    }
    if (outcome == 1) {
        /* Still the flight's exception: its class and its traceback at the last event. */
        PyObject *tb = PyException_GetTraceback(exc);
        Py_ssize_t tb_id = pointer_identity(tb != NULL ? tb : Py_None);
        Py_XDECREF(tb);
        site = flight_attribute(self, flight, self->flight_site, str_site);
        int same_type = site == NULL ? -1
                                     : steal_is_identity(site_attribute(self, site, self->site_type_id, str_type_id),
                                                         pointer_identity((PyObject *)Py_TYPE(exc)));
        int same_tb = same_type > 0
                          ? steal_is_identity(flight_attribute(self, flight, self->flight_tb_id, str_tb_id), tb_id)
                          : same_type;
        outcome = same_tb < 0 ? -1 : same_tb;  /* 0: not the flight's exception: Python concludes the flight */
    }
    uint64_t ck = 0;
    if (outcome == 1) {
        int known = code_key_from(self->code_keys, self->keys, code, &ck);
        outcome = known < 0 ? -1 : known == 0 ? 0 : ck == 0 ? 2 : 1;  /* unknown code: Python defines it */
    }
    if (outcome == 1) {
        int hooked = asyncio_hooked(self);
        if (hooked == 0) {
            /* asyncio just imported: Python hooks its loop's handler first */
            hooked = PyDict_Contains(PyImport_GetModuleDict(), str_asyncio_base_events);
            hooked = hooked < 0 ? -1 : !hooked;
        }
        outcome = hooked < 0 ? -1 : hooked;
    }
    if (outcome == 1) {
        PyObject *escaped = code == self->bootstrap_inner_code ? Py_True : Py_False;
        int waiting = 0;
        if (set_flight_attribute(self, flight, self->flight_state, str_state, self->handled_state) < 0
            || set_flight_attribute(self, flight, self->flight_escaped_thread, str_escaped_thread, escaped) < 0
            || (waiting = steal_truth(flight_attribute(self, flight, self->flight_pending, str_pending))) < 0) {
            outcome = -1;
        }
        else if (!waiting) {
            PyObject *pending = thread_pending(self, ident);  /* borrowed */
            if (pending == NULL && !PyErr_Occurred()) {
                PyObject *fresh = PyList_New(0);
                pending = fresh == NULL ? NULL : PyDict_SetDefault(self->pending_by_ident, ident, fresh);
                Py_XDECREF(fresh);
            }
            if (pending == NULL || set_flight_attribute(self, flight, self->flight_pending, str_pending, Py_True) < 0
                || !PyList_Check(pending) || PyList_Append(pending, flight) < 0) {
                if (pending != NULL && !PyList_Check(pending) && !PyErr_Occurred()) {
                    PyErr_SetString(PyExc_TypeError, "pending_by_ident holds a list per thread");
                }
                outcome = -1;
            }
        }
        if (outcome == 1) {
            self->flights_handled++;
        }
    }
    Py_XDECREF(site);
    Py_XDECREF(ident);
    return outcome == 2 ? 1 : outcome;
}

/* Is `flight` a counted one (not detailed) of this thread, following `exc` (its class still the site's)? 1, 0, -1 with
   an exception set. The traceback is compared by the caller: it has grown at a RAISE in a caller. */
static int
counted_flight_of_this_thread(ExceptionCallbacks *self, PyObject *flight, PyObject *exc, PyObject **site)
{
    int detailed = steal_truth(flight_attribute(self, flight, self->flight_detailed, str_detailed));
    if (detailed != 0) {
        return detailed < 0 ? -1 : 0;
    }
    PyObject *ident = thread_ident_int(self);
    if (ident == NULL) {
        return -1;
    }
    int same_thread = steal_equals(flight_attribute(self, flight, self->flight_ident, str_ident), ident);
    Py_DECREF(ident);
    if (same_thread <= 0) {
        return same_thread;
    }
    *site = flight_attribute(self, flight, self->flight_site, str_site);
    if (*site == NULL) {
        return -1;
    }
    return steal_is_identity(site_attribute(self, *site, self->site_type_id, str_type_id),
                             pointer_identity((PyObject *)Py_TYPE(exc)));
}

/* FlightTable.on_unwind for a counted flight of this thread, still its exception's (class and traceback), leaving
   a frame of the program (a coroutine's once asyncio's handler is hooked): one more frame unwound, its time, whether
   it left a coroutine, and the Python caller it unwinds into (that frame, its code and its instruction, which the RAISE there is compared
   with), or none when the caller is not the program's (it left the thread's outermost program frame). 1 done (or
   nothing to do: the shim's own frame), 0 when Python decides (another thread's flight too: nothing to do there
   either), -1 with an exception set. Nothing is written before every test has passed. */
static int
unwind_counted_flight(ExceptionCallbacks *self, PyObject *code, PyObject *exc, PyObject *flight)
{
    PyObject *site = NULL;
    int outcome = counted_flight_of_this_thread(self, flight, exc, &site);
    Py_XDECREF(site);
    if (outcome <= 0) {
        return outcome;
    }
    uint64_t ck = 0;
    int known = code_key_from(self->code_keys, self->keys, code, &ck);
    if (known <= 0) {
        return known;  /* a code without a key yet: Python defines it */
    }
    if (ck == 0) {
        return 1;  /* the shim's own frame */
    }
    PyObject *tb = PyException_GetTraceback(exc);
    Py_ssize_t tb_identity = pointer_identity(tb != NULL ? tb : Py_None);
    Py_XDECREF(tb);
    outcome = steal_is_identity(flight_attribute(self, flight, self->flight_tb_id, str_tb_id), tb_identity);
    /* A coroutine's frame: its task may report the exception to the loop's handler, which Python hooks first. */
    int coroutine = PyCode_Check(code) && (((PyCodeObject *)code)->co_flags & CO_COROUTINE);
    if (outcome > 0 && coroutine) {
        outcome = asyncio_hooked(self);
    }
    if (outcome <= 0) {
        return outcome;
    }
    /* The frame it leaves, and the caller it unwinds into, as f_back gives it. */
    PyFrameObject *frame = PyEval_GetFrame();  /* borrowed */
    PyFrameObject *caller = NULL;
    PyObject *caller_code = NULL;
    uint64_t caller_ck = 0;
    if (frame != NULL) {
        PyCodeObject *frame_code = PyFrame_GetCode(frame);
        if ((PyObject *)frame_code == code) {
            caller = PyFrame_GetBack(frame);
        }
        Py_DECREF(frame_code);
    }
    if (caller != NULL) {
        caller_code = (PyObject *)PyFrame_GetCode(caller);
        known = code_key_from(self->code_keys, self->keys, caller_code, &caller_ck);
        if (known <= 0) {
            Py_DECREF(caller_code);
            Py_DECREF(caller);
            return known;  /* Python defines its key */
        }
    }
    long long unwound = 0;
    PyObject *values[5] = {NULL, NULL, NULL, NULL, NULL};  /* frames_unwound, last_ns, caller id, code id, lasti */
    outcome = steal_as_long(flight_attribute(self, flight, self->flight_frames_unwound, str_frames_unwound), &unwound);
    if (outcome == 0) {
        values[0] = PyLong_FromLongLong(unwound + 1);
        values[1] = PyLong_FromLongLong((long long)now_ns());
        if (caller_ck != 0) {
            values[2] = PyLong_FromSsize_t(pointer_identity((PyObject *)caller));
            values[3] = PyLong_FromSsize_t(pointer_identity(caller_code));
            values[4] = PyLong_FromLong(PyFrame_GetLasti(caller));
        }
        else {
            values[2] = PyLong_FromLong(0);
        }
        outcome = values[0] == NULL || values[1] == NULL || values[2] == NULL
                          || (caller_ck != 0 && (values[3] == NULL || values[4] == NULL))
                      ? -1
                      : 0;
    }
    if (outcome == 0) {
        (void)set_flight_attribute(self, flight, self->flight_frames_unwound, str_frames_unwound, values[0]);
        (void)set_flight_attribute(self, flight, self->flight_last_ns, str_last_ns, values[1]);
        (void)set_flight_attribute(self, flight, self->flight_outermost, str_outermost,
                                   caller_ck == 0 ? Py_True : Py_False);
        (void)set_flight_attribute(self, flight, self->flight_coroutine, str_coroutine,
                                   coroutine ? Py_True : Py_False);
        (void)set_flight_attribute(self, flight, self->flight_caller_id, str_caller_id, values[2]);
        if (caller_ck != 0) {
            (void)set_flight_attribute(self, flight, self->flight_caller_code_id, str_caller_code_id, values[3]);
            (void)set_flight_attribute(self, flight, self->flight_caller_lasti, str_caller_lasti, values[4]);
        }
    }
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(values[i]);
    }
    Py_XDECREF(caller_code);
    Py_XDECREF(caller);
    return outcome < 0 ? -1 : 1;
}

/* Is `exc` among the exceptions this thread is handling (safe_reads.being_handled): the one it handles now or that
   one's __context__ chain (handlers inside handlers), to program_threads.MAX_HANDLED_DEPTH. 1 or 0. */
static int
being_handled(ExceptionCallbacks *self, PyObject *exc)
{
    PyObject *current = PyErr_GetHandledException();  /* NULL or None: none */
    for (long long depth = 0; current != NULL && current != Py_None && depth < self->max_handled_depth; depth++) {
        if (current == exc) {
            Py_DECREF(current);
            return 1;
        }
        PyObject *context = PyException_GetContext(current);
        Py_DECREF(current);
        current = context;
    }
    Py_XDECREF(current);
    return 0;
}

/* FlightTable.on_raise for a handled counted flight raised again: inside its handler (`raise error`, its thread
   handling it still), it propagates again, one re-raise more, its traceback followed from here. 2 done, 0 when
   Python decides (raised after its handler ended: that flight is over), -1 with an exception set. */
static int
raise_again_in_handler(ExceptionCallbacks *self, PyObject *exc, PyObject *flight)
{
    if (!being_handled(self, exc)) {
        return 0;
    }
    long long reraises = 0;
    if (steal_as_long(flight_attribute(self, flight, self->flight_reraises, str_reraises), &reraises) < 0) {
        return -1;
    }
    PyObject *tb = PyException_GetTraceback(exc);
    Py_ssize_t tb_identity = pointer_identity(tb != NULL ? tb : Py_None);
    Py_XDECREF(tb);
    PyObject *tb_id = recurring_int(&self->tb_identity, (unsigned long long)tb_identity, 1);
    PyObject *count = PyLong_FromLongLong(reraises + 1);
    PyObject *now = PyLong_FromLongLong((long long)now_ns());
    int outcome = tb_id == NULL || count == NULL || now == NULL ? -1 : 2;
    if (outcome > 0) {
        (void)set_flight_attribute(self, flight, self->flight_state, str_state, self->propagating_state);
        (void)set_flight_attribute(self, flight, self->flight_reraises, str_reraises, count);
        (void)set_flight_attribute(self, flight, self->flight_last_ns, str_last_ns, now);
        (void)set_flight_attribute(self, flight, self->flight_tb_id, str_tb_id, tb_id);
    }
    Py_XDECREF(tb_id);
    Py_XDECREF(count);
    Py_XDECREF(now);
    return outcome;
}

/* FlightTable.on_raise for a counted flight of this thread that propagates: its RAISE in the Python caller it
   unwound into (its traceback grew by that frame's entry, or this is the frame, code and instruction its PY_UNWIND
   saw) is followed from there on; a StopIteration that the raising loop ends goes to Python, which counts it. A
   handled one raised again inside its handler (`raise error`) propagates again, one re-raise more. 1 done (2: that
   re-raise), 0 when Python decides (the flight is over: Python concludes it), -1 with an exception set. */
static int
reach_caller(ExceptionCallbacks *self, PyObject *code, PyObject *offset, PyObject *exc, PyObject *flight)
{
    PyObject *site = NULL;
    int outcome = counted_flight_of_this_thread(self, flight, exc, &site);
    if (outcome > 0) {
        outcome = steal_equals(flight_attribute(self, flight, self->flight_state, str_state), self->propagating_state);
        if (outcome == 0) {
            Py_XDECREF(site);
            return raise_again_in_handler(self, exc, flight);
        }
    }
    PyObject *tb = outcome > 0 ? PyException_GetTraceback(exc) : NULL;  /* NULL: None */
    if (outcome > 0) {
        PyObject *tb_next = tb != NULL && PyTraceBack_Check(tb) ? (PyObject *)((PyTracebackObject *)tb)->tb_next
                                                                 : NULL;
        int linked = tb == NULL ? 0
                                : steal_is_identity(flight_attribute(self, flight, self->flight_tb_id, str_tb_id),
                                                    pointer_identity(tb_next != NULL ? tb_next : Py_None));
        if (linked == 0) {
            /* no link (C code rewrote the chain): the frame and instruction its PY_UNWIND saw */
            PyFrameObject *frame = PyEval_GetFrame();  /* borrowed */
            linked = steal_equals(flight_attribute(self, flight, self->flight_caller_lasti, str_caller_lasti), offset);
            if (linked > 0) {
                linked = steal_is_identity(
                    flight_attribute(self, flight, self->flight_caller_code_id, str_caller_code_id),
                    pointer_identity(code));
            }
            if (linked > 0) {
                linked = frame != NULL && steal_is_identity(flight_attribute(self, flight, self->flight_caller_id,
                                                                             str_caller_id),
                                                            pointer_identity((PyObject *)frame));
            }
        }
        outcome = linked;
    }
    if (outcome > 0) {
        int stop_iteration = steal_truth(site_attribute(self, site, self->site_stop_iteration, str_stop_iteration));
        outcome = stop_iteration == 0 ? 1 : stop_iteration < 0 ? -1 : swallowing_instruction(self, code, offset);
        outcome = outcome < 0 ? -1 : stop_iteration ? !outcome : 1;  /* swallowed here: Python counts it */
    }
    if (outcome > 0) {
        Py_ssize_t tb_identity = pointer_identity(tb != NULL ? tb : Py_None);
        PyObject *tb_id = recurring_int(&self->tb_identity, (unsigned long long)tb_identity, 1);
        PyObject *zero = tb_id != NULL ? PyLong_FromLong(0) : NULL;
        if (zero == NULL) {
            outcome = -1;
        }
        else {
            (void)set_flight_attribute(self, flight, self->flight_caller_id, str_caller_id, zero);
            (void)set_flight_attribute(self, flight, self->flight_tb_id, str_tb_id, tb_id);
        }
        Py_XDECREF(zero);
        Py_XDECREF(tb_id);
    }
    Py_XDECREF(tb);
    Py_XDECREF(site);
    return outcome;
}

/* FlightTable.on_reraise for a counted flight of this thread whose traceback is still the one it had (a bare `raise`
   in its handler, a `finally` or an `except` block's cleanup passing it on): propagating again from here. 1 done (or
   nothing to do: the shim's own frame), 0 when Python decides (a traceback the handler gave it, which Python checks is
   the exception being handled), -1 with an exception set. */
static int
reraise_counted_flight(ExceptionCallbacks *self, PyObject *code, PyObject *exc, PyObject *flight)
{
    PyObject *site = NULL;
    int outcome = counted_flight_of_this_thread(self, flight, exc, &site);
    Py_XDECREF(site);
    if (outcome > 0) {
        PyObject *tb = PyException_GetTraceback(exc);
        Py_ssize_t tb_identity = pointer_identity(tb != NULL ? tb : Py_None);
        Py_XDECREF(tb);
        outcome = steal_is_identity(flight_attribute(self, flight, self->flight_tb_id, str_tb_id), tb_identity);
    }
    uint64_t ck = 0;
    if (outcome > 0) {
        int known = code_key_from(self->code_keys, self->keys, code, &ck);
        if (known < 0) {
            return -1;
        }
        if (known > 0 && ck == 0) {
            return 1;  /* the shim's own frame */
        }
    }
    if (outcome > 0) {
        PyObject *now = PyLong_FromLongLong((long long)now_ns());
        if (now == NULL) {
            return -1;
        }
        (void)set_flight_attribute(self, flight, self->flight_state, str_state, self->propagating_state);
        (void)set_flight_attribute(self, flight, self->flight_last_ns, str_last_ns, now);
        Py_DECREF(now);
    }
    return outcome;
}

/* The Python callback, with the event's arguments. An exception out of it is one the failure policy
   re-raised (or the call itself failed, e.g. at the recursion limit): the policy decides again. */
static PyObject *
to_python(ExceptionCallbacks *self, PyObject *callback, PyObject *const *args)
{
    Py_INCREF(callback);
    PyObject *result = PyObject_Vectorcall(callback, args, 3, NULL);
    Py_DECREF(callback);
    if (result == NULL) {
        return apply_failure_policy(self->failed);
    }
    return result;
}

static int
exception_callbacks_complete(ExceptionCallbacks *self)
{
    return self->table != NULL && self->limits != NULL && self->keys != NULL && self->code_keys != NULL
           && self->on_raise != NULL && self->on_reraise != NULL && self->on_handled != NULL
           && self->on_unwind != NULL && self->failed != NULL && self->inflight != NULL && self->site_type != NULL
           && self->point_dicts[RAISE_POINTS] != NULL && self->flight_type != NULL && self->flight_prototype != NULL
           && self->flight_slots != NULL && self->handled_state != NULL && self->propagating_state != NULL
           && self->bootstrap_inner_code != NULL && self->fate_handled != NULL;
}

/* Made complete and not cleared since: read at every event, one flag instead of every field's test. */
static inline int
exception_callbacks_alive(ExceptionCallbacks *self)
{
    return self->alive;
}

static PyObject *
ExceptionCallbacks_raise(ExceptionCallbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 3) < 0) {
        return NULL;
    }
    if (!exception_callbacks_alive(self)) {
        Py_RETURN_NONE;
    }
    int counted = count_control_flow(self, args[0], args[1], args[2]);
    if (counted > 0) {
        self->counted++;
        Py_RETURN_NONE;
    }
    if (counted == 0) {
        PyObject *flight = flight_of(self, args[2]);
        if (flight != NULL) {
            counted = reach_caller(self, args[0], args[1], args[2], flight);
            Py_DECREF(flight);
            if (counted > 0) {
                if (counted == 2) {
                    self->flights_reraised++;
                }
                else {
                    self->flights_reached++;
                }
                Py_RETURN_NONE;
            }
        }
        else if (PyErr_Occurred()) {
            counted = -1;
        }
        else {
            counted = start_counted_flight(self, args[0], args[1], args[2]);
            if (counted > 0) {
                Py_RETURN_NONE;
            }
        }
    }
    if (counted < 0) {
        return apply_failure_policy(self->failed);
    }
    return to_python(self, self->on_raise, args);
}

/* What the C callbacks do with one event of a counted flight: 1 done, 0 when Python decides, -1 with an exception set. */
typedef int (*FlightEvent)(ExceptionCallbacks *self, PyObject *code, PyObject *exc, PyObject *flight);

/* RERAISE, EXCEPTION_HANDLED and PY_UNWIND: an exception without a flight has nothing to do (but at a RERAISE, where
   Python starts one for any but a closed generator's GeneratorExit: `to_python_without_flight`); one with a flight
   is taken by `event` (then counted in *taken, when given) or passed to `callback`. */
static PyObject *
flight_event(ExceptionCallbacks *self, PyObject *const *args, Py_ssize_t nargs, FlightEvent event,
             Py_ssize_t *taken, PyObject *callback, int to_python_without_flight)
{
    if (check_args(nargs, 3) < 0) {
        return NULL;
    }
    if (!exception_callbacks_alive(self)) {
        Py_RETURN_NONE;
    }
    PyObject *flight = flight_of(self, args[2]);
    if (flight == NULL) {
        if (PyErr_Occurred()) {
            return apply_failure_policy(self->failed);
        }
        if (to_python_without_flight && !Py_IS_TYPE(args[2], (PyTypeObject *)PyExc_GeneratorExit)) {
            return to_python(self, callback, args);  /* first seen here: Python starts its flight */
        }
        self->passed++;
        Py_RETURN_NONE;
    }
    int done = event(self, args[0], args[2], flight);
    Py_DECREF(flight);
    if (done > 0) {
        if (taken != NULL) {
            (*taken)++;
        }
        Py_RETURN_NONE;
    }
    if (done < 0) {
        return apply_failure_policy(self->failed);
    }
    return to_python(self, callback, args);
}

static PyObject *
ExceptionCallbacks_reraise(ExceptionCallbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    return flight_event(self, args, nargs, reraise_counted_flight, &self->flights_reraised, self->on_reraise, 1);
}

static PyObject *
ExceptionCallbacks_handled(ExceptionCallbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* handle_counted_flight counts the flights it marks handled itself */
    return flight_event(self, args, nargs, handle_counted_flight, NULL, self->on_handled, 0);
}

static PyObject *
ExceptionCallbacks_unwind(ExceptionCallbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    return flight_event(self, args, nargs, unwind_counted_flight, &self->flights_unwound, self->on_unwind, 0);
}

/* getattr(table, name) into *slot when it is a dict (or a list, `list`): 0, or -1 with an exception set. */
static int
table_container(PyObject *table, PyObject *name, int list, PyObject **slot)
{
    PyObject *value = PyObject_GetAttr(table, name);
    if (value == NULL) {
        return -1;
    }
    if (list ? !PyList_CheckExact(value) : !PyDict_CheckExact(value)) {
        PyErr_Format(PyExc_TypeError, "FlightTable.%U must be a %s", name, list ? "list" : "dict");
        Py_DECREF(value);
        return -1;
    }
    *slot = value;
    return 0;
}

/* program_threads' limits into self: 0, or -1 with an exception set. */
static int
read_limits(ExceptionCallbacks *self, PyObject *limits)
{
    if (steal_as_long(PyObject_GetAttr(limits, str_first_detailed), &self->first_detailed) < 0
        || steal_as_long(PyObject_GetAttr(limits, str_detail_interval), &self->detail_interval_ns) < 0
        || steal_as_long(PyObject_GetAttr(limits, str_max_handled_depth), &self->max_handled_depth) < 0) {
        return -1;
    }
    PyObject *opcodes = PyObject_GetAttr(limits, str_swallowing_opcodes);
    PyObject *iterator = opcodes == NULL ? NULL : PyObject_GetIter(opcodes);
    Py_XDECREF(opcodes);
    if (iterator == NULL) {
        return -1;
    }
    PyObject *item;
    while ((item = PyIter_Next(iterator)) != NULL) {
        long opcode = PyLong_AsLong(item);
        Py_DECREF(item);
        if (opcode < 0 || opcode > 255) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "SWALLOWS_STOP_ITERATION holds an opcode out of range");
            }
            break;
        }
        self->swallows_stop_iteration[opcode] = 1;
    }
    Py_DECREF(iterator);
    return PyErr_Occurred() ? -1 : 0;
}

/* Flight's slots (it must have only slots: no instance dict) and a prototype made by its __init__. */
static int
read_flight_layout(ExceptionCallbacks *self)
{
    PyTypeObject *type = self->flight_type;
    if (type->tp_dictoffset != 0 || type->tp_itemsize != 0 || type->tp_alloc == NULL) {
        PyErr_SetString(PyExc_TypeError, "program_threads.Flight must have __slots__ and no instance dict");
        return -1;
    }
    PyObject *names = PyObject_GetAttr((PyObject *)type, str_slots);
    if (names == NULL) {
        return -1;
    }
    if (!PyTuple_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "program_threads.Flight.__slots__ must be a tuple");
        Py_DECREF(names);
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    self->flight_slots = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(Py_ssize_t));
    if (self->flight_slots == NULL) {
        Py_DECREF(names);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if ((self->flight_slots[i] = object_slot_offset(type, PyTuple_GET_ITEM(names, i))) < 0) {
            Py_DECREF(names);
            return -1;
        }
    }
    self->flight_slot_count = count;
    Py_DECREF(names);
    Py_ssize_t lowest = count > 0 ? self->flight_slots[0] : -1, highest = lowest;
    for (Py_ssize_t i = 1; i < count; i++) {
        lowest = Py_MIN(lowest, self->flight_slots[i]);
        highest = Py_MAX(highest, self->flight_slots[i]);
    }
    /* distinct slots of a pointer each: count of them within count places fill them */
    self->flight_slots_start = count > 0 && highest - lowest == (count - 1) * (Py_ssize_t)sizeof(PyObject *) ? lowest
                                                                                                              : -1;
    if ((self->flight_exc_id = object_slot_offset(type, str_exc_id)) < 0
        || (self->flight_tb_id = object_slot_offset(type, str_tb_id)) < 0
        || (self->flight_ident = object_slot_offset(type, str_ident)) < 0
        || (self->flight_site = object_slot_offset(type, str_site)) < 0
        || (self->flight_last_ns = object_slot_offset(type, str_last_ns)) < 0
        || (self->flight_detailed = object_slot_offset(type, str_detailed)) < 0
        || (self->flight_state = object_slot_offset(type, str_state)) < 0
        || (self->flight_pending = object_slot_offset(type, str_pending)) < 0
        || (self->flight_fate = object_slot_offset(type, str_fate)) < 0
        || (self->flight_escaped_thread = object_slot_offset(type, str_escaped_thread)) < 0
        || (self->flight_frames_unwound = object_slot_offset(type, str_frames_unwound)) < 0
        || (self->flight_outermost = object_slot_offset(type, str_outermost)) < 0
        || (self->flight_caller_id = object_slot_offset(type, str_caller_id)) < 0
        || (self->flight_caller_code_id = object_slot_offset(type, str_caller_code_id)) < 0
        || (self->flight_caller_lasti = object_slot_offset(type, str_caller_lasti)) < 0
        || (self->flight_coroutine = object_slot_offset(type, str_coroutine)) < 0
        || (self->flight_reraises = object_slot_offset(type, str_reraises)) < 0) {
        return -1;
    }
    self->flight_prototype = PyObject_CallFunction((PyObject *)type, "iiiOi", 0, 0, 0, Py_None, 0);
    if (self->flight_prototype == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(self->flight_prototype, type)) {
        PyErr_SetString(PyExc_TypeError, "program_threads.Flight() must make a Flight");
        return -1;
    }
    return 0;
}

/* What the counted flights need of program_threads: Flight, HANDLED, MAX_IN_FLIGHT,
   _THREAD_BOOTSTRAP_INNER_CODE and _wire.FATE_HANDLED. 0, or -1 with an exception set. */
static int
read_flight_constants(ExceptionCallbacks *self, PyObject *limits)
{
    PyObject *flight_type = PyObject_GetAttr(limits, str_flight_class);
    if (flight_type == NULL) {
        return -1;
    }
    if (!PyType_Check(flight_type)) {
        PyErr_SetString(PyExc_TypeError, "program_threads.Flight must be a class");
        Py_DECREF(flight_type);
        return -1;
    }
    self->flight_type = (PyTypeObject *)flight_type;
    if (read_flight_layout(self) < 0) {
        return -1;
    }
    long long max_in_flight = 0;
    PyObject *wire = NULL;
    if ((self->handled_state = PyObject_GetAttr(limits, str_handled_state)) == NULL
        || (self->propagating_state = PyObject_GetAttr(limits, str_propagating_state)) == NULL
        || (self->bootstrap_inner_code = PyObject_GetAttr(limits, str_bootstrap_inner)) == NULL
        || steal_as_long(PyObject_GetAttr(limits, str_max_in_flight), &max_in_flight) < 0
        || (wire = PyObject_GetAttr(limits, str_wire)) == NULL
        || (self->fate_handled = PyObject_GetAttr(wire, str_fate_handled)) == NULL) {
        Py_XDECREF(wire);
        return -1;
    }
    Py_DECREF(wire);
    self->max_in_flight = (Py_ssize_t)max_in_flight;
    return 0;
}

/* What the callbacks read of the table and of program_threads, once. */
static int
read_table(ExceptionCallbacks *self, PyObject *table, PyObject *limits)
{
    if (table_container(table, str_inflight, 0, &self->inflight) < 0
        || table_container(table, str_pending_by_ident, 0, &self->pending_by_ident) < 0
        || table_container(table, str_closed_points, 0, &self->point_dicts[CLOSED_POINTS]) < 0
        || table_container(table, str_swallow_points, 0, &self->point_dicts[SWALLOW_POINTS]) < 0
        || table_container(table, str_empty_handler_points, 0, &self->point_dicts[EMPTY_HANDLER_POINTS]) < 0
        || table_container(table, str_dirty_sites, 1, &self->dirty_sites) < 0
        || table_container(table, str_raise_points, 0, &self->point_dicts[RAISE_POINTS]) < 0
        || (self->ignored_idents = PyObject_GetAttr(table, str_ignored_idents)) == NULL) {
        return -1;
    }
    if (read_flight_constants(self, limits) < 0) {
        return -1;
    }
    PyObject *site_type = PyObject_GetAttr(limits, str_site_class);
    if (site_type == NULL) {
        return -1;
    }
    if (!PyType_Check(site_type)) {
        PyErr_SetString(PyExc_TypeError, "program_threads.Site must be a class");
        Py_DECREF(site_type);
        return -1;
    }
    self->site_type = (PyTypeObject *)site_type;
    if (read_limits(self, limits) < 0) {
        return -1;
    }
    return (self->site_detailed = object_slot_offset(self->site_type, str_detailed)) < 0
                   || (self->site_last_detail_ns = object_slot_offset(self->site_type, str_last_detail_ns)) < 0
                   || (self->site_handled_counter = object_slot_offset(self->site_type, str_handled_counter)) < 0
                   || (self->site_dirty = object_slot_offset(self->site_type, str_dirty)) < 0
                   || (self->site_type_ref = object_slot_offset(self->site_type, str_type_ref)) < 0
                   || (self->site_type_id = object_slot_offset(self->site_type, str_type_id)) < 0
                   || (self->site_stop_iteration = object_slot_offset(self->site_type, str_stop_iteration)) < 0
               ? -1
               : 0;
}

static PyObject *
ExceptionCallbacks_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *table, *limits, *keys, *code_keys, *on_raise, *on_reraise, *on_handled, *on_unwind, *failed;
    PyObject *lifelines = Py_None;
    static char *keywords[] = {"table", "limits", "keys", "code_keys", "on_raise", "on_reraise", "on_handled",
                               "on_unwind", "failed", "lifelines", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!O!OOOOO|O:ExceptionCallbacks", keywords, &table, &limits,
                                     &PyDict_Type, &keys, CodeKeys_Type, &code_keys, &on_raise, &on_reraise,
                                     &on_handled, &on_unwind, &failed, &lifelines)) {
        return NULL;
    }
    if (!PyCallable_Check(on_raise) || !PyCallable_Check(on_reraise) || !PyCallable_Check(on_handled)
        || !PyCallable_Check(on_unwind) || !PyCallable_Check(failed)) {
        PyErr_SetString(PyExc_TypeError, "the Python callbacks and failed must be callable");
        return NULL;
    }
    ExceptionCallbacks *self = (ExceptionCallbacks *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    if (read_table(self, table, limits) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->table = Py_NewRef(table);
    self->limits = Py_NewRef(limits);
    self->keys = Py_NewRef(keys);
    self->code_keys = (CodeKeys *)Py_NewRef(code_keys);
    self->lifelines = lifelines == Py_None ? NULL : Py_NewRef(lifelines);
    self->on_raise = Py_NewRef(on_raise);
    self->on_reraise = Py_NewRef(on_reraise);
    self->on_handled = Py_NewRef(on_handled);
    self->on_unwind = Py_NewRef(on_unwind);
    self->failed = Py_NewRef(failed);
    self->alive = exception_callbacks_complete(self);
    return (PyObject *)self;
}

static int
ExceptionCallbacks_traverse(ExceptionCallbacks *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->table);
    Py_VISIT(self->limits);
    Py_VISIT(self->keys);
    Py_VISIT(self->lifelines);  /* code_keys holds no object */
    Py_VISIT(self->on_raise);
    Py_VISIT(self->on_reraise);
    Py_VISIT(self->on_handled);
    Py_VISIT(self->on_unwind);
    Py_VISIT(self->failed);
    Py_VISIT(self->inflight);
    Py_VISIT(self->pending_by_ident);
    Py_VISIT(self->ignored_idents);
    for (int i = 0; i < POINT_DICTS; i++) {
        Py_VISIT(self->point_dicts[i]);
    }
    Py_VISIT(self->dirty_sites);
    Py_VISIT(self->site_type);
    Py_VISIT(self->flight_type);
    Py_VISIT(self->flight_prototype);
    Py_VISIT(self->spare_flight);
    Py_VISIT(self->handled_state);
    Py_VISIT(self->propagating_state);
    Py_VISIT(self->bootstrap_inner_code);
    Py_VISIT(self->fate_handled);
    return 0;
}

static int
ExceptionCallbacks_clear(ExceptionCallbacks *self)
{
    /* A cleared object is still safe to call: every event then does nothing (exception_callbacks_alive). */
    self->alive = 0;
    self->pending_list = NULL;
    self->known_flight = NULL;
    Py_CLEAR(self->table);
    Py_CLEAR(self->limits);
    Py_CLEAR(self->keys);
    if (self->code_keys != NULL) {
        /* Its memory goes now (the lifelines may keep the object): a sharer finds it empty and refills it. */
        code_keys_release(self->code_keys);
        Py_CLEAR(self->code_keys);
    }
    Py_CLEAR(self->lifelines);
    Py_CLEAR(self->on_raise);
    Py_CLEAR(self->on_reraise);
    Py_CLEAR(self->on_handled);
    Py_CLEAR(self->on_unwind);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->inflight);
    Py_CLEAR(self->pending_by_ident);
    Py_CLEAR(self->ignored_idents);
    for (int i = 0; i < POINT_DICTS; i++) {
        Py_CLEAR(self->point_dicts[i]);
    }
    Py_CLEAR(self->dirty_sites);
    Py_CLEAR(self->site_type);
    Py_CLEAR(self->flight_type);
    Py_CLEAR(self->flight_prototype);
    Py_CLEAR(self->spare_flight);
    PyMem_Free(self->flight_slots);
    self->flight_slots = NULL;
    self->flight_slot_count = 0;
    Py_CLEAR(self->handled_state);
    Py_CLEAR(self->propagating_state);
    Py_CLEAR(self->bootstrap_inner_code);
    Py_CLEAR(self->fate_handled);
    Py_CLEAR(self->thread_ident.object);
    Py_CLEAR(self->exc_identity.object);
    Py_CLEAR(self->tb_identity.object);
    for (Py_ssize_t i = 0; i < POINT_KEY_SLOTS; i++) {
        Py_CLEAR(self->point_keys[i].point);
        Py_CLEAR(self->point_keys[i].closed_point);
    }
    return 0;
}

static void
ExceptionCallbacks_dealloc(ExceptionCallbacks *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)ExceptionCallbacks_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef ExceptionCallbacks_methods[] = {
    {"raise_", (PyCFunction)(void (*)(void))ExceptionCallbacks_raise, METH_FASTCALL, "RAISE(code, offset, exception)"},
    {"reraise", (PyCFunction)(void (*)(void))ExceptionCallbacks_reraise, METH_FASTCALL,
     "RERAISE(code, offset, exception)"},
    {"exception_handled", (PyCFunction)(void (*)(void))ExceptionCallbacks_handled, METH_FASTCALL,
     "EXCEPTION_HANDLED(code, offset, exception)"},
    {"py_unwind", (PyCFunction)(void (*)(void))ExceptionCallbacks_unwind, METH_FASTCALL,
     "PY_UNWIND(code, offset, exception)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ExceptionCallbacks_members[] = {
    {"counted", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, counted), Py_READONLY,
     "RAISE events counted in C (a closed generator's GeneratorExit, a swallowed StopIteration, an exception "
     "an empty handler catches)"},
    {"passed", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, passed), Py_READONLY,
     "RERAISE, EXCEPTION_HANDLED and PY_UNWIND events that had nothing to do"},
    {"flights_started", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, flights_started), Py_READONLY,
     "counted flights started by a RAISE in C"},
    {"flights_handled", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, flights_handled), Py_READONLY,
     "EXCEPTION_HANDLED of counted flights, in C"},
    {"flights_settled", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, flights_settled), Py_READONLY,
     "handled flights concluded as handled at their thread's next RAISE, in C"},
    {"flights_reraised", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, flights_reraised), Py_READONLY,
     "RERAISE events of counted flights with the traceback they had, and RAISE events of handled ones inside their "
     "handler, taken in C"},
    {"flights_unwound", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, flights_unwound), Py_READONLY,
     "PY_UNWIND events of counted flights out of a frame of the program, taken in C"},
    {"flights_reached", Py_T_PYSSIZET, offsetof(ExceptionCallbacks, flights_reached), Py_READONLY,
     "RAISE events of counted flights in the Python caller they unwound into, taken in C"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot ExceptionCallbacks_slots[] = {
    {Py_tp_members, ExceptionCallbacks_members},
    {Py_tp_doc, "The exception tracker's callbacks: control-flow idioms in C, everything else in Python."},
    {Py_tp_new, ExceptionCallbacks_new},
    {Py_tp_dealloc, ExceptionCallbacks_dealloc},
    {Py_tp_traverse, ExceptionCallbacks_traverse},
    {Py_tp_clear, ExceptionCallbacks_clear},
    {Py_tp_methods, ExceptionCallbacks_methods},
    {0, NULL},
};

static PyType_Spec ExceptionCallbacks_spec = {
    .name = "telemetry_shim._native.ExceptionCallbacks",
    .basicsize = sizeof(ExceptionCallbacks),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = ExceptionCallbacks_slots,
};

/* ---- NoteWatch ------------------------------------------------------------------------------ */

/* The notes watch's CALL and C_RETURN callbacks (PEP 678: a note added to an exception that is then
   swallowed shows in no exception event). CALL keeps the call sites of BaseException.add_note and DISABLEs
   every other one, so each call site costs one event, once; C_RETURN, which fires only where CALL is still
   on, hands add_note's returns to the Python callback that reads the notes. In C because the first
   execution of every call site of the program comes here: a Python callback there ran a Python frame at
   every new call site (a PEP 523 frame evaluator saw it, profile.py saw it inside a C call's events) and cost
   start-up the most. While `armed` (the fork handlers' one-shot past call), CALL goes to the Python twin,
   which also decides add_note. */

typedef struct {
    PyObject_HEAD
    PyObject *add_note;       /* BaseException.add_note */
    PyObject *disable;        /* sys.monitoring.DISABLE */
    PyObject *on_call;        /* the Python CALL callback, while armed */
    PyObject *on_note_added;  /* the Python C_RETURN callback, at add_note's call sites */
    char armed;               /* Py_T_BOOL: a char */
} NoteWatch;

static PyTypeObject *NoteWatch_Type;

/* Is `callable` add_note: the method descriptor, or a builtin method of that name (bound to an
   exception), as the Python twin decides. */
static inline int
is_add_note(NoteWatch *self, PyObject *callable)
{
    if (callable == self->add_note) {
        return 1;
    }
    if (!Py_IS_TYPE(callable, &PyCFunction_Type)) {
        return 0;
    }
    PyMethodDef *method = ((PyCFunctionObject *)callable)->m_ml;
    return method != NULL && method->ml_name != NULL && strcmp(method->ml_name, "add_note") == 0;
}

static int
note_watch_alive(NoteWatch *self)
{
    return self->add_note != NULL && self->disable != NULL && self->on_call != NULL && self->on_note_added != NULL;
}

static PyObject *
NoteWatch_call(NoteWatch *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 4) < 0) {
        return NULL;
    }
    if (!note_watch_alive(self)) {
        Py_RETURN_NONE;
    }
    if (self->armed) {
        return PyObject_Vectorcall(self->on_call, args, 4, NULL);
    }
    if (is_add_note(self, args[2])) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(self->disable);
}

static PyObject *
NoteWatch_c_return(NoteWatch *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_args(nargs, 4) < 0) {
        return NULL;
    }
    if (!note_watch_alive(self) || !is_add_note(self, args[2])) {
        Py_RETURN_NONE;
    }
    return PyObject_Vectorcall(self->on_note_added, args, 4, NULL);
}

static PyObject *
NoteWatch_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *add_note, *disable, *on_call, *on_note_added;
    static char *keywords[] = {"add_note", "disable", "on_call", "on_note_added", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOO:NoteWatch", keywords, &add_note, &disable, &on_call,
                                     &on_note_added)) {
        return NULL;
    }
    if (!PyCallable_Check(on_call) || !PyCallable_Check(on_note_added)) {
        PyErr_SetString(PyExc_TypeError, "on_call and on_note_added must be callable");
        return NULL;
    }
    NoteWatch *self = (NoteWatch *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->add_note = Py_NewRef(add_note);
    self->disable = Py_NewRef(disable);
    self->on_call = Py_NewRef(on_call);
    self->on_note_added = Py_NewRef(on_note_added);
    return (PyObject *)self;
}

static int
NoteWatch_traverse(NoteWatch *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->add_note);
    Py_VISIT(self->disable);
    Py_VISIT(self->on_call);
    Py_VISIT(self->on_note_added);
    return 0;
}

static int
NoteWatch_clear(NoteWatch *self)
{
    /* A cleared watch is still safe to call: every event then does nothing (note_watch_alive). */
    Py_CLEAR(self->add_note);
    Py_CLEAR(self->disable);
    Py_CLEAR(self->on_call);
    Py_CLEAR(self->on_note_added);
    return 0;
}

static void
NoteWatch_dealloc(NoteWatch *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)NoteWatch_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef NoteWatch_methods[] = {
    {"call", (PyCFunction)(void (*)(void))NoteWatch_call, METH_FASTCALL, "CALL(code, offset, callable, arg0)"},
    {"c_return", (PyCFunction)(void (*)(void))NoteWatch_c_return, METH_FASTCALL,
     "C_RETURN(code, offset, callable, arg0)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef NoteWatch_members[] = {
    {"armed", Py_T_BOOL, offsetof(NoteWatch, armed), 0,
     "CALL goes to the Python callback (a one-shot past call is armed)"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot NoteWatch_slots[] = {
    {Py_tp_members, NoteWatch_members},
    {Py_tp_doc, "The notes watch's CALL and C_RETURN callbacks."},
    {Py_tp_new, NoteWatch_new},
    {Py_tp_dealloc, NoteWatch_dealloc},
    {Py_tp_traverse, NoteWatch_traverse},
    {Py_tp_clear, NoteWatch_clear},
    {Py_tp_methods, NoteWatch_methods},
    {0, NULL},
};

static PyType_Spec NoteWatch_spec = {
    .name = "telemetry_shim._native.NoteWatch",
    .basicsize = sizeof(NoteWatch),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = NoteWatch_slots,
};

/* ---- StartupCallbacks ------------------------------------------------------------------------ */

/* The start-up phase's PY_START and PY_RETURN callbacks where the recorder's call callbacks do not take its
   events (exceptions mode); _startup._own_callbacks makes their Python twin, which they call for everything
   they do not end themselves. The events of importlib's own code objects (roles below `python_roles_from`) are
   appended here to the phase's raw events as the twin's on_event appends them, in one C call: (time, role |
   event, thread, value), where value is, at an import's start, (identity(frame), identity() of the nearest
   _find_and_load frame among its callers or 0, the frame's `name`), at its return identity(frame), and None for
   the other roles. The ready-on function's and the main module's events, an import's return while `arming`
   (the ready-on function waits for its module) and events beyond the phase's bound go to the twin. No Python
   frame runs for importlib's events; an error is swallowed, as the twin swallows it. */

typedef struct {
    PyObject_HEAD
    PyObject *roles;      /* dict: identity(code) -> (role, code), StartupRecorder._roles (changed in place) */
    PyObject *events;     /* list: StartupRecorder.events (drained in place, never rebound) */
    PyObject *on_start;   /* the Python twin's callbacks */
    PyObject *on_return;
    long import_role;     /* ROLE_IMPORT */
    long python_roles_from;  /* ROLE_HANDLER: it and the roles above go to the twin */
    long return_tag;      /* EVENT_RETURN */
    Py_ssize_t max_events;   /* MAX_EVENTS items of four */
    char arming;          /* Py_T_BOOL: an import's return goes to the twin */
} StartupCallbacks;

static PyTypeObject *StartupCallbacks_Type;
static PyObject *str_name;

static int
startup_callbacks_alive(StartupCallbacks *self)
{
    return self->roles != NULL && self->events != NULL && self->on_start != NULL && self->on_return != NULL;
}

/* An import's start value: (identity(frame), identity() of the nearest _find_and_load frame among its callers
   or 0, frame's `name` or None). A new reference, or NULL with an exception set. */
static PyObject *
import_start_value(PyObject *import_code, PyFrameObject *frame)
{
    Py_ssize_t enclosing = 0;
    PyFrameObject *caller = PyFrame_GetBack(frame);  /* new references from here up */
    while (caller != NULL) {
        PyCodeObject *caller_code = PyFrame_GetCode(caller);
        int is_import = (PyObject *)caller_code == import_code;
        Py_DECREF(caller_code);
        if (is_import) {
            /* Its frame object stays alive with its frame (as the twin's f_back): the identity stays its. */
            enclosing = pointer_identity((PyObject *)caller);
            Py_DECREF(caller);
            break;
        }
        PyFrameObject *next = PyFrame_GetBack(caller);
        Py_DECREF(caller);
        caller = next;
    }
    PyObject *name = PyFrame_GetVar(frame, str_name);
    if (name == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_NameError)) {
            return NULL;
        }
        PyErr_Clear();
        name = Py_NewRef(Py_None);
    }
    PyObject *frame_id = PyLong_FromSsize_t(pointer_identity((PyObject *)frame));
    PyObject *enclosing_id = PyLong_FromSsize_t(enclosing);
    PyObject *value = frame_id == NULL || enclosing_id == NULL ? NULL : PyTuple_Pack(3, frame_id, enclosing_id, name);
    Py_XDECREF(frame_id);
    Py_XDECREF(enclosing_id);
    Py_DECREF(name);
    return value;
}

/* One PY_START (is_return 0) or PY_RETURN of `code`: 1 done (appended, or nothing to do), 0 for the twin, -1
   with an exception set. */
static int
startup_event(StartupCallbacks *self, PyObject *code, int is_return)
{
    if (PyDict_GET_SIZE(self->roles) == 0) {
        return 1;
    }
    PyObject *key = PyLong_FromSsize_t(pointer_identity(code));
    if (key == NULL) {
        return -1;
    }
    PyObject *entry = PyDict_GetItemWithError(self->roles, key);  /* borrowed */
    Py_DECREF(key);
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 1;  /* not one of the phase's codes: nothing to do, as in the twin */
    }
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 1) {
        return 0;
    }
    long role = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
    if (role == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (role >= self->python_roles_from || PyList_GET_SIZE(self->events) >= self->max_events
        || (role == self->import_role && is_return && self->arming)) {
        return 0;
    }
    long long now = (long long)now_ns();
    PyObject *value = NULL;
    if (role == self->import_role) {
        PyFrameObject *frame = PyEval_GetFrame();  /* borrowed: the frame of `code` */
        if (frame == NULL) {
            return 0;
        }
        value = is_return ? PyLong_FromSsize_t(pointer_identity((PyObject *)frame))
                          : import_start_value(code, frame);
    }
    else {
        value = Py_NewRef(Py_None);
    }
    PyObject *time = PyLong_FromLongLong(now);
    PyObject *tag = PyLong_FromLong(role | (is_return ? self->return_tag : 0));
    PyObject *thread = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    PyObject *item = value == NULL || time == NULL || tag == NULL || thread == NULL
                         ? NULL
                         : PyTuple_Pack(4, time, tag, thread, value);
    Py_XDECREF(value);
    Py_XDECREF(time);
    Py_XDECREF(tag);
    Py_XDECREF(thread);
    if (item == NULL) {
        return -1;
    }
    /* One call: the four values land together or not at all (the sender reads them by fours). */
    Py_ssize_t end = PyList_GET_SIZE(self->events);
    int outcome = PyList_SetSlice(self->events, end, end, item);
    Py_DECREF(item);
    return outcome < 0 ? -1 : 1;
}

/* PY_START (code, offset) or PY_RETURN (code, offset, value): ended here, or the twin's callback. */
static PyObject *
startup_callback(StartupCallbacks *self, PyObject *const *args, Py_ssize_t nargs, int is_return)
{
    if (check_args(nargs, is_return ? 3 : 2) < 0) {
        return NULL;
    }
    if (!startup_callbacks_alive(self)) {
        Py_RETURN_NONE;
    }
    int done = startup_event(self, args[0], is_return);
    if (done == 0) {
        return PyObject_Vectorcall(is_return ? self->on_return : self->on_start, args, nargs, NULL);
    }
    if (done < 0) {
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyObject *
StartupCallbacks_py_start(StartupCallbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    return startup_callback(self, args, nargs, 0);
}

static PyObject *
StartupCallbacks_py_return(StartupCallbacks *self, PyObject *const *args, Py_ssize_t nargs)
{
    return startup_callback(self, args, nargs, 1);
}

static PyObject *
StartupCallbacks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *roles, *events, *on_start, *on_return;
    long import_role, python_roles_from, return_tag;
    Py_ssize_t max_events;
    static char *keywords[] = {"roles", "events", "on_start", "on_return", "import_role", "python_roles_from",
                               "return_tag", "max_events", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$O!O!OOllln:StartupCallbacks", keywords, &PyDict_Type, &roles,
                                     &PyList_Type, &events, &on_start, &on_return, &import_role, &python_roles_from,
                                     &return_tag, &max_events)) {
        return NULL;
    }
    if (!PyCallable_Check(on_start) || !PyCallable_Check(on_return)) {
        PyErr_SetString(PyExc_TypeError, "on_start and on_return must be callable");
        return NULL;
    }
    StartupCallbacks *self = (StartupCallbacks *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->roles = Py_NewRef(roles);
    self->events = Py_NewRef(events);
    self->on_start = Py_NewRef(on_start);
    self->on_return = Py_NewRef(on_return);
    self->import_role = import_role;
    self->python_roles_from = python_roles_from;
    self->return_tag = return_tag;
    self->max_events = max_events;
    return (PyObject *)self;
}

static int
StartupCallbacks_traverse(StartupCallbacks *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->roles);
    Py_VISIT(self->events);
    Py_VISIT(self->on_start);
    Py_VISIT(self->on_return);
    return 0;
}

static int
StartupCallbacks_clear(StartupCallbacks *self)
{
    /* Cleared, the callbacks are still safe to call: every event then does nothing (startup_callbacks_alive). */
    Py_CLEAR(self->roles);
    Py_CLEAR(self->events);
    Py_CLEAR(self->on_start);
    Py_CLEAR(self->on_return);
    return 0;
}

static void
StartupCallbacks_dealloc(StartupCallbacks *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)StartupCallbacks_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef StartupCallbacks_methods[] = {
    {"py_start", (PyCFunction)(void (*)(void))StartupCallbacks_py_start, METH_FASTCALL, "PY_START(code, offset)"},
    {"py_return", (PyCFunction)(void (*)(void))StartupCallbacks_py_return, METH_FASTCALL,
     "PY_RETURN(code, offset, value)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef StartupCallbacks_members[] = {
    {"arming", Py_T_BOOL, offsetof(StartupCallbacks, arming), 0,
     "an import's return goes to the Python twin (the ready-on function waits for its module)"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot StartupCallbacks_slots[] = {
    {Py_tp_members, StartupCallbacks_members},
    {Py_tp_doc, "The start-up phase's PY_START and PY_RETURN callbacks."},
    {Py_tp_new, StartupCallbacks_new},
    {Py_tp_dealloc, StartupCallbacks_dealloc},
    {Py_tp_traverse, StartupCallbacks_traverse},
    {Py_tp_clear, StartupCallbacks_clear},
    {Py_tp_methods, StartupCallbacks_methods},
    {0, NULL},
};

static PyType_Spec StartupCallbacks_spec = {
    .name = "telemetry_shim._native.StartupCallbacks",
    .basicsize = sizeof(StartupCallbacks),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = StartupCallbacks_slots,
};

/* ---- Outbox --------------------------------------------------------------------------------- */

/* What one sender tick writes, in memory kept from tick to tick, and the write itself with the GIL
   released once.

   Why: socket.send() takes the GIL back after every write, and a socket's buffer takes a part of a
   frame at a time; after each part the sender waits for a program that computes to hand the GIL
   over (up to the switch interval, 5 ms), which caps what it ships far below what the C callbacks
   record. New objects for every tick's records cost page faults as well. Here the records are copied
   twice, into memory whose pages stay mapped (staged under the sender's lock, then framed behind the
   frames that must precede them), and sent while the callbacks fill the buffer. */

typedef struct {
    size_t end;                    /* where the frame ends in the outbox's bytes */
    Py_ssize_t records;            /* the records it carries (0 but for EVENTS frames) */
} OutboxFrame;

typedef struct {
    PyObject_HEAD
    unsigned char frame_type;      /* EVENTS */
    Py_ssize_t max_records;        /* per EVENTS frame */
    uint64_t *staged;              /* records taken from a RecordBuffer, not yet framed */
    Py_ssize_t staged_words;
    size_t staged_allocated;
    unsigned char *bytes;          /* the frames to write, in order */
    size_t used;
    size_t allocated;
    OutboxFrame *frames_at;        /* each frame's end in `bytes` and records */
    Py_ssize_t frames;
    size_t frames_allocated;
} Outbox;

static PyTypeObject *Outbox_Type;

static int
grow(void **memory, size_t *allocated, size_t needed, size_t item)
{
    if (needed <= *allocated) {
        return 0;
    }
    size_t size = *allocated > 0 ? *allocated : 64;
    while (size < needed) {
        if (size > SIZE_MAX / 2 / item) {
            PyErr_NoMemory();
            return -1;
        }
        size *= 2;
    }
    void *grown = realloc(*memory, size * item);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *memory = grown;
    *allocated = size;
    return 0;
}

static PyObject *
Outbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int frame_type = 0;
    Py_ssize_t max_records = 0;
    static char *keywords[] = {"events_frame_type", "max_records_per_frame", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "in:Outbox", keywords, &frame_type, &max_records)) {
        return NULL;
    }
    if (frame_type < 0 || frame_type > 255 || max_records < 1 || max_records > (Py_ssize_t)(UINT32_MAX / 16)) {
        PyErr_SetString(PyExc_ValueError, "Outbox: a frame type is a byte; max_records_per_frame is positive");
        return NULL;
    }
    Outbox *self = (Outbox *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->frame_type = (unsigned char)frame_type;
    self->max_records = max_records;
    return (PyObject *)self;
}

static void
Outbox_dealloc(Outbox *self)
{
    PyTypeObject *type = Py_TYPE(self);
    free(self->staged);
    free(self->bytes);
    free(self->frames_at);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* take_records(buffer, words): moves the first `words` words of a RecordBuffer to the stage (they
   leave the buffer, as `del buf[:words]` does). Called under the sender's lock: one memcpy. */
static PyObject *
Outbox_take_records(Outbox *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], RecordBuffer_Type)) {
        PyErr_SetString(PyExc_TypeError, "take_records(RecordBuffer, words)");
        return NULL;
    }
    RecordBuffer *buffer = (RecordBuffer *)args[0];
    Py_ssize_t words = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (words == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (words < 0 || words > buffer->length || words % 2 != 0) {
        PyErr_SetString(PyExc_ValueError, "take_records: an even number of words the buffer holds");
        return NULL;
    }
    if (words == 0) {
        Py_RETURN_NONE;  /* nothing staged may be allocated yet: memcpy takes no NULL */
    }
    if (grow((void **)&self->staged, &self->staged_allocated, (size_t)(self->staged_words + words), sizeof(uint64_t)) < 0) {
        return NULL;
    }
    memcpy(self->staged + self->staged_words, buffer->words, (size_t)words * sizeof(uint64_t));
    self->staged_words += words;
    memmove(buffer->words, buffer->words + words, (size_t)(buffer->length - words) * sizeof(uint64_t));
    buffer->length -= words;
    Py_RETURN_NONE;
}

static int
outbox_begin_frame(Outbox *self, size_t size, Py_ssize_t records)
{
    if (grow((void **)&self->bytes, &self->allocated, self->used + size, 1) < 0
        || grow((void **)&self->frames_at, &self->frames_allocated, (size_t)self->frames + 1, sizeof(OutboxFrame)) < 0) {
        return -1;
    }
    self->frames_at[self->frames] = (OutboxFrame){.end = self->used + size, .records = records};
    self->frames++;
    return 0;
}

/* add_frame(frame): an encoded frame (bytes), written after those added before it. */
static PyObject *
Outbox_add_frame(Outbox *self, PyObject *frame)
{
    if (!PyBytes_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "add_frame(bytes)");
        return NULL;
    }
    size_t size = (size_t)PyBytes_GET_SIZE(frame);
    size_t at = self->used;
    if (outbox_begin_frame(self, size, 0) < 0) {
        return NULL;
    }
    if (size > 0) {
        memcpy(self->bytes + at, PyBytes_AS_STRING(frame), size);
    }
    self->used += size;
    Py_RETURN_NONE;
}

/* add_records(): the staged records as EVENTS frames (a 5-byte header: type, payload size as a
   little-endian uint32; the records' words little-endian), after the frames added before. */
static PyObject *
Outbox_add_records(Outbox *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t records = self->staged_words / 2;
    for (Py_ssize_t first = 0; first < records; first += self->max_records) {
        Py_ssize_t count = records - first < self->max_records ? records - first : self->max_records;
        uint32_t payload = (uint32_t)(count * 16);
        size_t at = self->used;
        if (outbox_begin_frame(self, 5 + (size_t)payload, count) < 0) {
            return NULL;
        }
        unsigned char *out = self->bytes + at;
        out[0] = self->frame_type;
        out[1] = (unsigned char)(payload & 0xFF);
        out[2] = (unsigned char)((payload >> 8) & 0xFF);
        out[3] = (unsigned char)((payload >> 16) & 0xFF);
        out[4] = (unsigned char)((payload >> 24) & 0xFF);
        const uint64_t *words = self->staged + 2 * first;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(out + 5, words, payload);
#else
        for (Py_ssize_t i = 0; i < 2 * count; i++) {
            for (int b = 0; b < 8; b++) {
                out[5 + 8 * i + b] = (unsigned char)(words[i] >> (8 * b));
            }
        }
#endif
        self->used += 5 + (size_t)payload;
    }
    self->staged_words = 0;
    Py_RETURN_NONE;
}

/* discard(): forgets every frame and staged record (nothing to write them to). */
static PyObject *
Outbox_discard(Outbox *self, PyObject *Py_UNUSED(ignored))
{
    self->staged_words = 0;
    self->used = 0;
    self->frames = 0;
    Py_RETURN_NONE;
}

/* send(fd, timeout_ms) -> (frames written in full, records in them, errno or 0). Writes the frames
   with the GIL released once, then empties the outbox whatever happened (a frame cut in the middle
   leaves the stream unusable: the caller gives the connection up on an error). A wait longer than
   timeout_ms for room in the socket gives ETIMEDOUT, as the socket's own timeout does. */
static PyObject *
Outbox_send(Outbox *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(fd, timeout_ms)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long timeout_ms = PyLong_AsLong(args[1]);
    if (timeout_ms == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX || timeout_ms < 0 || timeout_ms > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "send: fd and timeout_ms must be non-negative ints");
        return NULL;
    }
    size_t sent = 0;
    int error = 0;
    const unsigned char *bytes = self->bytes;
    size_t used = self->used;
    /* Nothing touches the outbox meanwhile: only the sender's thread uses it. */
    Py_BEGIN_ALLOW_THREADS
    while (sent < used) {
        ssize_t n = send((int)fd, bytes + sent, used - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            sent += (size_t)n;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            error = errno;
            break;
        }
        struct pollfd wait = {.fd = (int)fd, .events = POLLOUT};
        int ready = poll(&wait, 1, (int)timeout_ms);
        if (ready == 0) {
            error = ETIMEDOUT;
            break;
        }
        if (ready < 0 && errno != EINTR) {
            error = errno;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    Py_ssize_t frames = 0;
    Py_ssize_t records = 0;
    while (frames < self->frames && self->frames_at[frames].end <= sent) {
        records += self->frames_at[frames].records;
        frames++;
    }
    self->used = 0;
    self->frames = 0;
    return Py_BuildValue("(nni)", frames, records, error);
}

static Py_ssize_t
Outbox_len(Outbox *self)
{
    return self->frames;
}

static PyMethodDef Outbox_methods[] = {
    {"take_records", (PyCFunction)(void (*)(void))Outbox_take_records, METH_FASTCALL,
     "take_records(buffer, words): moves the buffer's first words to the stage."},
    {"add_frame", (PyCFunction)Outbox_add_frame, METH_O, "add_frame(bytes): an encoded frame, in order."},
    {"add_records", (PyCFunction)Outbox_add_records, METH_NOARGS, "The staged records as EVENTS frames, in order."},
    {"discard", (PyCFunction)Outbox_discard, METH_NOARGS, "Forgets every frame and staged record."},
    {"send", (PyCFunction)(void (*)(void))Outbox_send, METH_FASTCALL,
     "send(fd, timeout_ms) -> (frames written in full, records in them, errno or 0); the GIL released meanwhile."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Outbox_slots[] = {
    {Py_tp_doc, "The frames of one sender tick, in memory kept from tick to tick, written with the GIL released."},
    {Py_tp_new, Outbox_new},
    {Py_tp_dealloc, Outbox_dealloc},
    {Py_tp_methods, Outbox_methods},
    {Py_sq_length, Outbox_len},
    {0, NULL},
};

static PyType_Spec Outbox_spec = {
    .name = "telemetry_shim._native.Outbox",
    .basicsize = sizeof(Outbox),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Outbox_slots,
};

/* ---- module --------------------------------------------------------------------------------- */

static int
native_exec(PyObject *module)
{
    for (int kind = 0; kind <= KIND_UNWIND; kind++) {
        if (kind_numbers[kind] == NULL) {
            kind_numbers[kind] = PyLong_FromLong(kind);
            if (kind_numbers[kind] == NULL) {
                return -1;
            }
        }
    }
    /* Created once per process: a module imported again (its entry removed from sys.modules)
       shares them, so objects of the first import keep working with the second. */
    if (RecordBuffer_Type == NULL) {
        RecordBuffer_Type = (PyTypeObject *)PyType_FromSpec(&RecordBuffer_spec);
        if (RecordBuffer_Type == NULL) {
            return -1;
        }
    }
    if (CodeKeys_Type == NULL) {
        CodeKeys_Type = (PyTypeObject *)PyType_FromSpec(&CodeKeys_spec);
        if (CodeKeys_Type == NULL) {
            return -1;
        }
    }
    if (Callbacks_Type == NULL) {
        Callbacks_Type = (PyTypeObject *)PyType_FromSpec(&Callbacks_spec);
        if (Callbacks_Type == NULL) {
            return -1;
        }
    }
    if (ExceptionCallbacks_Type == NULL) {
        ExceptionCallbacks_Type = (PyTypeObject *)PyType_FromSpec(&ExceptionCallbacks_spec);
        if (ExceptionCallbacks_Type == NULL) {
            return -1;
        }
    }
    if (Outbox_Type == NULL) {
        Outbox_Type = (PyTypeObject *)PyType_FromSpec(&Outbox_spec);
        if (Outbox_Type == NULL) {
            return -1;
        }
    }
    if (NoteWatch_Type == NULL) {
        NoteWatch_Type = (PyTypeObject *)PyType_FromSpec(&NoteWatch_spec);
        if (NoteWatch_Type == NULL) {
            return -1;
        }
    }
    if (StartupCallbacks_Type == NULL) {
        StartupCallbacks_Type = (PyTypeObject *)PyType_FromSpec(&StartupCallbacks_spec);
        if (StartupCallbacks_Type == NULL) {
            return -1;
        }
    }
    if (Counter_Type == NULL) {
        Counter_Type = (PyTypeObject *)PyType_FromSpec(&Counter_spec);
        if (Counter_Type == NULL) {
            return -1;
        }
    }
    struct {
        PyObject **name;
        const char *text;
    } names[] = {
        {&str_inflight, "inflight"}, {&str_closed_points, "closed_points"}, {&str_swallow_points, "swallow_points"},
        {&str_empty_handler_points, "empty_handler_points"},
        {&str_pending_by_ident, "pending_by_ident"}, {&str_ignored_idents, "_ignored_idents"},
        {&str_type_ref, "type_ref"}, {&str_dirty_sites, "dirty_sites"},
        {&str_detailed, "detailed"}, {&str_last_detail_ns, "last_detail_ns"}, {&str_handled_counter, "handled_counter"},
        {&str_dirty, "dirty"}, {&str_site_class, "Site"}, {&str_first_detailed, "FIRST_DETAILED_PER_SITE"},
        {&str_detail_interval, "SITE_DETAIL_INTERVAL_NS"}, {&str_swallowing_opcodes, "SWALLOWS_STOP_ITERATION"},
        {&str_raise_points, "raise_points"}, {&str_flight_class, "Flight"}, {&str_handled_state, "HANDLED"},
        {&str_max_in_flight, "MAX_IN_FLIGHT"}, {&str_bootstrap_inner, "_THREAD_BOOTSTRAP_INNER_CODE"},
        {&str_wire, "_wire"}, {&str_fate_handled, "FATE_HANDLED"}, {&str_exc_id, "exc_id"}, {&str_tb_id, "tb_id"},
        {&str_ident, "ident"}, {&str_site, "site"}, {&str_last_ns, "last_ns"}, {&str_pending, "pending"},
        {&str_state, "state"}, {&str_fate, "fate"}, {&str_escaped_thread, "escaped_thread"},
        {&str_type_id, "type_id"}, {&str_asyncio_hooked, "asyncio_hooked"},
        {&str_asyncio_base_events, "asyncio.base_events"}, {&str_conclude, "conclude"}, {&str_name, "name"}, {&str_slots, "__slots__"},
        {&str_propagating_state, "PROPAGATING"}, {&str_stop_iteration, "stop_iteration"},
        {&str_frames_unwound, "frames_unwound"}, {&str_outermost, "outermost"}, {&str_caller_id, "caller_id"},
        {&str_caller_code_id, "caller_code_id"}, {&str_caller_lasti, "caller_lasti"}, {&str_coroutine, "coroutine"},
        {&str_reraises, "reraises"}, {&str_max_handled_depth, "MAX_HANDLED_DEPTH"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].name == NULL) {
            *names[i].name = PyUnicode_InternFromString(names[i].text);
            if (*names[i].name == NULL) {
                return -1;
            }
        }
    }
    if (PyModule_AddType(module, RecordBuffer_Type) < 0 || PyModule_AddType(module, CodeKeys_Type) < 0
        || PyModule_AddType(module, Callbacks_Type) < 0 || PyModule_AddType(module, ExceptionCallbacks_Type) < 0
        || PyModule_AddType(module, Outbox_Type) < 0 || PyModule_AddType(module, NoteWatch_Type) < 0
        || PyModule_AddType(module, StartupCallbacks_Type) < 0 || PyModule_AddType(module, Counter_Type) < 0
        || PyModule_AddIntConstant(module, "API_VERSION", NATIVE_API_VERSION) < 0) {
        return -1;
    }
    return 0;
}

/* ---- this interpreter's threads ------------------------------------------------------------------ */

/* sys._current_frames() and sys._current_exceptions() walk the threads of every interpreter, and build
   frame objects in (and read the exceptions of) an interpreter that has its own GIL while it runs: that
   corrupts memory (CPython 3.12 and 3.13, with or without the shim). These twins walk this interpreter's
   threads only. Its thread list changes only with its GIL held (a thread is unlinked before it releases
   the GIL; one is linked fully made), and nothing here runs Python code or releases the GIL (since 3.12 an
   allocation only schedules a collection). */

static PyObject *
current_frames(PyObject *module, PyObject *unused)
{
    PyObject *frames = PyDict_New();
    if (frames == NULL) {
        return NULL;
    }
    for (PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get()); t != NULL;
         t = PyThreadState_Next(t)) {
        PyFrameObject *frame = PyThreadState_GetFrame(t);  /* new reference; NULL: no Python frame */
        if (frame == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            continue;
        }
        PyObject *ident = PyLong_FromUnsignedLong(t->thread_id);
        int failed = ident == NULL || PyDict_SetItem(frames, ident, (PyObject *)frame) < 0;
        Py_XDECREF(ident);
        Py_DECREF(frame);
        if (failed) {
            goto error;
        }
    }
    return frames;
error:
    Py_DECREF(frames);
    return NULL;
}

static PyObject *
current_exceptions(PyObject *module, PyObject *unused)
{
    PyObject *handling = PyDict_New();
    if (handling == NULL) {
        return NULL;
    }
    for (PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get()); t != NULL;
         t = PyThreadState_Next(t)) {
        /* The exception the thread handles: the topmost non-empty entry of its stack (as sys.exc_info()). */
        _PyErr_StackItem *item = t->exc_info;
        while (item != NULL && (item->exc_value == NULL || item->exc_value == Py_None) && item->previous_item != NULL) {
            item = item->previous_item;
        }
        if (item == NULL) {
            continue;
        }
        PyObject *ident = PyLong_FromUnsignedLong(t->thread_id);
        int failed = ident == NULL
                     || PyDict_SetItem(handling, ident, item->exc_value != NULL ? item->exc_value : Py_None) < 0;
        Py_XDECREF(ident);
        if (failed) {
            Py_DECREF(handling);
            return NULL;
        }
    }
    return handling;
}

/* dup_above(fd, minimum) -> a close-on-exec duplicate of fd numbered `minimum` or above (fcntl's
   F_DUPFD_CLOEXEC): the sender's socket out of the numbers a program expects to find free. */
static PyObject *
dup_above(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "dup_above(fd, minimum)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    long minimum = fd == -1 && PyErr_Occurred() ? -1 : PyLong_AsLong(args[1]);
    if (minimum == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX || minimum < 0 || minimum > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "dup_above: fd and minimum must be non-negative ints");
        return NULL;
    }
    int duplicate = fcntl((int)fd, F_DUPFD_CLOEXEC, (int)minimum);
    if (duplicate < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(duplicate);
}

static PyMethodDef native_functions[] = {
    {"dup_above", (PyCFunction)(void (*)(void))dup_above, METH_FASTCALL,
     "dup_above(fd, minimum) -> a close-on-exec duplicate of fd numbered minimum or above."},
    {"current_frames", current_frames, METH_NOARGS,
     "current_frames() -> {ident: frame}: sys._current_frames() for this interpreter's threads only."},
    {"current_exceptions", current_exceptions, METH_NOARGS,
     "current_exceptions() -> {ident: exception or None}: sys._current_exceptions() for this interpreter's "
     "threads only."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    /* Static state (types, thread-local keys): one interpreter only. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "telemetry_shim._native",
    .m_doc = "The shim's call callbacks in C (see _native_path.py).",
    .m_size = 0,
    .m_methods = native_functions,
    .m_slots = native_slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
