/* Native Gaussian remap: out(p) = sum_q g(q - s(p)) x(q) / sum_q g(q - s(p)), the exact
 * (truncated to the dtype's precision) Gaussian interpolation of diffeo.py, fused into one pass.
 *
 * Built and loaded by native.py with the C compiler of the machine (plain C99, no Python or torch
 * headers); the window sizes come from diffeo.GAUSSIAN_WINDOW as -DTAPS32, -DLO32, -DTAPS64,
 * -DLO64, so the two implementations cannot drift apart.
 *
 * Layout: x and out are (B, C, H, W) (1D: (B, C, L), H = 1), disp is (B, ndim, H, W) with a batch
 * stride of 0 for one field shared by the batch, all contiguous. Each image is copied channels
 * last first, so that a window row is TAPS * C consecutive values. Every output value depends
 * only on its own inputs, so the number of threads changes no bit. Built with -fopenmp, the
 * library uses the OpenMP runtime torch has loaded (same soname: one thread pool, no two pools
 * spinning against each other); without OpenMP, native.py splits the batch between threads.
 *
 * Per output pixel: the source point s = p - u(p) is clamped to the image; the window of TAPS
 * pixels per axis starts at floor(s) + LO, moved inside the image at the border (as in
 * diffeo._axis_window); the weights come from one exp and its reciprocal per axis (powers of
 * G = exp(e / sigma^2)); the window's rows are summed with the row weights, then its columns
 * with the column weights, then divided by the product of the two weight sums.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef TAPS32
#error "compile with -DTAPS32=... -DLO32=... -DTAPS64=... -DLO64=... (see native.py)"
#endif

/* The vector path holds two window pixels a vector: windows of an even number of taps. */
_Static_assert(TAPS32 % 2 == 0 && TAPS64 % 2 == 0, "the window must have an even number of taps");

#define CHUNK 256    /* output pixels of a row whose weights are computed together */
#define MAX_TAPS 16  /* largest window per axis */
#define MAX_SPAN 512 /* largest TAPS * channels (native.py checks before calling) */

#define REAL float
#define BITS uint32_t
#define EXPONENT_MASK 0x7f800000u
#define EXP expf
#define FLOOR floorf
#define SUFFIX f32
#define TAPS TAPS32
#define LO LO32
#include "gaussian_remap.h"
#undef REAL
#undef BITS
#undef EXPONENT_MASK
#undef EXP
#undef FLOOR
#undef SUFFIX
#undef TAPS
#undef LO

#define REAL double
#define BITS uint64_t
#define EXPONENT_MASK 0x7ff0000000000000ull
#define EXP exp
#define FLOOR floor
#define SUFFIX f64
#define TAPS TAPS64
#define LO LO64
#include "gaussian_remap.h"

/* The build's constants, so that native.py can check what it loaded. */
int64_t diffeoprobe_gaussian_max_span(void) { return MAX_SPAN; }
int64_t diffeoprobe_gaussian_taps(int64_t bits) { return bits == 32 ? TAPS32 : TAPS64; }
#ifdef _OPENMP
int64_t diffeoprobe_gaussian_openmp(void) { return 1; }
#else
int64_t diffeoprobe_gaussian_openmp(void) { return 0; }
#endif
