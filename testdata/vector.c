// vector: keeps the vector register file busy for a few seconds and checks
// it afterwards, so a checkpoint taken mid-loop proves the registers (XSAVE
// state) were restored.
//
//   vector [MILLISECONDS [ITERATIONS]]
//
// It first times a short run of the loop to pick an iteration count that
// takes about MILLISECONDS (default 4000), unless ITERATIONS is given. Then
// it prints "ready ..." and runs one asm loop that holds every live value in
// registers only: accumulators that each add their own increment register
// every iteration, plus a few general registers, an x87 value and a
// non-default MXCSR. At the end it compares each with the closed form
// init + n*inc and prints "vector ok" or "vector FAIL <what>". A register
// that comes back zeroed, swapped or stale changes the result.
//
// With AVX-512 the loop uses zmm0-31 (16 accumulators + 16 increments) and
// k1-k7; otherwise ymm0-15 (8 + 8).
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

// Everything the asm loads and stores, in one block so the asm needs a single
// pointer register (the loop uses every vector register and r8-r11).
#define MAXQ (16 * 8)
static struct state {
	uint64_t init[MAXQ];  // offset 0
	uint64_t inc[MAXQ];   // 1024
	uint64_t acc[MAXQ];   // 2048: accumulators after the loop
	uint64_t inco[MAXQ];  // 3072: increment registers after the loop
	uint64_t gin[4];      // 4096
	uint64_t gout[4];     // 4128
	uint16_t kin[8];      // 4160
	uint16_t kout[8];     // 4176
	uint32_t mxcsr_in;    // 4192
	uint32_t mxcsr_out;   // 4196
	uint32_t mxcsr_save;  // 4200: the caller's MXCSR during the loop
	long double x87[2];   // 4208, 4224
} st = {
    .gin = {0x1111222233334444, 0x5555666677778888, 0x99990000aaaabbbb, 0xccccddddeeeeffff},
    .kin = {0x1357, 0x2468, 0x9abc, 0xdef0, 0x0f0f, 0xf0f0, 0x5a5a},
    .mxcsr_in = 0xffc0, // all exceptions masked, round toward zero, FTZ, DAZ
};
_Static_assert(__builtin_offsetof(struct state, inc) == 1024, "layout");
_Static_assert(__builtin_offsetof(struct state, acc) == 2048, "layout");
_Static_assert(__builtin_offsetof(struct state, inco) == 3072, "layout");
_Static_assert(__builtin_offsetof(struct state, gin) == 4096, "layout");
_Static_assert(__builtin_offsetof(struct state, gout) == 4128, "layout");
_Static_assert(__builtin_offsetof(struct state, kin) == 4160, "layout");
_Static_assert(__builtin_offsetof(struct state, kout) == 4176, "layout");
_Static_assert(__builtin_offsetof(struct state, mxcsr_in) == 4192, "layout");
_Static_assert(__builtin_offsetof(struct state, mxcsr_out) == 4196, "layout");
_Static_assert(__builtin_offsetof(struct state, mxcsr_save) == 4200, "layout");
_Static_assert(__builtin_offsetof(struct state, x87) == 4208, "layout");

static void setup(int nq) {
	for (int i = 0; i < nq; i++) {
		st.init[i] = 0x0123456789abcdefULL * (uint64_t)(i + 1) + 0x1000;
		st.inc[i] = (0x9e3779b97f4a7c15ULL ^ ((uint64_t)i * 0x100000001b3ULL)) | 1;
	}
}

static void run_avx2(uint64_t n) {
	uint64_t cnt = n;
	__asm__ volatile(
	    "vmovdqu 0(%[s]), %%ymm0\n\t"
	    "vmovdqu 32(%[s]), %%ymm1\n\t"
	    "vmovdqu 64(%[s]), %%ymm2\n\t"
	    "vmovdqu 96(%[s]), %%ymm3\n\t"
	    "vmovdqu 128(%[s]), %%ymm4\n\t"
	    "vmovdqu 160(%[s]), %%ymm5\n\t"
	    "vmovdqu 192(%[s]), %%ymm6\n\t"
	    "vmovdqu 224(%[s]), %%ymm7\n\t"
	    "vmovdqu 1024(%[s]), %%ymm8\n\t"
	    "vmovdqu 1056(%[s]), %%ymm9\n\t"
	    "vmovdqu 1088(%[s]), %%ymm10\n\t"
	    "vmovdqu 1120(%[s]), %%ymm11\n\t"
	    "vmovdqu 1152(%[s]), %%ymm12\n\t"
	    "vmovdqu 1184(%[s]), %%ymm13\n\t"
	    "vmovdqu 1216(%[s]), %%ymm14\n\t"
	    "vmovdqu 1248(%[s]), %%ymm15\n\t"
	    "mov 4096(%[s]), %%r8\n\t"
	    "mov 4104(%[s]), %%r9\n\t"
	    "mov 4112(%[s]), %%r10\n\t"
	    "mov 4120(%[s]), %%r11\n\t"
	    "stmxcsr 4200(%[s])\n\t"
	    "ldmxcsr 4192(%[s])\n\t"
	    "fldpi\n\t"
	    "fldl2e\n\t"
	    "1:\n\t"
	    "vpaddq %%ymm8, %%ymm0, %%ymm0\n\t"
	    "vpaddq %%ymm9, %%ymm1, %%ymm1\n\t"
	    "vpaddq %%ymm10, %%ymm2, %%ymm2\n\t"
	    "vpaddq %%ymm11, %%ymm3, %%ymm3\n\t"
	    "vpaddq %%ymm12, %%ymm4, %%ymm4\n\t"
	    "vpaddq %%ymm13, %%ymm5, %%ymm5\n\t"
	    "vpaddq %%ymm14, %%ymm6, %%ymm6\n\t"
	    "vpaddq %%ymm15, %%ymm7, %%ymm7\n\t"
	    "dec %[cnt]\n\t"
	    "jnz 1b\n\t"
	    "fstpt 4208(%[s])\n\t"
	    "fstpt 4224(%[s])\n\t"
	    "stmxcsr 4196(%[s])\n\t"
	    "ldmxcsr 4200(%[s])\n\t"
	    "mov %%r8, 4128(%[s])\n\t"
	    "mov %%r9, 4136(%[s])\n\t"
	    "mov %%r10, 4144(%[s])\n\t"
	    "mov %%r11, 4152(%[s])\n\t"
	    "vmovdqu %%ymm0, 2048(%[s])\n\t"
	    "vmovdqu %%ymm1, 2080(%[s])\n\t"
	    "vmovdqu %%ymm2, 2112(%[s])\n\t"
	    "vmovdqu %%ymm3, 2144(%[s])\n\t"
	    "vmovdqu %%ymm4, 2176(%[s])\n\t"
	    "vmovdqu %%ymm5, 2208(%[s])\n\t"
	    "vmovdqu %%ymm6, 2240(%[s])\n\t"
	    "vmovdqu %%ymm7, 2272(%[s])\n\t"
	    "vmovdqu %%ymm8, 3072(%[s])\n\t"
	    "vmovdqu %%ymm9, 3104(%[s])\n\t"
	    "vmovdqu %%ymm10, 3136(%[s])\n\t"
	    "vmovdqu %%ymm11, 3168(%[s])\n\t"
	    "vmovdqu %%ymm12, 3200(%[s])\n\t"
	    "vmovdqu %%ymm13, 3232(%[s])\n\t"
	    "vmovdqu %%ymm14, 3264(%[s])\n\t"
	    "vmovdqu %%ymm15, 3296(%[s])\n\t"
	    "vzeroupper\n\t"
	    : [cnt] "+r"(cnt)
	    : [s] "r"(&st)
	    : "memory", "cc", "r8", "r9", "r10", "r11", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
	      "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

__attribute__((target("avx512f"))) static void run_avx512(uint64_t n) {
	uint64_t cnt = n;
#define LD(i, src, off) "vmovdqu64 " #src "+" #off "(%[s]), %%zmm" #i "\n\t"
#define ST(i, dst, off) "vmovdqu64 %%zmm" #i ", " #dst "+" #off "(%[s])\n\t"
#define ADD(a, b) "vpaddq %%zmm" #b ", %%zmm" #a ", %%zmm" #a "\n\t"
	__asm__ volatile(
	    LD(0, 0, 0) LD(1, 0, 64) LD(2, 0, 128) LD(3, 0, 192) LD(4, 0, 256) LD(5, 0, 320)
	    LD(6, 0, 384) LD(7, 0, 448) LD(8, 0, 512) LD(9, 0, 576) LD(10, 0, 640)
	    LD(11, 0, 704) LD(12, 0, 768) LD(13, 0, 832) LD(14, 0, 896) LD(15, 0, 960)
	    LD(16, 1024, 0) LD(17, 1024, 64) LD(18, 1024, 128) LD(19, 1024, 192) LD(20, 1024, 256) LD(21, 1024, 320)
	    LD(22, 1024, 384) LD(23, 1024, 448) LD(24, 1024, 512) LD(25, 1024, 576) LD(26, 1024, 640)
	    LD(27, 1024, 704) LD(28, 1024, 768) LD(29, 1024, 832) LD(30, 1024, 896) LD(31, 1024, 960)
	    "kmovw 4160(%[s]), %%k1\n\t"
	    "kmovw 4162(%[s]), %%k2\n\t"
	    "kmovw 4164(%[s]), %%k3\n\t"
	    "kmovw 4166(%[s]), %%k4\n\t"
	    "kmovw 4168(%[s]), %%k5\n\t"
	    "kmovw 4170(%[s]), %%k6\n\t"
	    "kmovw 4172(%[s]), %%k7\n\t"
	    "mov 4096(%[s]), %%r8\n\t"
	    "mov 4104(%[s]), %%r9\n\t"
	    "mov 4112(%[s]), %%r10\n\t"
	    "mov 4120(%[s]), %%r11\n\t"
	    "stmxcsr 4200(%[s])\n\t"
	    "ldmxcsr 4192(%[s])\n\t"
	    "fldpi\n\t"
	    "fldl2e\n\t"
	    "1:\n\t"
	    ADD(0, 16) ADD(1, 17) ADD(2, 18) ADD(3, 19) ADD(4, 20) ADD(5, 21) ADD(6, 22) ADD(7, 23)
	    ADD(8, 24) ADD(9, 25) ADD(10, 26) ADD(11, 27) ADD(12, 28) ADD(13, 29) ADD(14, 30) ADD(15, 31)
	    "dec %[cnt]\n\t"
	    "jnz 1b\n\t"
	    "fstpt 4208(%[s])\n\t"
	    "fstpt 4224(%[s])\n\t"
	    "stmxcsr 4196(%[s])\n\t"
	    "ldmxcsr 4200(%[s])\n\t"
	    "mov %%r8, 4128(%[s])\n\t"
	    "mov %%r9, 4136(%[s])\n\t"
	    "mov %%r10, 4144(%[s])\n\t"
	    "mov %%r11, 4152(%[s])\n\t"
	    "kmovw %%k1, 4176(%[s])\n\t"
	    "kmovw %%k2, 4178(%[s])\n\t"
	    "kmovw %%k3, 4180(%[s])\n\t"
	    "kmovw %%k4, 4182(%[s])\n\t"
	    "kmovw %%k5, 4184(%[s])\n\t"
	    "kmovw %%k6, 4186(%[s])\n\t"
	    "kmovw %%k7, 4188(%[s])\n\t"
	    ST(0, 2048, 0) ST(1, 2048, 64) ST(2, 2048, 128) ST(3, 2048, 192) ST(4, 2048, 256) ST(5, 2048, 320)
	    ST(6, 2048, 384) ST(7, 2048, 448) ST(8, 2048, 512) ST(9, 2048, 576) ST(10, 2048, 640)
	    ST(11, 2048, 704) ST(12, 2048, 768) ST(13, 2048, 832) ST(14, 2048, 896) ST(15, 2048, 960)
	    ST(16, 3072, 0) ST(17, 3072, 64) ST(18, 3072, 128) ST(19, 3072, 192) ST(20, 3072, 256)
	    ST(21, 3072, 320) ST(22, 3072, 384) ST(23, 3072, 448) ST(24, 3072, 512) ST(25, 3072, 576)
	    ST(26, 3072, 640) ST(27, 3072, 704) ST(28, 3072, 768) ST(29, 3072, 832) ST(30, 3072, 896)
	    ST(31, 3072, 960)
	    "vzeroupper\n\t"
	    : [cnt] "+r"(cnt)
	    : [s] "r"(&st)
	    : "memory", "cc", "r8", "r9", "r10", "r11", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "xmm0", "xmm1",
	      "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
	      "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24",
	      "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

// verify prints the first mismatch and returns 0, or returns 1.
static int verify(int avx512, int nq, uint64_t n) {
	for (int i = 0; i < nq; i++) {
		uint64_t want = st.init[i] + n * st.inc[i];
		if (st.acc[i] != want) {
			say("vector FAIL accumulator %s%d lane %d: %016lx != %016lx\n", avx512 ? "zmm" : "ymm",
			    i / (avx512 ? 8 : 4), i % (avx512 ? 8 : 4), st.acc[i], want);
			return 0;
		}
		if (st.inco[i] != st.inc[i]) {
			say("vector FAIL increment %s%d lane %d: %016lx != %016lx\n", avx512 ? "zmm" : "ymm",
			    nq / (avx512 ? 8 : 4) + i / (avx512 ? 8 : 4), i % (avx512 ? 8 : 4), st.inco[i], st.inc[i]);
			return 0;
		}
	}
	for (int i = 0; i < 4; i++)
		if (st.gout[i] != st.gin[i]) {
			say("vector FAIL r%d: %016lx != %016lx\n", 8 + i, st.gout[i], st.gin[i]);
			return 0;
		}
	if (avx512)
		for (int i = 0; i < 7; i++)
			if (st.kout[i] != st.kin[i]) {
				say("vector FAIL k%d: %04x != %04x\n", i + 1, st.kout[i], st.kin[i]);
				return 0;
			}
	if (st.mxcsr_out != st.mxcsr_in) {
		say("vector FAIL mxcsr %08x != %08x\n", st.mxcsr_out, st.mxcsr_in);
		return 0;
	}
	// fstpt pops st(0) first: log2(e) was pushed last.
	long double l2e, pi;
	__asm__("fldl2e; fstpt %0" : "=m"(l2e));
	__asm__("fldpi; fstpt %0" : "=m"(pi));
	if (memcmp(&st.x87[0], &l2e, 10) != 0 || memcmp(&st.x87[1], &pi, 10) != 0) {
		say("vector FAIL x87 %Lg %Lg\n", st.x87[0], st.x87[1]);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv) {
	long ms = argc > 1 ? atol(argv[1]) : 4000;
	uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
	int avx512 = __builtin_cpu_supports("avx512f");
	if (!avx512 && !__builtin_cpu_supports("avx2")) {
		say("vector FAIL no avx2\n");
		return 1;
	}
	int nq = avx512 ? 16 * 8 : 8 * 4;
	void (*run)(uint64_t) = avx512 ? run_avx512 : run_avx2;
	setup(nq);

	if (n == 0) {
		uint64_t probe = 20 * 1000 * 1000;
		double t0 = now();
		run(probe);
		double dt = now() - t0;
		if (!verify(avx512, nq, probe))
			return 1;
		n = (uint64_t)(probe * (ms / 1000.0) / dt) + 1;
	}
	say("ready %s iterations %lu\n", avx512 ? "avx512" : "avx2", (unsigned long)n);
	double t0 = now();
	run(n);
	double dt = now() - t0;
	if (!verify(avx512, nq, n))
		return 1;
	say("vector ok %.2fs\n", dt);
	return 0;
}
