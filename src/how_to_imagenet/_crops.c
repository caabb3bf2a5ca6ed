/* _crops: a batch of JPEG crops decoded and resized in threads that do not hold the interpreter lock.

   decode_batch(jpegs, params, out, size, float_out, fast_dct, threads, shift, scale) -> bytes

   For each JPEG i (any object with the buffer protocol), params[i] (float64, PARAMS values) gives:
     den          libjpeg's DCT scaling: the image is decoded at 1/den of its size (1, 2, 4 or 8)
     clip x0..y1  the window of the decoded image that is resized, in decoded pixels (Pillow's image)
     box  x0..y1  the box resized to size x size, relative to the window's corner (Pillow's `box`)
     flip         non-zero: mirror the output left to right
   The output is written into out[i], size x size x 3 (HWC): uint8, or float32 as (v - shift[c]) / scale[c].
   The resampling is Pillow's bilinear resize with antialiasing, to the bit: the same coefficients and
   fixed-point rounding, horizontal pass first, so a crop equals Image.crop(clip).resize(box=box).
   Only the rows and columns the resize reads are decoded: libjpeg-turbo's jpeg_crop_scanline and
   jpeg_skip_scanlines, and the decode stops after the last row needed.

   Returns one status byte per JPEG: OK, or what the caller must do another way: FAILED (libjpeg stopped
   on an error, or warned, as simplejpeg's strict mode does), COLOR (not a YCbCr or greyscale JPEG), or
   NOMEM. Those slots of `out` are left for the caller to fill.

   Pool(threads): the same work by threads that live as long as the pool. pool.submit(jpegs, params, out,
   size, float_out, fast_dct, shift, scale) queues a batch (its buffers held) and returns a ticket at once;
   the threads take images from the queued batches in order, so none waits while another finishes a batch's
   last image; pool.wait(ticket) gives the batch's status bytes once its last image is done, waiting without
   the interpreter lock. pool.cancel() marks the images no thread has taken yet CANCELLED. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>

#define PARAMS 10
#define PRECISION_BITS (32 - 8 - 2)
#define MARGIN 8 /* decoded pixels kept around what the resize reads: fancy upsampling's context */

enum { OK = 0, FAILED = 1, COLOR = 2, NOMEM = 3, CANCELLED = 4 };

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    int warned;
} Errors;

static void on_error(j_common_ptr cinfo) { longjmp(((Errors *)cinfo->err)->jump, 1); }

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) ((Errors *)cinfo->err)->warned = 1;
}

/* One axis of Pillow's resampling: for each output pixel, the first input pixel and how many it
   weighs, and the weights in fixed point (ksize a pixel). */
typedef struct {
    int *bounds;
    int *k;
    int ksize;
    int cap; /* ints allocated for k */
    int bcap; /* ints allocated for bounds */
} Axis;

static double bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static int axis(Axis *a, int in_size, float in0, float in1, int out_size) {
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filterscale; /* the bilinear filter's support is 1 */
    int ksize = (int)ceil(support) * 2 + 1;
    if (out_size * ksize > a->cap) {
        int *k = realloc(a->k, sizeof(int) * (size_t)out_size * ksize);
        if (!k) return -1;
        a->k = k;
        a->cap = out_size * ksize;
    }
    if (out_size * 2 > a->bcap) {
        int *b = realloc(a->bounds, sizeof(int) * (size_t)out_size * 2);
        if (!b) return -1;
        a->bounds = b;
        a->bcap = out_size * 2;
    }
    double w[ksize];
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = bilinear((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int *k = a->k + xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = (int)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        a->bounds[2 * xx] = xmin;
        a->bounds[2 * xx + 1] = xmax;
    }
    a->ksize = ksize;
    return 0;
}

static inline unsigned char clip8(int v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (unsigned char)v;
}

/* What one thread keeps from image to image. */
typedef struct {
    unsigned char *pixels; /* the decoded window */
    size_t pixels_cap;
    unsigned char *rows; /* the horizontal pass */
    size_t rows_cap;
    int *acc; /* the sums of one resampled line */
    size_t acc_cap;
    unsigned char *lines_t; /* the horizontal pass's transposed columns and results */
    size_t lines_t_cap;
    JSAMPROW *lines;
    size_t lines_cap;
    Axis h, v;
} Scratch;

/* What one thread keeps from image to image: libjpeg's decompressor and the scratch buffers. */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    Errors err;
    Scratch s;
} Worker;

static void worker_init(Worker *w) {
    memset(&w->s, 0, sizeof w->s);
    w->cinfo.err = jpeg_std_error(&w->err.mgr);
    w->err.mgr.error_exit = on_error;
    w->err.mgr.emit_message = on_message;
    jpeg_create_decompress(&w->cinfo);
}

static void worker_free(Worker *w) {
    jpeg_destroy_decompress(&w->cinfo);
    free(w->s.pixels);
    free(w->s.rows);
    free(w->s.acc);
    free(w->s.lines_t);
    free(w->s.lines);
    free(w->s.h.k);
    free(w->s.h.bounds);
    free(w->s.v.k);
    free(w->s.v.bounds);
}

static int grow(void **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    void *q = realloc(*p, need);
    if (!q) return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* One batch: its inputs, the buffers held for it, and how far the threads are with it. */
typedef struct Job {
    Py_buffer *jpegs;
    Py_ssize_t got; /* jpegs[0..got) are held */
    Py_buffer params, out;
    PyObject *seq, *status_bytes;
    Py_ssize_t n;
    int size, float_out, fast_dct;
    float shift[3], scale[3];
    unsigned char *status;
    Py_ssize_t next;    /* the next image to take, shared by the threads */
    Py_ssize_t done;    /* images finished (or cancelled), in a Pool */
    long ticket;        /* its number in a Pool */
    struct Job *queued; /* the next batch in the Pool's queue */
    struct Job *held;   /* the next batch the Pool holds for wait() */
} Job;

/* One resampled line: out[j] = the taps lines of `in` (n values each, n apart) weighed by k, rounded and
   clipped, for the n values of a line. Both passes run through it (the horizontal one over columns of
   the transposed image), so the compiler vectorises the one loop that does all the arithmetic. */
__attribute__((target_clones("avx2", "default"))) static void resample(unsigned char *out, int *acc,
                                                                         const unsigned char *in, int n, int taps,
                                                                         const int *k) {
    for (int j = 0; j < n; j++) acc[j] = (1 << (PRECISION_BITS - 1)) + in[j] * k[0];
    for (int y = 1; y < taps; y++) {
        const unsigned char *line = in + (size_t)y * n;
        const int w = k[y];
        for (int j = 0; j < n; j++) acc[j] += line[j] * w;
    }
    for (int j = 0; j < n; j++) out[j] = clip8(acc[j]);
}

/* rows x cols RGB pixels, `stride` bytes a row, into cols x rows (pixel (y, x) to (x, y)), in 16 x 16
   blocks. A pixel moves as 4 bytes (its own 3 and the next one's first, which a later move writes again)
   but the last of each output line, so `in` needs a byte of slack after its last pixel. */
static void transpose(unsigned char *out, const unsigned char *in, int rows, int cols, size_t stride) {
    for (int x0 = 0; x0 < cols; x0 += 16)
        for (int y0 = 0; y0 < rows; y0 += 16) {
            const int x1 = x0 + 16 < cols ? x0 + 16 : cols, y1 = y0 + 16 < rows ? y0 + 16 : rows;
            for (int x = x0; x < x1; x++) {
                unsigned char *b = out + ((size_t)x * rows + y0) * 3;
                const unsigned char *a = in + (size_t)y0 * stride + 3 * (size_t)x;
                const int wide = y1 < rows ? y1 : rows - 1; /* the line's last pixel moves as 3 bytes */
                int y = y0;
                for (; y < wide; y++, a += stride, b += 3) {
                    uint32_t v;
                    memcpy(&v, a, 4);
                    memcpy(b, &v, 4);
                }
                if (y < y1) memcpy(b, a, 3);
            }
        }
}

/* An output row: copied, or mirrored pixel by pixel, as uint8 or as normalised float32. */
static void store(const Job *job, unsigned char *out8, float *outf, const unsigned char *line, int size, int flip) {
    if (job->float_out) {
        const float s0 = job->shift[0], s1 = job->shift[1], s2 = job->shift[2];
        const float d0 = job->scale[0], d1 = job->scale[1], d2 = job->scale[2];
        const ptrdiff_t step = flip ? -3 : 3;
        float *o = outf + (flip ? 3 * (size - 1) : 0);
        for (int xx = 0; xx < size; xx++, o += step, line += 3) {
            o[0] = ((float)line[0] - s0) / d0;
            o[1] = ((float)line[1] - s1) / d1;
            o[2] = ((float)line[2] - s2) / d2;
        }
    } else if (flip) {
        unsigned char *o = out8 + 3 * (size - 1);
        for (int xx = 0; xx < size; xx++, o -= 3, line += 3) {
            o[0] = line[0];
            o[1] = line[1];
            o[2] = line[2];
        }
    } else {
        memcpy(out8, line, 3 * (size_t)size);
    }
}

/* Decode, crop, resize and store image i. */
static int one(Worker *w, const Job *job, Py_ssize_t i) {
    struct jpeg_decompress_struct *cinfo = &w->cinfo;
    Errors *err = &w->err;
    Scratch *s = &w->s;
    const double *p = (const double *)job->params.buf + i * PARAMS;
    const int size = job->size, den = (int)p[0], flip = p[9] != 0.0;
    int cx0 = (int)p[1], cy0 = (int)p[2], cw = (int)p[3] - cx0, ch = (int)p[4] - cy0;
    float box[4] = {(float)p[5], (float)p[6], (float)p[7], (float)p[8]};

    err->warned = 0;
    if (setjmp(err->jump)) {
        jpeg_abort_decompress(cinfo);
        return FAILED;
    }
    jpeg_mem_src(cinfo, job->jpegs[i].buf, (unsigned long)job->jpegs[i].len);
    jpeg_read_header(cinfo, TRUE);
    if (!((cinfo->jpeg_color_space == JCS_YCbCr && cinfo->num_components == 3) ||
          (cinfo->jpeg_color_space == JCS_GRAYSCALE && cinfo->num_components == 1))) {
        jpeg_abort_decompress(cinfo);
        return COLOR;
    }
    cinfo->out_color_space = JCS_RGB;
    cinfo->scale_num = 1;
    cinfo->scale_denom = den;
    cinfo->dct_method = job->fast_dct ? JDCT_IFAST : JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(cinfo);
    const int width = (int)cinfo->output_width, height = (int)cinfo->output_height;
    if (cx0 < 0 || cy0 < 0 || cw < 1 || ch < 1 || cx0 + cw > width || cy0 + ch > height) {
        jpeg_abort_decompress(cinfo);
        return FAILED; /* the header the caller read disagrees with libjpeg's */
    }

    /* Pillow's two passes, as ImagingResampleInner decides them. */
    const int need_h = size != cw || box[0] != 0.0f || box[2] != size;
    const int need_v = size != ch || box[1] != 0.0f || box[3] != size;
    if (axis(&s->v, ch, box[1], box[3], size) || (need_h && axis(&s->h, cw, box[0], box[2], size))) {
        jpeg_abort_decompress(cinfo);
        return NOMEM;
    }
    const int first = s->v.bounds[0], last = s->v.bounds[2 * size - 2] + s->v.bounds[2 * size - 1];
    int left = 0, right = cw; /* window columns read by the horizontal pass */
    if (need_h) {
        left = s->h.bounds[0];
        right = s->h.bounds[2 * size - 2] + s->h.bounds[2 * size - 1];
    }

    /* Decode only rows [row0, row1) and about columns [col0, col1) of the decoded image. */
    int row0 = cy0 + first - MARGIN, row1 = cy0 + last + MARGIN;
    int col0 = cx0 + left - MARGIN, col1 = cx0 + right + MARGIN;
    if (row0 < 0) row0 = 0;
    if (row1 > height) row1 = height;
    if (col0 < 0) col0 = 0;
    if (col1 > width) col1 = width;
    JDIMENSION xoff = (JDIMENSION)col0, wcols = (JDIMENSION)(col1 - col0);
    if (wcols < (JDIMENSION)width) {
        jpeg_crop_scanline(cinfo, &xoff, &wcols); /* widens to whole iMCUs */
    } else {
        xoff = 0;
        wcols = (JDIMENSION)width;
    }
    const size_t stride = (size_t)wcols * 3;
    const int nrows = row1 - row0;
    if (grow((void **)&s->pixels, &s->pixels_cap, stride * nrows + 1) ||
        grow((void **)&s->lines, &s->lines_cap, sizeof(JSAMPROW) * nrows)) {
        jpeg_abort_decompress(cinfo);
        return NOMEM;
    }
    for (int r = 0; r < nrows; r++) s->lines[r] = s->pixels + stride * r;
    if (row0 > 0) jpeg_skip_scanlines(cinfo, (JDIMENSION)row0);
    while ((int)cinfo->output_scanline < row1) {
        int at = (int)cinfo->output_scanline - row0;
        jpeg_read_scanlines(cinfo, s->lines + at, (JDIMENSION)(row1 - row0 - at));
    }
    jpeg_abort_decompress(cinfo); /* the rows below are not needed */
    if (err->warned) return FAILED;

    /* The window's pixel (x, y) in the decoded buffer. */
    const unsigned char *origin = s->pixels + (size_t)(cy0 - row0) * stride + (size_t)(cx0 - (int)xoff) * 3;

    /* Horizontal pass over window rows [first, last): their columns [left, right) transposed, resampled
       as lines, and transposed back into `rows` (size pixels wide; the window's own columns if no pass). */
    const int hw = need_h ? size : cw, hrows = last - first, cols = right - left;
    const size_t line = (size_t)hrows * 3;
    if (grow((void **)&s->rows, &s->rows_cap, (size_t)hw * line + 1) ||
        grow((void **)&s->acc, &s->acc_cap, sizeof(int) * (line > (size_t)hw * 3 ? line : (size_t)hw * 3)) ||
        grow((void **)&s->lines_t, &s->lines_t_cap, (size_t)cols * line + (size_t)size * line + 1))
        return NOMEM;
    const unsigned char *top = origin + (size_t)first * stride;
    if (need_h) {
        unsigned char *columns = s->lines_t, *resampled = s->lines_t + (size_t)cols * line;
        transpose(columns, top + 3 * (size_t)left, hrows, cols, stride);
        for (int xx = 0; xx < size; xx++)
            resample(resampled + xx * line, s->acc, columns + (size_t)(s->h.bounds[2 * xx] - left) * line,
                     (int)line, s->h.bounds[2 * xx + 1], s->h.k + xx * s->h.ksize);
        transpose(s->rows, resampled, size, hrows, line);
    } else {
        for (int y = 0; y < hrows; y++) memcpy(s->rows + (size_t)y * cw * 3, top + (size_t)y * stride, (size_t)cw * 3);
    }

    /* Vertical pass into the output, mirrored if asked. */
    unsigned char *out8 = (unsigned char *)job->out.buf + (size_t)i * size * size * 3;
    float *outf = (float *)job->out.buf + (size_t)i * size * size * 3;
    const int n = hw * 3;
    unsigned char *row = s->lines_t; /* free again: one output row at a time */
    for (int yy = 0; yy < size; yy++) {
        const unsigned char *src = s->rows + (size_t)(yy - first) * n;
        if (need_v) {
            resample(row, s->acc, s->rows + (size_t)(s->v.bounds[2 * yy] - first) * n, n, s->v.bounds[2 * yy + 1],
                     s->v.k + yy * s->v.ksize);
            src = row;
        }
        store(job, out8 + (size_t)yy * n, outf + (size_t)yy * n, src, size, flip);
    }
    return OK;
}

/* A job for these arguments (with the interpreter lock): the JPEGs' buffers, params and out held and checked
   against each other, and the status bytes made; NULL with a Python error set. */
static Job *job_new(PyObject *list, PyObject *params, PyObject *out, int size, int float_out, int fast_dct,
                    const double shift[3], const double scale[3]);

/* Everything a job holds given back, and the job freed (with the interpreter lock); its status bytes are
   handed to the caller (a new reference), or dropped if `status` is NULL. */
static void job_free(Job *job, PyObject **status) {
    for (Py_ssize_t i = 0; i < job->got; i++) PyBuffer_Release(&job->jpegs[i]);
    PyMem_Free(job->jpegs);
    if (job->params.obj) PyBuffer_Release(&job->params);
    if (job->out.obj) PyBuffer_Release(&job->out);
    Py_XDECREF(job->seq);
    if (status)
        *status = job->status_bytes;
    else
        Py_XDECREF(job->status_bytes);
    PyMem_Free(job);
}

static Job *job_new(PyObject *list, PyObject *params, PyObject *out, int size, int float_out, int fast_dct,
                    const double shift[3], const double scale[3]) {
    Job *job = PyMem_Calloc(1, sizeof(Job));
    if (!job) return (Job *)PyErr_NoMemory();
    job->size = size;
    job->float_out = float_out;
    job->fast_dct = fast_dct;
    for (int c = 0; c < 3; c++) {
        job->shift[c] = (float)shift[c];
        job->scale[c] = (float)scale[c];
    }
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "size must be at least 1");
        goto fail;
    }
    job->seq = PySequence_Fast(list, "jpegs must be a sequence");
    if (!job->seq) goto fail;
    job->n = PySequence_Fast_GET_SIZE(job->seq);
    if (PyObject_GetBuffer(params, &job->params, PyBUF_SIMPLE)) goto fail;
    if (PyObject_GetBuffer(out, &job->out, PyBUF_WRITABLE)) goto fail;
    if (job->params.len != (Py_ssize_t)(job->n * PARAMS * sizeof(double)) ||
        job->out.len < (Py_ssize_t)job->n * size * size * 3 * (float_out ? 4 : 1)) {
        PyErr_SetString(PyExc_ValueError, "params must be n x 10 float64 and out hold n x size x size x 3 pixels");
        goto fail;
    }
    job->jpegs = PyMem_Calloc(job->n ? job->n : 1, sizeof(Py_buffer));
    if (!job->jpegs) {
        PyErr_NoMemory();
        goto fail;
    }
    for (; job->got < job->n; job->got++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(job->seq, job->got), &job->jpegs[job->got], PyBUF_SIMPLE))
            goto fail;
    job->status_bytes = PyBytes_FromStringAndSize(NULL, job->n);
    if (!job->status_bytes) goto fail;
    job->status = (unsigned char *)PyBytes_AS_STRING(job->status_bytes);
    return job;
fail:
    job_free(job, NULL);
    return NULL;
}

/* decode_batch's threads: each takes the next image until none is left. */
static void *work(void *arg) {
    Job *job = arg;
    Worker w;
    worker_init(&w);
    for (;;) {
        Py_ssize_t i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (i >= job->n) break;
        job->status[i] = (unsigned char)one(&w, job, i);
    }
    worker_free(&w);
    return NULL;
}

static PyObject *decode_batch(PyObject *self, PyObject *args) {
    PyObject *list, *params, *out;
    int size, float_out, fast_dct, threads;
    double shift[3], scale[3];
    if (!PyArg_ParseTuple(args, "OOOiiii(ddd)(ddd)", &list, &params, &out, &size, &float_out, &fast_dct, &threads,
                          &shift[0], &shift[1], &shift[2], &scale[0], &scale[1], &scale[2]))
        return NULL;
    if (threads < 1) {
        PyErr_SetString(PyExc_ValueError, "threads must be at least 1");
        return NULL;
    }
    Job *job = job_new(list, params, out, size, float_out, fast_dct, shift, scale);
    if (!job) return NULL;
    if (threads > job->n) threads = job->n > 0 ? (int)job->n : 1;
    Py_BEGIN_ALLOW_THREADS
    pthread_t ids[threads];
    int started = 0;
    for (; started < threads - 1; started++)
        if (pthread_create(&ids[started], NULL, work, job)) break;
    work(job);
    for (int t = 0; t < started; t++) pthread_join(ids[t], NULL);
    Py_END_ALLOW_THREADS
    PyObject *status;
    job_free(job, &status);
    return status;
}

/* Pool: threads that live as long as the pool and take images from a queue of batches, the next batch's
   first images as soon as the one before has none left to take, without ever taking the interpreter lock.
   submit() queues a batch and returns at once; wait() gives its status bytes once every image is done. */
typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_cond_t work;     /* signalled when a batch is queued, or the pool stops */
    pthread_cond_t finished; /* signalled when a batch's last image is done */
    Job *head, *tail;        /* the batches with images not yet taken, in order */
    Job *held;               /* every batch submitted and not yet waited for */
    long tickets;
    int started, stopping;
    pid_t owner; /* the process whose threads these are (a forked child has none) */
    pthread_t *ids;
} Pool;

static void *serve(void *arg) {
    Pool *pool = arg;
    Worker w;
    worker_init(&w);
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->stopping && !pool->head) pthread_cond_wait(&pool->work, &pool->lock);
        if (pool->stopping) break;
        Job *job = pool->head;
        Py_ssize_t i = job->next++;
        if (job->next >= job->n) {
            pool->head = job->queued;
            if (!pool->head) pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
        unsigned char status = (unsigned char)one(&w, job, i);
        pthread_mutex_lock(&pool->lock);
        job->status[i] = status;
        if (++job->done == job->n) pthread_cond_broadcast(&pool->finished);
    }
    pthread_mutex_unlock(&pool->lock);
    worker_free(&w);
    return NULL;
}

static void pool_stop(Pool *pool) {
    if (!pool->ids) return;
    if (pool->owner == getpid()) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&pool->lock);
        pool->stopping = 1;
        pthread_cond_broadcast(&pool->work);
        pthread_mutex_unlock(&pool->lock);
        for (int t = 0; t < pool->started; t++) pthread_join(pool->ids[t], NULL);
        Py_END_ALLOW_THREADS
    }
    PyMem_Free(pool->ids);
    pool->ids = NULL;
    pool->started = 0;
    pool->head = pool->tail = NULL;
    while (pool->held) { /* no thread is left to touch them */
        Job *job = pool->held;
        pool->held = job->held;
        job_free(job, NULL);
    }
}

static int pool_init(Pool *pool, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"threads", NULL};
    int threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i", names, &threads)) return -1;
    if (threads < 1) {
        PyErr_SetString(PyExc_ValueError, "threads must be at least 1");
        return -1;
    }
    if (pool->ids) {
        PyErr_SetString(PyExc_RuntimeError, "the pool is started already");
        return -1;
    }
    pool->ids = PyMem_Calloc((size_t)threads, sizeof(pthread_t));
    if (!pool->ids) {
        PyErr_NoMemory();
        return -1;
    }
    pool->owner = getpid();
    pool->stopping = 0;
    for (; pool->started < threads; pool->started++)
        if (pthread_create(&pool->ids[pool->started], NULL, serve, pool)) break;
    if (pool->started == 0) {
        PyMem_Free(pool->ids);
        pool->ids = NULL;
        PyErr_SetString(PyExc_OSError, "no decoding thread could be started");
        return -1;
    }
    return 0;
}

static PyObject *pool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Pool *pool = (Pool *)type->tp_alloc(type, 0);
    if (!pool) return NULL;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->finished, NULL);
    return (PyObject *)pool;
}

static void pool_dealloc(Pool *pool) {
    pool_stop(pool);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->finished);
    Py_TYPE(pool)->tp_free((PyObject *)pool);
}

static PyObject *pool_submit(Pool *pool, PyObject *args) {
    PyObject *list, *params, *out;
    int size, float_out, fast_dct;
    double shift[3], scale[3];
    if (!PyArg_ParseTuple(args, "OOOiii(ddd)(ddd)", &list, &params, &out, &size, &float_out, &fast_dct, &shift[0],
                          &shift[1], &shift[2], &scale[0], &scale[1], &scale[2]))
        return NULL;
    if (!pool->ids) {
        PyErr_SetString(PyExc_RuntimeError, "the pool is closed");
        return NULL;
    }
    Job *job = job_new(list, params, out, size, float_out, fast_dct, shift, scale);
    if (!job) return NULL;
    pthread_mutex_lock(&pool->lock);
    job->ticket = ++pool->tickets;
    job->held = pool->held;
    pool->held = job;
    if (job->n > 0) {
        if (pool->tail)
            pool->tail->queued = job;
        else
            pool->head = job;
        pool->tail = job;
        pthread_cond_broadcast(&pool->work);
    }
    long ticket = job->ticket;
    pthread_mutex_unlock(&pool->lock);
    return PyLong_FromLong(ticket);
}

static PyObject *pool_wait(Pool *pool, PyObject *args) {
    long ticket;
    if (!PyArg_ParseTuple(args, "l", &ticket)) return NULL;
    Job *job = NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&pool->lock);
    for (job = pool->held; job && job->ticket != ticket;) job = job->held;
    if (job) {
        while (job->done < job->n) pthread_cond_wait(&pool->finished, &pool->lock);
        Job **link = &pool->held; /* found again: submit() may have added batches meanwhile */
        while (*link != job) link = &(*link)->held;
        *link = job->held;
    }
    pthread_mutex_unlock(&pool->lock);
    Py_END_ALLOW_THREADS
    if (!job) {
        PyErr_Format(PyExc_ValueError, "no batch %ld is waiting in this pool", ticket);
        return NULL;
    }
    PyObject *status;
    job_free(job, &status);
    return status;
}

static PyObject *pool_cancel(Pool *pool, PyObject *unused) {
    pthread_mutex_lock(&pool->lock);
    for (Job *job = pool->head; job; job = job->queued) {
        for (Py_ssize_t i = job->next; i < job->n; i++) job->status[i] = CANCELLED;
        job->done += job->n - job->next;
        job->next = job->n;
    }
    pool->head = pool->tail = NULL;
    pthread_cond_broadcast(&pool->finished);
    pthread_mutex_unlock(&pool->lock);
    Py_RETURN_NONE;
}

static PyObject *pool_close(Pool *pool, PyObject *unused) {
    pool_stop(pool);
    Py_RETURN_NONE;
}

static PyMethodDef pool_methods[] = {
    {"submit", (PyCFunction)pool_submit, METH_VARARGS,
     "submit(jpegs, params, out, size, float_out, fast_dct, shift, scale) -> ticket: the batch queued, as "
     "decode_batch takes it; its inputs are held until wait(ticket)"},
    {"wait", (PyCFunction)pool_wait, METH_VARARGS,
     "wait(ticket) -> status bytes, once every image of the batch is done (without the interpreter lock)"},
    {"cancel", (PyCFunction)pool_cancel, METH_NOARGS,
     "the images no thread has taken yet are not decoded: their status is CANCELLED"},
    {"close", (PyCFunction)pool_close, METH_NOARGS, "stop the threads and drop every batch not waited for"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "how_to_imagenet._crops.Pool",
    .tp_doc = "Pool(threads): decoding threads fed with batches by submit(), each batch's end known by wait().",
    .tp_basicsize = sizeof(Pool),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = pool_new,
    .tp_init = (initproc)pool_init,
    .tp_dealloc = (destructor)pool_dealloc,
    .tp_methods = pool_methods,
};

static PyMethodDef methods[] = {
    {"decode_batch", decode_batch, METH_VARARGS,
     "decode_batch(jpegs, params, out, size, float_out, fast_dct, threads, shift, scale) -> status bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_crops", "JPEG crops decoded and resized in threads.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__crops(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "PARAMS", PARAMS) || PyModule_AddIntConstant(m, "OK", OK) ||
              PyModule_AddIntConstant(m, "FAILED", FAILED) || PyModule_AddIntConstant(m, "COLOR", COLOR) ||
              PyModule_AddIntConstant(m, "NOMEM", NOMEM) || PyModule_AddIntConstant(m, "CANCELLED", CANCELLED) ||
              PyModule_AddType(m, &PoolType))) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
