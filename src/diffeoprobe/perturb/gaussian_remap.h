/* The body of the native Gaussian remap for one floating type; gaussian_remap.c includes it once
 * per type with REAL (the type), BITS (a same-sized unsigned integer), EXP, FLOOR (its libm
 * functions), SUFFIX (f32 or f64), TAPS and LO (its window) defined. */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define ROWS CAT(gaussian_rows, SUFFIX)
#define BATCH CAT(gaussian_batch, SUFFIX)
#define VEC CAT(vec8, SUFFIX)
#define VEC4 CAT(vec4, SUFFIX)

/* Eight lanes: two window pixels of four (padded) channels. GCC and clang vector extensions:
 * the widest registers -march allows, split into narrower ones where they are shorter. */
typedef REAL VEC __attribute__((vector_size(8 * sizeof(REAL))));
typedef REAL VEC4 __attribute__((vector_size(4 * sizeof(REAL))));

/* 1 when v is NaN or infinite. A bit test: -ffast-math may assume isfinite() always holds. */
static inline int CAT(not_finite, SUFFIX)(REAL v) {
    BITS bits;
    memcpy(&bits, &v, sizeof bits);
    return (bits & EXPONENT_MASK) == EXPONENT_MASK;
}

/* The weights w[t][i], t < taps, of one pixel's window along one axis, and their sum. With
 * m = taps / 2 and e the offset of the source point from window pixel m, over sigma^2:
 * w_t = c(t - m) G^(t - m), G = exp(e), k[t] = c(t - m) = exp(-(t - m)^2 / (2 sigma^2)); that is
 * the Gaussian of the distance up to a factor common to the window, which the normalisation
 * removes. One exp and its reciprocal instead of one exp per tap. */
static inline __attribute__((always_inline)) REAL CAT(axis_weights, SUFFIX)(
    REAL e, const REAL *k, const int taps, REAL w[][CHUNK], int64_t i) {
    const int m = taps / 2;
    REAL g = EXP(e), h = EXP(-e), p = 1, q = 1, sum = k[m];
    w[m][i] = k[m];
    for (int t = m + 1; t < taps; t++) {
        p *= g;
        w[t][i] = k[t] * p;
        sum += w[t][i];
    }
    for (int t = m - 1; t >= 0; t--) {
        q *= h;
        w[t][i] = k[t] * q;
        sum += w[t][i];
    }
    return sum;
}

/* Rows [row_begin, row_end) of one image. image: (H, W, C) channels last; dy, dx: the image's
 * displacement components (H, W) (1D: dy unused); out: the image's (C, H, W). ty, tx, cc are
 * compile-time constants in every caller, so the tap loops unroll and the row sums vectorise;
 * cc = 0 means "channels at run time". Returns the number of non-finite displacements seen. */
static inline __attribute__((always_inline)) int64_t ROWS(
    const REAL *restrict image, const REAL *restrict dy, const REAL *restrict dx,
    REAL *restrict out, int64_t channels, int64_t height, int64_t width, double sigma,
    int64_t row_begin, int64_t row_end, const int ty, const int tx, const int cc) {
    const int64_t stride = cc ? cc : channels; /* values per pixel in image (4: padded) */
    const int64_t span = tx * stride;          /* one window row: tx pixels, all channels */
    const int my = ty / 2, mx = tx / 2;
    const REAL inv = (REAL)(1.0 / (sigma * sigma));
    REAL ky[MAX_TAPS], kx[MAX_TAPS]; /* c(t - m) = exp(-(t - m)^2 / (2 sigma^2)) */
    for (int t = 0; t < ty; t++) ky[t] = (REAL)exp(-0.5 * (t - my) * (t - my) / (sigma * sigma));
    for (int t = 0; t < tx; t++) kx[t] = (REAL)exp(-0.5 * (t - mx) * (t - mx) / (sigma * sigma));
    REAL wy[MAX_TAPS][CHUNK], wx[MAX_TAPS][CHUNK], norm[CHUNK], ey[CHUNK], ex[CHUNK];
    int32_t start[CHUNK]; /* native.py keeps H * W * C below 2^31 */
    int64_t bad = 0;
    REAL acc[MAX_SPAN];
    VEC4 result[CHUNK];
    for (int64_t y = row_begin; y < row_end; y++) {
        for (int64_t p0 = 0; p0 < width; p0 += CHUNK) {
            const int64_t n = width - p0 < CHUNK ? width - p0 : CHUNK;
            const int64_t at = y * width + p0;
            const int32_t n32 = (int32_t)n, x0 = (int32_t)p0, y32 = (int32_t)y;
            const int32_t last_y = (int32_t)(height - ty), last_x = (int32_t)(width - tx);
            const REAL top = (REAL)(height - 1), right = (REAL)(width - 1);
            int32_t nonfinite = 0;
            /* 32-bit integers throughout, so that the loop vectorises (AVX2 has no 64-bit
             * integer <-> float conversions). */
            for (int32_t i = 0; i < n32; i++) {
                /* Source point clamped to the image, first pixel of its window moved inside. */
                REAL sy = ty > 1 ? (REAL)y32 - dy[at + i] : 0;
                REAL sx = (REAL)(x0 + i) - dx[at + i];
                nonfinite += CAT(not_finite, SUFFIX)(sx) | CAT(not_finite, SUFFIX)(sy);
                sy = sy < 0 ? 0 : (sy > top ? top : sy);
                sx = sx < 0 ? 0 : (sx > right ? right : sx);
                int32_t fy = (int32_t)FLOOR(sy) + LO, fx = (int32_t)FLOOR(sx) + LO;
                /* Integer clamps: memory stays in bounds whatever the input (even NaN). */
                fy = fy < 0 ? 0 : (fy > last_y ? last_y : fy);
                fx = fx < 0 ? 0 : (fx > last_x ? last_x : fx);
                start[i] = (fy * (int32_t)width + fx) * (int32_t)stride;
                ey[i] = (sy - (REAL)(fy + my)) * inv;
                ex[i] = (sx - (REAL)(fx + mx)) * inv;
            }
            bad += nonfinite;
            for (int64_t i = 0; i < n; i++) {
                const REAL sum_y = CAT(axis_weights, SUFFIX)(ey[i], ky, ty, wy, i);
                const REAL sum_x = CAT(axis_weights, SUFFIX)(ex[i], kx, tx, wx, i);
                norm[i] = 1 / (sum_y * sum_x);
            }
            for (int64_t i = 0; i < n; i++) {
                /* The window's rows (tx * C consecutive values each) weighted by the row
                 * weights, then its columns by the column weights. */
                const REAL *src = image + start[i];
                if (cc == 4) {
                    /* Two taps of 4 (padded) channels a vector: the row sums are whole-vector
                     * FMAs, the column weights a vector product, no horizontal sums but one. */
                    VEC acc[MAX_TAPS / 2], row, sum = {0};
                    for (int k = 0; k < tx / 2; k++) {
                        memcpy(&row, src + 8 * k, sizeof row);
                        acc[k] = wy[0][i] * row;
                    }
                    for (int t = 1; t < ty; t++) {
                        const REAL w = wy[t][i];
                        const REAL *r = src + t * width * 4;
                        for (int k = 0; k < tx / 2; k++) {
                            memcpy(&row, r + 8 * k, sizeof row);
                            acc[k] += w * row;
                        }
                    }
                    for (int k = 0; k < tx / 2; k++) {
                        const REAL a = wx[2 * k][i], b = wx[2 * k + 1][i];
                        const VEC pair = {a, a, a, a, b, b, b, b};
                        sum += acc[k] * pair;
                    }
                    VEC4 low, high; /* the two taps' halves: vextractf128 and one add */
                    memcpy(&low, &sum, sizeof low);
                    memcpy(&high, (const char *)&sum + sizeof low, sizeof high);
                    result[i] = (low + high) * norm[i];
                    continue;
                }
                for (int64_t j = 0; j < span; j++) acc[j] = wy[0][i] * src[j];
                for (int t = 1; t < ty; t++) {
                    const REAL w = wy[t][i];
                    const REAL *r = src + t * width * stride;
                    for (int64_t j = 0; j < span; j++) acc[j] += w * r[j];
                }
                for (int64_t c = 0; c < stride; c++) {
                    REAL v = 0;
                    for (int t = 0; t < tx; t++) v += wx[t][i] * acc[t * stride + c];
                    out[c * height * width + at + i] = v * norm[i];
                }
            }
            if (cc == 4) /* the chunk's results, channels last, into the channel planes */
                for (int64_t c = 0; c < channels; c++)
                    for (int64_t i = 0; i < n; i++) out[c * height * width + at + i] = result[i][c];
        }
    }
    return bad;
}

/* (C, H, W) -> (H, W, stride): channels last. Lanes C .. stride - 1 are left alone (the
 * scratch is allocated zeroed and they are never written). */
static inline void CAT(to_channels_last, SUFFIX)(const REAL *restrict src, REAL *restrict dst,
                                                 int64_t channels, int64_t stride,
                                                 int64_t pixels) {
    for (int64_t c = 0; c < channels; c++)
        for (int64_t p = 0; p < pixels; p++) dst[p * stride + c] = src[c * pixels + p];
}

typedef int64_t (*CAT(rows_fn, SUFFIX))(const REAL *restrict, const REAL *restrict,
                                         const REAL *restrict, REAL *restrict, int64_t, int64_t,
                                         int64_t, double, int64_t, int64_t);

static int64_t BATCH(const REAL *x, const REAL *disp, int64_t disp_stride, REAL *out,
                     int64_t batch, int64_t channels, int64_t height, int64_t width, double sigma,
                     int64_t threads, int ty, int cc, CAT(rows_fn, SUFFIX) rows) {
    const int64_t pixels = height * width, values = channels * pixels;
    const int64_t stride = cc ? cc : channels, padded = stride * pixels; /* scratch image */
    const int64_t dx_offset = ty > 1 ? pixels : 0; /* the last component */
    int64_t bad = 0, failed = 0;
    if (batch >= threads) {
#pragma omp parallel num_threads(threads) reduction(+ : bad, failed)
        {
            REAL *scratch = calloc(padded, sizeof(REAL));
            failed += scratch == NULL;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < batch; b++) {
                if (scratch == NULL) continue;
                const REAL *dy = disp + b * disp_stride;
                CAT(to_channels_last, SUFFIX)(x + b * values, scratch, channels, stride, pixels);
                bad += rows(scratch, dy, dy + dx_offset, out + b * values, channels, height, width,
                            sigma, 0, height);
            }
            free(scratch);
        }
        return failed ? -1 : bad;
    }
    REAL *last = calloc(padded * batch, sizeof(REAL));
    if (last == NULL) return -1;
    for (int64_t b = 0; b < batch; b++)
        CAT(to_channels_last, SUFFIX)(x + b * values, last + b * padded, channels, stride,
                                      pixels);
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (int64_t row = 0; row < batch * height; row++) {
        const int64_t b = row / height, y = row % height;
        const REAL *dy = disp + b * disp_stride;
        bad += rows(last + b * padded, dy, dy + dx_offset, out + b * values, channels, height,
                    width, sigma, y, y + 1);
    }
    free(last);
    return bad;
}

/* One specialisation: its rows function (kept out of line: inlined into the OpenMP region,
 * gcc vectorises it far worse) and the exported batch function. */
#define WRAPPER(DIM, TY, CC)                                                                    \
    static __attribute__((noinline)) int64_t CAT(CAT(CAT(rows, SUFFIX), DIM), CC)(             \
        const REAL *restrict image, const REAL *restrict dy, const REAL *restrict dx,           \
        REAL *restrict out, int64_t channels, int64_t height, int64_t width, double sigma,      \
        int64_t row_begin, int64_t row_end) {                                                   \
        return ROWS(image, dy, dx, out, channels, height, width, sigma, row_begin, row_end, TY, \
                    TAPS, CC);                                                                  \
    }                                                                                           \
    int64_t CAT(CAT(CAT(diffeoprobe_gaussian, SUFFIX), DIM), CAT(c, CC))(                       \
        const REAL *x, const REAL *disp, int64_t disp_stride, REAL *out, int64_t batch,         \
        int64_t channels, int64_t height, int64_t width, double sigma, int64_t threads) {       \
        return BATCH(x, disp, disp_stride, out, batch, channels, height, width, sigma, threads, \
                     TY, CC, CAT(CAT(CAT(rows, SUFFIX), DIM), CC));                                 \
    }

/* c_4: up to 4 channels, padded to 4 (vector path); c_0: any number (scalar loops). */
WRAPPER(2d, TAPS, 4)
WRAPPER(2d, TAPS, 0)
WRAPPER(1d, 1, 4)
WRAPPER(1d, 1, 0)

#undef WRAPPER
#undef BATCH
#undef VEC
#undef VEC4
#undef ROWS
#undef CAT
#undef CAT_
