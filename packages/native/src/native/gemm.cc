// @peftjs/native: a cache-blocked, multi-threaded SGEMM for Node (Node-API, C ABI), row-major,
// C[b] = op(A[b]) · op(B[b]) over a batch with per-entry offsets (broadcasting = offset 0 / repeated).
// One binary for every x86-64: the micro-kernels are compiled per function (target attributes) for
// AVX-512F, AVX2+FMA and a portable baseline, and chosen at run time (__builtin_cpu_supports).
// Operands are Float32Array views (on tfjs's wasm heap): no copies; the calling (JS) thread takes part
// in the work and blocks until every task is done.
#include <node_api.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// A prebuilt binary must load on older Linux: GCC 12's headers bind condition_variable::wait to the
// GLIBCXX_3.4.30 version of the symbol (libstdc++ of GCC >= 12 only); the GLIBCXX_3.4.11 one is the same
// function and exists in every libstdc++ since GCC 4.3. (A static libstdc++ is worse here: it pulls in
// glibc 2.34+ symbols.) packages/native/src/prebuild.test.ts checks the versions the binary needs.
#if defined(__linux__) && defined(__GLIBCXX__)
__asm__(".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define PEFTJS_X86 1
#include <immintrin.h>
#else
#define PEFTJS_X86 0
#endif

namespace {

// ---------------------------------------------------------------------------------------------
// Micro-kernels: C[MR×NR] (+)= Ap[kc×MR]ᵀ · Bp[kc×NR], both packed (A: MR values per k, B: NR per k).

using Ukernel = void (*)(long kc, const float* A, const float* B, float* C, long ldc, bool acc);

struct Isa {
  const char* name;
  int mr, nr;
  Ukernel ukr;
};

constexpr int SC_MR = 4, SC_NR = 16;
static void ukr_scalar(long kc, const float* __restrict A, const float* __restrict B, float* C, long ldc, bool acc) {
  float c[SC_MR][SC_NR] = {};
  for (long k = 0; k < kc; k++) {
    for (int i = 0; i < SC_MR; i++) {
      const float a = A[i];
      for (int j = 0; j < SC_NR; j++) c[i][j] += a * B[j];
    }
    A += SC_MR;
    B += SC_NR;
  }
  for (int i = 0; i < SC_MR; i++)
    for (int j = 0; j < SC_NR; j++) C[i * ldc + j] = acc ? C[i * ldc + j] + c[i][j] : c[i][j];
}

#if PEFTJS_X86
constexpr int AVX2_MR = 6, AVX2_NR = 16;
__attribute__((target("avx2,fma"))) static void ukr_avx2(long kc, const float* __restrict A, const float* __restrict B, float* C, long ldc, bool acc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (long k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
    __m256 a;
    a = _mm256_broadcast_ss(A + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(A + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(A + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(A + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(A + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(A + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    A += AVX2_MR;
    B += AVX2_NR;
  }
#define ST(i, x0, x1)                                                                            \
  do {                                                                                           \
    float* r = C + (i) * ldc;                                                                    \
    if (acc) {                                                                                   \
      _mm256_storeu_ps(r, _mm256_add_ps(_mm256_loadu_ps(r), x0));                                \
      _mm256_storeu_ps(r + 8, _mm256_add_ps(_mm256_loadu_ps(r + 8), x1));                        \
    } else {                                                                                     \
      _mm256_storeu_ps(r, x0);                                                                   \
      _mm256_storeu_ps(r + 8, x1);                                                               \
    }                                                                                            \
  } while (0)
  ST(0, c00, c01); ST(1, c10, c11); ST(2, c20, c21); ST(3, c30, c31); ST(4, c40, c41); ST(5, c50, c51);
#undef ST
}

constexpr int AVX512_MR = 12, AVX512_NR = 32;
__attribute__((target("avx512f,fma"))) static void ukr_avx512(long kc, const float* __restrict A, const float* __restrict B, float* C, long ldc, bool acc) {
  __m512 c[AVX512_MR][2];
#pragma GCC unroll 12
  for (int i = 0; i < AVX512_MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (long k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
#pragma GCC unroll 12
    for (int i = 0; i < AVX512_MR; i++) {
      const __m512 a = _mm512_set1_ps(A[i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
    A += AVX512_MR;
    B += AVX512_NR;
  }
#pragma GCC unroll 12
  for (int i = 0; i < AVX512_MR; i++) {
    float* r = C + i * ldc;
    if (acc) {
      _mm512_storeu_ps(r, _mm512_add_ps(_mm512_loadu_ps(r), c[i][0]));
      _mm512_storeu_ps(r + 16, _mm512_add_ps(_mm512_loadu_ps(r + 16), c[i][1]));
    } else {
      _mm512_storeu_ps(r, c[i][0]);
      _mm512_storeu_ps(r + 16, c[i][1]);
    }
  }
}
#endif

const Isa kScalar{"scalar", SC_MR, SC_NR, ukr_scalar};
#if PEFTJS_X86
const Isa kAvx2{"AVX2", AVX2_MR, AVX2_NR, ukr_avx2};
const Isa kAvx512{"AVX-512", AVX512_MR, AVX512_NR, ukr_avx512};
#endif

bool isaSupported(const std::string& n) {
  if (n == "scalar") return true;
#if PEFTJS_X86
  __builtin_cpu_init();
  if (n == "AVX2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (n == "AVX-512") return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
  return false;
}

const Isa* bestIsa() {
#if PEFTJS_X86
  if (isaSupported("AVX-512")) return &kAvx512;
  if (isaSupported("AVX2")) return &kAvx2;
#endif
  return &kScalar;
}

const Isa* gIsa = nullptr;

// ---------------------------------------------------------------------------------------------
// Thread pool: persistent workers; run(n, f) calls f(0..n-1) across the workers and the caller.

class Pool {
 public:
  ~Pool() { resize(0); }
  int threads() const { return int(workers_.size()) + 1; }
  void resize(int total) {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    // A worker must start from the generation current now, not the one it reads once it runs: a run()
    // that begins before a new thread is scheduled would otherwise be skipped by it, and run() would
    // wait forever for its share (seen as a hung CI run on a loaded 2-core machine).
    const unsigned long start = gen_;
    for (int i = 1; i < total; i++) workers_.emplace_back([this, start] { loop(start); });
  }
  void run(long n, const std::function<void(long)>& f) {
    if (n <= 0) return;
    if (n == 1 || workers_.empty()) {
      for (long i = 0; i < n; i++) f(i);
      return;
    }
    {
      std::lock_guard<std::mutex> l(m_);
      job_ = &f;
      ntasks_ = n;
      next_.store(0);
      busy_ = int(workers_.size());
      gen_++;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> l(m_);
    done_.wait(l, [this] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void work() {
    for (long i; (i = next_.fetch_add(1)) < ntasks_;) (*job_)(i);
  }
  void loop(unsigned long seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
      }
      work();
      {
        std::lock_guard<std::mutex> l(m_);
        if (--busy_ == 0) done_.notify_one();
      }
    }
  }
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_, done_;
  const std::function<void(long)>* job_ = nullptr;
  long ntasks_ = 0;
  std::atomic<long> next_{0};
  int busy_ = 0;
  unsigned long gen_ = 0;
  bool stop_ = false;
};

Pool* gPool = nullptr;
int gEnvs = 0;               // Node environments (main thread, worker_threads) that loaded the addon
std::mutex gCallMutex;       // one product at a time: the pool is shared by every environment

// ---------------------------------------------------------------------------------------------
// Packing and blocking.

constexpr long KC = 256;  // k per packed block: an A micro-panel (12×256×4 = 12 KB) and B's (32 KB) near L1
constexpr long MC = 96;   // rows of a task's tile (multiple of 12, 6, 4)
constexpr long NC = 256;  // columns of a task's tile (multiple of 32, 16)

struct Buf {
  float* p = nullptr;
  size_t n = 0;
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      n = want;
      p = static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64));
    }
    return p;
  }
  ~Buf() { std::free(p); }
};
Buf gPackA, gPackB;  // whole packed operands of the current product (one product at a time: gCallMutex)

// A(i, k) = a[i*si + k*sk]; packs rows [0, mc) × k [0, kc) into MR-row panels, zero-padded.
void packA(const float* a, long si, long sk, long mc, long kc, int MR, float* out) {
  for (long i0 = 0; i0 < mc; i0 += MR) {
    const long mr = std::min<long>(MR, mc - i0);
    if (sk == 1) {
      for (long k = 0; k < kc; k++) {
        float* o = out + k * MR;
        long i = 0;
        for (; i < mr; i++) o[i] = a[(i0 + i) * si + k];
        for (; i < MR; i++) o[i] = 0.f;
      }
    } else {  // transposed A: row k of the stored operand holds A(·, k) contiguous
      for (long k = 0; k < kc; k++) {
        float* o = out + k * MR;
        const float* src = a + k * sk + i0 * si;
        if (mr == MR && si == 1) {
          std::memcpy(o, src, sizeof(float) * MR);
        } else {
          long i = 0;
          for (; i < mr; i++) o[i] = src[i * si];
          for (; i < MR; i++) o[i] = 0.f;
        }
      }
    }
    out += kc * MR;
  }
}

// B(k, j) = b[k*sk + j*sj]; packs k [0, kc) × columns [0, nc) into NR-column panels, zero-padded.
void packB(const float* b, long sk, long sj, long kc, long nc, int NR, float* out) {
  for (long j0 = 0; j0 < nc; j0 += NR) {
    const long nr = std::min<long>(NR, nc - j0);
    if (sj == 1) {
      for (long k = 0; k < kc; k++) {
        float* o = out + k * NR;
        const float* src = b + k * sk + j0;
        std::memcpy(o, src, sizeof(float) * nr);
        for (long j = nr; j < NR; j++) o[j] = 0.f;
      }
    } else {  // transposed B: stored [N, K]; column j of B is row j of the stored operand
      // in blocks of 16 k: 16 contiguous reads per row, writes within a 16 × NR block (in L1)
      for (long k0 = 0; k0 < kc; k0 += 16) {
        const long kb = std::min<long>(16, kc - k0);
        for (long j = 0; j < nr; j++) {
          const float* src = b + (j0 + j) * sj + k0 * sk;
          float* o = out + k0 * NR + j;
          if (sk == 1) {
            for (long k = 0; k < kb; k++) o[k * NR] = src[k];
          } else {
            for (long k = 0; k < kb; k++) o[k * NR] = src[k * sk];
          }
        }
        for (long j = nr; j < NR; j++)
          for (long k = 0; k < kb; k++) out[(k0 + k) * NR + j] = 0.f;
      }
    }
    out += kc * NR;
  }
}

struct Gemm {
  long batch, M, N, K;
  bool ta, tb;
  const float *a, *b;
  float* c;
  const int64_t *aoff, *boff;  // per batch entry, in elements
  bool ct = false;  // C stored transposed (the problem was swapped: Cᵀ = op(B)ᵀ·op(A)ᵀ); see gemm()
};

// Packed operands of one chunk of a product: batch entries [b0, b0+nb), rows [m0, m0+Mp), columns
// [n0, n0+Np) (Mp, Np whole panels). Per batch entry, k-blocks of KC (the last may be shorter), each
// holding the chunk's rows (columns) as MR- (NR-) wide panels of that block's kc.
struct Packing {
  long b0, m0, n0, Mp, Np, K;
  float* Ap;
  float* Bp;
  float* a(long bi, long k0, long kc, long i, int MR) const { return Ap + (bi - b0) * Mp * K + k0 * Mp + ((i - m0) / MR) * kc * MR; }
  float* b(long bi, long k0, long kc, long j, int NR) const { return Bp + (bi - b0) * Np * K + k0 * Np + ((j - n0) / NR) * kc * NR; }
};

// One task: batch entry bi, rows [m0, m0+mc), columns [n0, n0+nc), over all of K, from the packed operands.
void tile(const Gemm& g, const Isa& isa, const Packing& pk, long bi, long m0, long mc, long n0, long nc) {
  const int MR = isa.mr, NR = isa.nr;
  float* c = g.c + bi * g.M * g.N;
  // C(r, s) at c[r*rs + s*cs]: row-major, or column-major for a swapped problem
  const long rs = g.ct ? 1 : g.N, cs = g.ct ? g.M : 1;
  alignas(64) float tmp[32 * 32];
  for (long k0 = 0; k0 < g.K; k0 += KC) {
    const long kc = std::min(KC, g.K - k0);
    const bool acc = k0 > 0;
    for (long j0 = 0; j0 < nc; j0 += NR) {
      const long nr = std::min<long>(NR, nc - j0);
      const float* bp = pk.b(bi, k0, kc, n0 + j0, NR);
      for (long i0 = 0; i0 < mc; i0 += MR) {
        const long mr = std::min<long>(MR, mc - i0);
        const float* ap = pk.a(bi, k0, kc, m0 + i0, MR);
        float* cc = c + (m0 + i0) * rs + (n0 + j0) * cs;
        if (mr == MR && nr == NR && !g.ct) {
          isa.ukr(kc, ap, bp, cc, g.N, acc);
        } else {
          isa.ukr(kc, ap, bp, tmp, NR, false);
          for (long i = 0; i < mr; i++)
            for (long j = 0; j < nr; j++) {
              float& o = cc[i * rs + j * cs];
              o = acc ? o + tmp[i * NR + j] : tmp[i * NR + j];
            }
        }
      }
    }
  }
}

// The share of a padded tile that is real work along one dimension.
double fill(long n, int r) { return double(n) / double((n + r - 1) / r * r); }

// Packed floats kept for one chunk (64 MB): a product whose operands are larger runs in chunks of rows,
// columns and batch entries, each packed once and shared by all its tiles.
// PEFTJS_NATIVE_PACK_BUDGET (floats, read once when the addon loads) overrides it: the tests make it small.
long PACK_BUDGET = 1L << 24;

long roundUp(long n, long r) { return (n + r - 1) / r * r; }

// Packs one chunk's operands (in parallel, by panel), then computes its tiles (in parallel).
void chunk(const Gemm& g, const Isa& isa, Packing& pk, long nb, long mc, long nc) {
  const int MR = isa.mr, NR = isa.nr;
  const int threads = gPool->threads();
  // A is [M, K] (or stored [K, M] when transposed); B is [K, N] (or stored [N, K])
  const long asi = g.ta ? 1 : g.K, ask = g.ta ? g.M : 1;
  const long bsk = g.tb ? 1 : g.N, bsj = g.tb ? g.K : 1;
  const long pa = pk.Mp / MR, pb = pk.Np / NR;  // panels per batch entry
  auto packTask = [&](long t) {
    const long bi = pk.b0 + t / (pa + pb), r = t % (pa + pb);
    for (long k0 = 0; k0 < g.K; k0 += KC) {
      const long kc = std::min(KC, g.K - k0);
      if (r < pa) {
        const long i0 = pk.m0 + r * MR;
        packA(g.a + g.aoff[bi] + i0 * asi + k0 * ask, asi, ask, std::min<long>(MR, pk.m0 + mc - i0), kc, MR, pk.a(bi, k0, kc, i0, MR));
      } else {
        const long j0 = pk.n0 + (r - pa) * NR;
        packB(g.b + g.boff[bi] + k0 * bsk + j0 * bsj, bsk, bsj, kc, std::min<long>(NR, pk.n0 + nc - j0), NR, pk.b(bi, k0, kc, j0, NR));
      }
    }
  };
  // tiles: start at MC × NC, halve (in whole panels) until there are ~2 tasks per thread
  long mt = std::min<long>(pk.Mp, MC / MR * MR);
  long nt = std::min<long>(pk.Np, NC / NR * NR);
  auto count = [&](long mt_, long nt_) { return nb * ((mc + mt_ - 1) / mt_) * ((nc + nt_ - 1) / nt_); };
  const double flops = 2.0 * double(nb) * double(mc) * double(nc) * double(g.K);
  // ~2 tasks per thread, but none much under ~3 MFLOP (≈ 50 µs): waking threads costs ~10 µs
  const long want = std::max<long>(1, std::min<long>(2L * threads, long(flops / 3e6)));
  while (count(mt, nt) < want) {
    if (nt >= mt && nt > NR) nt = std::max<long>(NR, roundUp(nt / 2, NR));
    else if (mt > MR) mt = std::max<long>(MR, roundUp(mt / 2, MR));
    else if (nt > NR) nt = std::max<long>(NR, roundUp(nt / 2, NR));
    else break;
  }
  const long tm = (mc + mt - 1) / mt, tn = (nc + nt - 1) / nt;
  const long n = nb * tm * tn;
  auto task = [&](long t) {
    const long bi = pk.b0 + t / (tm * tn), r = t % (tm * tn);
    const long m0 = pk.m0 + (r / tn) * mt, n0 = pk.n0 + (r % tn) * nt;
    tile(g, isa, pk, bi, m0, std::min(mt, pk.m0 + mc - m0), n0, std::min(nt, pk.n0 + nc - n0));
  };
  const long packs = nb * (pa + pb);
  if (want == 1) {
    for (long t = 0; t < packs; t++) packTask(t);
    for (long t = 0; t < n; t++) task(t);
  } else {
    gPool->run(packs, packTask);
    gPool->run(n, task);
  }
}

void gemm(const Gemm& g0) {
  const Isa& isa = *gIsa;
  if (g0.M == 0 || g0.N == 0 || g0.batch == 0) return;
  if (g0.K == 0) {
    std::memset(g0.c, 0, sizeof(float) * size_t(g0.batch * g0.M * g0.N));
    return;
  }
  // A narrow product (x·Aᵀ of LoRA, N = r = 8) wastes most of an NR-wide panel: compute Cᵀ = op(B)ᵀ·op(A)ᵀ
  // instead (M and N swap roles; C is written transposed) when that pads less.
  Gemm g = g0;
  if (fill(g0.M, isa.nr) * fill(g0.N, isa.mr) > fill(g0.M, isa.mr) * fill(g0.N, isa.nr) * 1.2) {
    g.M = g0.N;
    g.N = g0.M;
    g.a = g0.b;
    g.b = g0.a;
    g.ta = !g0.tb;
    g.tb = !g0.ta;
    g.aoff = g0.boff;
    g.boff = g0.aoff;
    g.ct = true;
  }
  const int MR = isa.mr, NR = isa.nr;
  // Both operands are packed once per chunk and shared by its tiles (packing per tile re-read B once per
  // row-tile and A once per column-tile: a third of the time on a training step's shapes). Chunks keep
  // the packed copies under PACK_BUDGET: columns, then rows, then batch entries.
  long mcw = roundUp(g.M, MR), ncw = roundUp(g.N, NR);
  while ((mcw + ncw) * g.K > PACK_BUDGET && (ncw > NR || mcw > MR)) {
    if (ncw >= mcw && ncw > NR) ncw = std::max<long>(NR, roundUp(ncw / 2, NR));
    else mcw = std::max<long>(MR, roundUp(mcw / 2, MR));
  }
  const long bg = std::max<long>(1, std::min<long>(g.batch, PACK_BUDGET / ((mcw + ncw) * g.K)));
  float* Ap = gPackA.get(size_t(bg * mcw * g.K));
  float* Bp = gPackB.get(size_t(bg * ncw * g.K));
  for (long b0 = 0; b0 < g.batch; b0 += bg) {
    const long nb = std::min(bg, g.batch - b0);
    for (long m0 = 0; m0 < g.M; m0 += mcw) {
      const long mc = std::min(mcw, g.M - m0);
      for (long n0 = 0; n0 < g.N; n0 += ncw) {
        const long nc = std::min(ncw, g.N - n0);
        Packing pk{b0, m0, n0, roundUp(mc, MR), roundUp(nc, NR), g.K, Ap, Bp};
        chunk(g, isa, pk, nb, mc, nc);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Element-wise and reduction kernels (float32, on the same pool): copy, exp, add/sub/mul with simple
// broadcasting, a grouped transpose, sum/max over trailing axes. Memory-bound loops are auto-vectorised
// (the AVX-512 / AVX2 copies are the same template code compiled with a target attribute); exp is an
// explicit AVX-512 Cephes-style polynomial (≈ 1 ulp), std::exp elsewhere.

constexpr long EW_CHUNK = 32768;  // elements per task

// Splits [0, n) into tasks of ≥ EW_CHUNK elements (rounded to `align`), f(begin, end) on the pool.
template <class F>
void parallelRange(long n, long align, F&& f) {
  if (n <= 0) return;
  const int threads = gPool->threads();
  long chunk = std::max<long>(EW_CHUNK, (n + 4L * threads - 1) / (4L * threads));
  chunk = (chunk + align - 1) / align * align;
  const long tasks = (n + chunk - 1) / chunk;
  if (tasks == 1) {
    f(0L, n);
    return;
  }
  gPool->run(tasks, [&](long t) { f(t * chunk, std::min(n, (t + 1) * chunk)); });
}

enum BinOp { kAdd = 0, kSub = 1, kMul = 2 };
enum Mode { mFull = 0, mScalar = 1, mRow = 2, mCol = 3 };  // operand index: i, 0, i % C, i / C

template <int OP, bool AS, bool BS>
__attribute__((always_inline)) inline void binLoop(const float* __restrict a, const float* __restrict b, float* __restrict o, long len) {
  const float a0 = *a, b0 = *b;
  for (long i = 0; i < len; i++) {
    const float x = AS ? a0 : a[i], y = BS ? b0 : b[i];
    o[i] = OP == kAdd ? x + y : OP == kSub ? x - y : x * y;
  }
}

template <int OP>
__attribute__((always_inline)) inline void binSeg(const float* a, bool as, const float* b, bool bs, float* o, long len) {
  if (as && bs) binLoop<OP, true, true>(a, b, o, len);
  else if (as) binLoop<OP, true, false>(a, b, o, len);
  else if (bs) binLoop<OP, false, true>(a, b, o, len);
  else binLoop<OP, false, false>(a, b, o, len);
}

struct Bin {
  int op;
  const float *a, *b;
  float* o;
  long n, C;
  int am, bm;
};

// out[i] for i in [i0, i1), a row segment (of C) at a time
template <int OP>
__attribute__((always_inline)) inline void binRange(const Bin& g, long i0, long i1) {
  for (long i = i0; i < i1;) {
    const long r = i / g.C, c = i % g.C;
    const long len = std::min(i1 - i, g.C - c);
    auto ptr = [&](const float* x, int m, bool& s) -> const float* {
      s = m == mScalar || m == mCol;
      return m == mFull ? x + i : m == mScalar ? x : m == mRow ? x + c : x + r;
    };
    bool as, bs;
    const float* pa = ptr(g.a, g.am, as);
    const float* pb = ptr(g.b, g.bm, bs);
    binSeg<OP>(pa, as, pb, bs, g.o + i, len);
    i += len;
  }
}

__attribute__((always_inline)) inline void binAny(const Bin& g, long i0, long i1) {
  if (g.op == kAdd) binRange<kAdd>(g, i0, i1);
  else if (g.op == kSub) binRange<kSub>(g, i0, i1);
  else binRange<kMul>(g, i0, i1);
}
static void binBase(const Bin& g, long i0, long i1) { binAny(g, i0, i1); }
#if PEFTJS_X86
__attribute__((target("avx2"))) static void binAvx2(const Bin& g, long i0, long i1) { binAny(g, i0, i1); }
__attribute__((target("avx512f"))) static void binAvx512(const Bin& g, long i0, long i1) { binAny(g, i0, i1); }
#endif

using BinFn = void (*)(const Bin&, long, long);
BinFn binFn() {
#if PEFTJS_X86
  if (gIsa == &kAvx512) return binAvx512;
  if (gIsa == &kAvx2) return binAvx2;
#endif
  return binBase;
}

void binary(const Bin& g) {
  const BinFn f = binFn();
  parallelRange(g.n, 16, [&](long i0, long i1) { f(g, i0, i1); });
}

// exp
static void expBase(const float* x, float* o, long n) {
  for (long i = 0; i < n; i++) o[i] = std::exp(x[i]);
}
#if PEFTJS_X86
__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x) {
  // exp(x) = 2^k · exp(r), k = round(x·log2 e), r = x − k·ln 2 (in two parts), exp(r) by a degree-6 polynomial
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(89.f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  __m512 y = _mm512_scalef_ps(p, k);  // 2^k · p: overflows to inf, underflows through subnormals to 0
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_ps(y, nan, x);
}
__attribute__((target("avx512f"))) static void expAvx512(const float* x, float* o, long n) {
  long i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, exp512(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(o + i, m, exp512(_mm512_maskz_loadu_ps(m, x + i)));
  }
}
#endif

void unary(int op, const float* x, float* o, long n) {
  if (op == 0) {  // copy
    parallelRange(n, 16, [&](long i0, long i1) { std::memcpy(o + i0, x + i0, sizeof(float) * size_t(i1 - i0)); });
    return;
  }
  auto f = expBase;
#if PEFTJS_X86
  if (gIsa == &kAvx512) f = expAvx512;
#endif
  parallelRange(n, 16, [&](long i0, long i1) { f(x + i0, o + i0, i1 - i0); });
}

// Rotary position embedding (the `peftjs.Rope` op): x [B, H, T, D], tables [1 or B, 1, T, D];
// o = x·cos + cat(x2, x1)·sinSigned, or transposed x·cos + swap(x·sinSigned) (the gradient's), each product
// rounded to float32 before the sum (as the tfjs reference: two multiplies and an add; the build turns FMA
// contraction off).
void rope(const float* x, const float* c, const float* s, float* o, long B, long H, long T, long D, bool perBatch, bool transposed) {
  const long half = D / 2;
  // the sin entry for out[j] (j < half) and out[j] (j ≥ half): the output's index, or transposed the partner's
  const long sLo = transposed ? half : 0, sHi = transposed ? -half : 0;
  parallelRange(B * H * T * D, D, [&](long e0, long e1) {
    for (long r = e0 / D; r < e1 / D; r++) {
      const long bi = r / (H * T), ti = r % T;
      const long t = (perBatch ? bi * T * D : 0) + ti * D;
      const float* xr = x + r * D;
      float* orow = o + r * D;
      const float* cr = c + t;
      const float* sr = s + t;
      for (long j = 0; j < half; j++) {
        const float p = xr[j] * cr[j], q = xr[j + half] * sr[j + sLo];
        orow[j] = p + q;
      }
      for (long j = half; j < D; j++) {
        const float p = xr[j] * cr[j], q = xr[j - half] * sr[j + sHi];
        orow[j] = p + q;
      }
    }
  });
}

// out[b][c][r][d] = x[b][r][c][d]: swaps two adjacent groups of axes (2-D transpose: B = D = 1)
void transpose(const float* x, float* o, long B, long R, long C, long D) {
  constexpr long T = 32;  // tile
  const long tr = (R + T - 1) / T, tc = (C + T - 1) / T;
  const long tasks = B * tr * tc;
  const long per = std::max<long>(1, EW_CHUNK / std::max<long>(1, T * T * D));  // tiles per task
  auto run = [&](long t0, long t1) {
    for (long t = t0; t < t1; t++) {
      const long b = t / (tr * tc), q = t % (tr * tc);
      const long r0 = (q / tc) * T, c0 = (q % tc) * T;
      const long r1 = std::min(R, r0 + T), c1 = std::min(C, c0 + T);
      const float* xb = x + b * R * C * D;
      float* ob = o + b * R * C * D;
      if (D == 1) {
        for (long c = c0; c < c1; c++)
          for (long r = r0; r < r1; r++) ob[c * R + r] = xb[r * C + c];
      } else {
        for (long c = c0; c < c1; c++)
          for (long r = r0; r < r1; r++) std::memcpy(ob + (c * R + r) * D, xb + (r * C + c) * D, sizeof(float) * size_t(D));
      }
    }
  };
  const long ntasks = (tasks + per - 1) / per;
  if (ntasks == 1) run(0, tasks);
  else gPool->run(ntasks, [&](long i) { run(i * per, std::min(tasks, (i + 1) * per)); });
}

// o[r] = Σ / max of x[r][0..C)
template <int OP>
__attribute__((always_inline)) inline void reduceRows(const float* x, float* o, long r0, long r1, long C) {
  for (long r = r0; r < r1; r++) {
    const float* v = x + r * C;
    if (OP == 0) {
      // 16 float lanes, combined in double: at least as accurate as a sequential float sum
      float acc[16] = {};
      long c = 0;
      for (; c + 16 <= C; c += 16)
        for (int j = 0; j < 16; j++) acc[j] += v[c + j];
      double s = 0;
      for (int j = 0; j < 16; j++) s += acc[j];
      for (; c < C; c++) s += v[c];
      o[r] = float(s);
    } else {
      float acc[16];
      for (int j = 0; j < 16; j++) acc[j] = -INFINITY;
      long c = 0;
      bool nan = false;
      for (; c + 16 <= C; c += 16)
        for (int j = 0; j < 16; j++) {
          const float y = v[c + j];
          nan |= y != y;
          acc[j] = acc[j] > y ? acc[j] : y;
        }
      float m = -INFINITY;
      for (int j = 0; j < 16; j++) m = m > acc[j] ? m : acc[j];
      for (; c < C; c++) {
        nan |= v[c] != v[c];
        m = m > v[c] ? m : v[c];
      }
      o[r] = nan ? NAN : m;
    }
  }
}
__attribute__((always_inline)) inline void reduceAny(int op, const float* x, float* o, long r0, long r1, long C) {
  if (op == 0) reduceRows<0>(x, o, r0, r1, C);
  else reduceRows<1>(x, o, r0, r1, C);
}
static void reduceBase(int op, const float* x, float* o, long r0, long r1, long C) { reduceAny(op, x, o, r0, r1, C); }
#if PEFTJS_X86
__attribute__((target("avx2"))) static void reduceAvx2(int op, const float* x, float* o, long r0, long r1, long C) { reduceAny(op, x, o, r0, r1, C); }
__attribute__((target("avx512f"))) static void reduceAvx512(int op, const float* x, float* o, long r0, long r1, long C) { reduceAny(op, x, o, r0, r1, C); }
#endif

void reduce(int op, const float* x, float* o, long R, long C) {
  auto f = reduceBase;
#if PEFTJS_X86
  if (gIsa == &kAvx512) f = reduceAvx512;
  else if (gIsa == &kAvx2) f = reduceAvx2;
#endif
  const long rowsPer = std::max<long>(1, EW_CHUNK / std::max<long>(1, C));
  const long tasks = (R + rowsPer - 1) / rowsPer;
  if (tasks == 1) f(op, x, o, 0, R, C);
  else gPool->run(tasks, [&](long t) { f(op, x, o, t * rowsPer, std::min(R, (t + 1) * rowsPer), C); });
}

// ---------------------------------------------------------------------------------------------
// Node-API surface.

#define CHECK(call)                                                       \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error(env, nullptr, "peftjs_native: " #call " failed"); \
      return nullptr;                                                     \
    }                                                                     \
  } while (0)

napi_value throwErr(napi_env env, const std::string& msg) {
  napi_throw_error(env, nullptr, ("peftjs_native: " + msg).c_str());
  return nullptr;
}

bool getF32(napi_env env, napi_value v, float** p, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t;
  void* data = nullptr;
  napi_value ab;
  size_t off = 0;
  if (napi_get_typedarray_info(env, v, &t, len, &data, &ab, &off) != napi_ok || t != napi_float32_array) return false;
  *p = static_cast<float*>(data);
  return true;
}

bool getOffsets(napi_env env, napi_value v, long batch, long stride, std::vector<int64_t>& out) {
  napi_valuetype vt;
  napi_typeof(env, v, &vt);
  out.resize(size_t(batch));
  if (vt == napi_undefined || vt == napi_null) {
    for (long i = 0; i < batch; i++) out[size_t(i)] = int64_t(i) * stride;
    return true;
  }
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t;
  size_t len = 0;
  void* data = nullptr;
  napi_value ab;
  size_t off = 0;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok || t != napi_float64_array || len < size_t(batch)) return false;
  const double* d = static_cast<const double*>(data);
  for (long i = 0; i < batch; i++) out[size_t(i)] = int64_t(d[i]);
  return true;
}

// gemm(a, b, c, batch, M, N, K, transposeA, transposeB, aStride, bStride, aOffsets?, bOffsets?)
napi_value Gemm_(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc < 11) return throwErr(env, "gemm expects (a, b, c, batch, M, N, K, transposeA, transposeB, aStride, bStride[, aOffsets, bOffsets])");
  Gemm g{};
  float *a, *b, *c;
  size_t la, lb, lc;
  if (!getF32(env, argv[0], &a, &la) || !getF32(env, argv[1], &b, &lb) || !getF32(env, argv[2], &c, &lc))
    return throwErr(env, "a, b and c must be Float32Arrays");
  int64_t dims[4];
  for (int i = 0; i < 4; i++) {
    if (napi_get_value_int64(env, argv[3 + i], &dims[i]) != napi_ok || dims[i] < 0) return throwErr(env, "batch, M, N, K must be non-negative integers");
  }
  g.batch = dims[0];
  g.M = dims[1];
  g.N = dims[2];
  g.K = dims[3];
  CHECK(napi_get_value_bool(env, argv[7], &g.ta));
  CHECK(napi_get_value_bool(env, argv[8], &g.tb));
  int64_t sa, sb;
  CHECK(napi_get_value_int64(env, argv[9], &sa));
  CHECK(napi_get_value_int64(env, argv[10], &sb));
  napi_value undef;
  napi_get_undefined(env, &undef);
  std::vector<int64_t> ao, bo;
  if (!getOffsets(env, argc > 11 ? argv[11] : undef, g.batch, long(sa), ao) || !getOffsets(env, argc > 12 ? argv[12] : undef, g.batch, long(sb), bo))
    return throwErr(env, "offsets must be Float64Arrays of length batch");
  const int64_t mk = g.M * g.K, kn = g.K * g.N;
  for (long i = 0; i < g.batch; i++) {
    if (ao[size_t(i)] < 0 || ao[size_t(i)] + mk > int64_t(la)) return throwErr(env, "a is too small for its offsets and shape");
    if (bo[size_t(i)] < 0 || bo[size_t(i)] + kn > int64_t(lb)) return throwErr(env, "b is too small for its offsets and shape");
  }
  if (g.batch * g.M * g.N > int64_t(lc)) return throwErr(env, "c is too small for batch × M × N");
  g.a = a;
  g.b = b;
  g.c = c;
  g.aoff = ao.data();
  g.boff = bo.data();
  std::lock_guard<std::mutex> l(gCallMutex);
  gemm(g);
  return nullptr;
}

bool getInts(napi_env env, napi_value* argv, int n, int64_t* out) {
  for (int i = 0; i < n; i++)
    if (napi_get_value_int64(env, argv[i], &out[i]) != napi_ok || out[i] < 0) return false;
  return true;
}

// binary(op, a, b, out, C, aMode, bMode): out[i] = a[·] op b[·] over out.length, modes as in Mode
napi_value Binary_(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  float *a, *b, *o;
  size_t la, lb, lo;
  int64_t v[3];
  int32_t op;
  if (argc < 7 || napi_get_value_int32(env, argv[0], &op) != napi_ok || op < 0 || op > 2) return throwErr(env, "binary expects (op 0..2, a, b, out, C, aMode, bMode)");
  if (!getF32(env, argv[1], &a, &la) || !getF32(env, argv[2], &b, &lb) || !getF32(env, argv[3], &o, &lo)) return throwErr(env, "a, b and out must be Float32Arrays");
  if (!getInts(env, argv + 4, 3, v) || v[0] < 1 || v[1] > 3 || v[2] > 3) return throwErr(env, "C must be ≥ 1, modes 0..3");
  const long n = long(lo), C = long(v[0]);
  if (n % C != 0) return throwErr(env, "out.length must be a multiple of C");
  auto need = [&](int m) -> long { return m == mFull ? n : m == mScalar ? 1 : m == mRow ? C : n / C; };
  if (n > 0 && (long(la) < need(int(v[1])) || long(lb) < need(int(v[2])))) return throwErr(env, "an operand is too small for its mode");
  const Bin g{op, a, b, o, n, C, int(v[1]), int(v[2])};
  std::lock_guard<std::mutex> l(gCallMutex);
  binary(g);
  return nullptr;
}

// unary(op, x, out): op 0 copy, 1 exp; over out.length
napi_value Unary_(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  float *x, *o;
  size_t lx, lo;
  int32_t op;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &op) != napi_ok || op < 0 || op > 1) return throwErr(env, "unary expects (op 0..1, x, out)");
  if (!getF32(env, argv[1], &x, &lx) || !getF32(env, argv[2], &o, &lo) || lx < lo) return throwErr(env, "x and out must be Float32Arrays, x at least as long as out");
  std::lock_guard<std::mutex> l(gCallMutex);
  unary(op, x, o, long(lo));
  return nullptr;
}

// transpose(x, out, B, R, C, D): out[b][c][r][d] = x[b][r][c][d]
napi_value Transpose_(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  float *x, *o;
  size_t lx, lo;
  int64_t v[4];
  if (argc < 6 || !getF32(env, argv[0], &x, &lx) || !getF32(env, argv[1], &o, &lo) || !getInts(env, argv + 2, 4, v)) return throwErr(env, "transpose expects (x, out, B, R, C, D)");
  const int64_t total = v[0] * v[1] * v[2] * v[3];
  if (int64_t(lx) < total || int64_t(lo) < total) return throwErr(env, "x or out is too small for B × R × C × D");
  std::lock_guard<std::mutex> l(gCallMutex);
  if (total > 0) transpose(x, o, long(v[0]), long(v[1]), long(v[2]), long(v[3]));
  return nullptr;
}

// rope(x, cos, sin, out, B, H, T, D, perBatch, transposed)
napi_value Rope_(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  float *x, *c, *s, *o;
  size_t lx, lc, ls, lo;
  int64_t v[4];
  bool perBatch = false, transposed = false;
  if (argc < 10 || !getF32(env, argv[0], &x, &lx) || !getF32(env, argv[1], &c, &lc) || !getF32(env, argv[2], &s, &ls) || !getF32(env, argv[3], &o, &lo) ||
      !getInts(env, argv + 4, 4, v) || napi_get_value_bool(env, argv[8], &perBatch) != napi_ok ||
      napi_get_value_bool(env, argv[9], &transposed) != napi_ok || v[3] % 2 != 0)
    return throwErr(env, "rope expects (x, cos, sin, out, B, H, T, D even, perBatch, transposed)");
  const int64_t total = v[0] * v[1] * v[2] * v[3], table = (perBatch ? v[0] : 1) * v[2] * v[3];
  if (int64_t(lx) < total || int64_t(lo) < total || int64_t(lc) < table || int64_t(ls) < table) return throwErr(env, "x, out, cos or sin is too small for B × H × T × D");
  std::lock_guard<std::mutex> l(gCallMutex);
  if (total > 0) rope(x, c, s, o, long(v[0]), long(v[1]), long(v[2]), long(v[3]), perBatch, transposed);
  return nullptr;
}

// reduce(op, x, out, R, C): op 0 sum, 1 max of each of R rows of C
napi_value Reduce_(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  float *x, *o;
  size_t lx, lo;
  int32_t op;
  int64_t v[2];
  if (argc < 5 || napi_get_value_int32(env, argv[0], &op) != napi_ok || op < 0 || op > 1) return throwErr(env, "reduce expects (op 0..1, x, out, R, C)");
  if (!getF32(env, argv[1], &x, &lx) || !getF32(env, argv[2], &o, &lo) || !getInts(env, argv + 3, 2, v) || v[1] < 1) return throwErr(env, "x, out must be Float32Arrays, R ≥ 0, C ≥ 1");
  if (int64_t(lx) < v[0] * v[1] || int64_t(lo) < v[0]) return throwErr(env, "x or out is too small for R × C");
  std::lock_guard<std::mutex> l(gCallMutex);
  reduce(op, x, o, long(v[0]), long(v[1]));
  return nullptr;
}

napi_value makeInfo(napi_env env) {
  napi_value o, v;
  CHECK(napi_create_object(env, &o));
  CHECK(napi_create_string_utf8(env, gIsa->name, NAPI_AUTO_LENGTH, &v));
  CHECK(napi_set_named_property(env, o, "isa", v));
  CHECK(napi_create_int32(env, gPool->threads(), &v));
  CHECK(napi_set_named_property(env, o, "threads", v));
  napi_value arr;
  CHECK(napi_create_array(env, &arr));
  uint32_t n = 0;
  for (const char* name : {"AVX-512", "AVX2", "scalar"}) {
    if (!isaSupported(name)) continue;
    CHECK(napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v));
    CHECK(napi_set_element(env, arr, n++, v));
  }
  CHECK(napi_set_named_property(env, o, "supportedIsas", arr));
  return o;
}

napi_value Info_(napi_env env, napi_callback_info) { return makeInfo(env); }

// setThreads(n): total threads including the caller's
napi_value SetThreads_(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t n = 1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok) return throwErr(env, "setThreads expects a number");
  n = std::max(1, std::min(n, 256));
  std::lock_guard<std::mutex> l(gCallMutex);
  if (n != gPool->threads()) gPool->resize(n);
  return makeInfo(env);
}

// setIsa(name): "AVX-512" | "AVX2" | "scalar" | "auto"
napi_value SetIsa_(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  char buf[32] = {};
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) return throwErr(env, "setIsa expects a string");
  const std::string s(buf, len);
  if (s == "auto") gIsa = bestIsa();
  else if (!isaSupported(s)) return throwErr(env, "ISA " + s + " is not supported on this CPU (or unknown)");
  else if (s == "scalar") gIsa = &kScalar;
#if PEFTJS_X86
  else if (s == "AVX2") gIsa = &kAvx2;
  else if (s == "AVX-512") gIsa = &kAvx512;
#endif
  return makeInfo(env);
}

void cleanup(void*) {
  std::lock_guard<std::mutex> l(gCallMutex);
  if (--gEnvs == 0) {
    delete gPool;
    gPool = nullptr;
  }
}

napi_value Init(napi_env env, napi_value exports) {
  {
    std::lock_guard<std::mutex> l(gCallMutex);
    if (!gPool) {
      gPool = new Pool();
      gIsa = bestIsa();
      if (const char* b = std::getenv("PEFTJS_NATIVE_PACK_BUDGET")) PACK_BUDGET = std::max(1L, std::atol(b));
    }
    gEnvs++;
  }
  napi_add_env_cleanup_hook(env, cleanup, nullptr);
  napi_property_descriptor props[] = {
      {"gemm", nullptr, Gemm_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"binary", nullptr, Binary_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unary", nullptr, Unary_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"transpose", nullptr, Transpose_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reduce", nullptr, Reduce_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rope", nullptr, Rope_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads_, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setIsa", nullptr, SetIsa_, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
