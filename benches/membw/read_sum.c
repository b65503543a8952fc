/* Single-thread memory read bandwidth: sum 1 GiB of f32 (best of 5 passes), the
 * reference for the cosine stream bench (issue 7: cosine over large batches must reach
 * >= 80% of it). Built and run by hand:
 *   cc -O3 -march=native -ffast-math -o /tmp/read_sum benches/membw/read_sum.c && /tmp/read_sum
 * -ffast-math lets the compiler split the sum over several vector accumulators, so the
 * loop is bound by memory, not by the add latency. Prints GB/s (1e9 bytes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTES (1UL << 30)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    size_t n = BYTES / sizeof(float);
    float *a = aligned_alloc(64, BYTES);
    if (!a) { perror("alloc"); return 1; }
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023) * 1e-3f;
    double best = 1e9, sink = 0;
    for (int pass = 0; pass < 5; pass++) {
        double t0 = now();
        float s = 0;
        for (size_t i = 0; i < n; i++) s += a[i];
        double dt = now() - t0;
        sink += s;
        if (dt < best) best = dt;
    }
    printf("read-sum over 1 GiB, best of 5: %.2f GB/s (%.1f ms) [checksum %g]\n",
           BYTES / best / 1e9, best * 1e3, sink);
    free(a);
    return 0;
}
