// Hand-written kernels for a decode step on an x86-64 CPU (AVX2 + FMA; the
// weight products take an AVX-512 form where the CPU has it),
// called from jitted programs through XLA's FFI (marl_jax/cpu_kernels).
//
// SkinnyMatmul: y[g, m, n] = sum_k x[g, m, k] * w[g, n, k], the weight packed
// as panels of kCols output columns, wp[g, p, k, c] = w[g, p * kCols + c, k]
// (zero past N). Each panel is read once from memory, contiguously: the rows
// ride in the vector lanes (x transposed to [k, 16 rows]), each weight is
// broadcast, and 16 rows x 6 columns of sums live in 12 AVX registers.
// XLA's GEMMs pack their weight operand at every call, which at 16 rows
// streams the weights at well under this CPU's memory bandwidth.
//
// DecodeAttention: one new query per row against its cached keys and values,
// out[g, kv, j, :] = softmax_t(q[g, kv, j] . k[g, kv, t] where mask[g, t]) v,
// as XLA computes it with scores of -1e30 where masked (so a row with no
// valid slot averages all of them). One (row, kv head) per work item: the
// einsum / softmax / einsum chain it replaces cost ~0.4 ms a layer at 16 rows,
// nearly all of it dispatch of tiny batched products.
//
// Work is shared with XLA's intra-op thread pool: every participant claims
// items from one atomic counter; the caller waits only for the items claimed,
// so a helper that starts late finds nothing left and touches no buffer.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kCols = 6;   // output columns per panel (COLUMNS in __init__.py)
constexpr int64_t kRows = 16;  // rows per register tile: two 8-lane vectors

// Runs fn(item) for item in [0, total) on the caller and XLA's pool threads.
void ParallelFor(ffi::ThreadPool& pool, int64_t total, std::function<void(int64_t)> fn) {
  struct Shared {
    std::function<void(int64_t)> fn;
    int64_t total;
    std::atomic<int64_t> next{0}, done{0};
    void Drain() {
      for (int64_t item; (item = next.fetch_add(1)) < total;) {
        fn(item);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto shared = std::make_shared<Shared>();
  shared->fn = std::move(fn);
  shared->total = total;
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, total - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([shared] { shared->Drain(); });
  shared->Drain();
  for (int spins = 0; shared->done.load(std::memory_order_acquire) < total; ++spins) {
    if (spins < 4096) _mm_pause(); else std::this_thread::yield();
  }
}

int64_t Product(ffi::Span<const int64_t> dims, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t i = from; i < to; ++i) n *= dims[i];
  return n;
}

bool SameLead(ffi::Span<const int64_t> a, ffi::Span<const int64_t> b, size_t lead) {
  for (size_t i = 0; i < lead; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

bool Same(ffi::Span<const int64_t> a, ffi::Span<const int64_t> b) {
  return a.size() == b.size() && SameLead(a, b, a.size());
}

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The accumulators are named variables, not an array: GCC kept an array
// __m256 acc[6][2] in memory as well and stored all twelve to the stack at
// every k (12 stores per 12 FMAs), which held the loop to ~25 GFLOP/s of CPU
// time on a Zen 4 core; named, they stay in registers (~42).
#define MARL_JAX_FMA_COLUMN(c)                                        \
  {                                                                   \
    const __m256 b = _mm256_broadcast_ss(w + c);                      \
    a##c##0 = _mm256_fmadd_ps(b, x0, a##c##0);                        \
    if (R > 1) a##c##1 = _mm256_fmadd_ps(b, x1, a##c##1);             \
  }

template <int R>  // 8-row vectors per tile (1 or 2)
void Panel(const float* xt, const float* wp, int64_t k_dim, float* out) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
         a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
  for (int64_t k = 0; k < k_dim; ++k) {
    const __m256 x0 = _mm256_loadu_ps(xt + k * kRows);
    const __m256 x1 = R > 1 ? _mm256_loadu_ps(xt + k * kRows + 8) : x0;
    const float* w = wp + k * kCols;
    // 2 KB ahead in the panel stream: 1.1-1.2x on SmolLM2's products here.
    _mm_prefetch(reinterpret_cast<const char*>(w + 512), _MM_HINT_T0);
    MARL_JAX_FMA_COLUMN(0) MARL_JAX_FMA_COLUMN(1) MARL_JAX_FMA_COLUMN(2)
    MARL_JAX_FMA_COLUMN(3) MARL_JAX_FMA_COLUMN(4) MARL_JAX_FMA_COLUMN(5)
  }
  const __m256 acc[kCols][2] = {{a00, a01}, {a10, a11}, {a20, a21},
                                {a30, a31}, {a40, a41}, {a50, a51}};
  for (int c = 0; c < kCols; ++c)
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + c * kRows + 8 * r, acc[c][r]);
}
#undef MARL_JAX_FMA_COLUMN

// The AVX-512 form, where the CPU has it (runtime dispatch: the library is
// built for AVX2 and runs on AVX2-only machines): a tile's 16 rows in one
// zmm, `P` panels (1 or 2) at once so that 12 accumulators hide the FMA
// latency, each weight broadcast inside its FMA. Each output is the same
// chain of FMAs over k as in `Panel`, so both give the same bits.
template <int P>
__attribute__((target("avx512f"))) void Panel512(const float* xt, const float* wp0,
                                                 const float* wp1, int64_t k_dim,
                                                 float* out0, float* out1) {
  __m512 a0[kCols], a1[kCols];
  for (int c = 0; c < kCols; ++c) a0[c] = a1[c] = _mm512_setzero_ps();
  for (int64_t k = 0; k < k_dim; ++k) {
    const __m512 xv = _mm512_loadu_ps(xt + k * kRows);
    const float* w0 = wp0 + k * kCols;
    const float* w1 = wp1 + k * kCols;
    _mm_prefetch(reinterpret_cast<const char*>(w0 + 512), _MM_HINT_T0);
    if (P > 1) _mm_prefetch(reinterpret_cast<const char*>(w1 + 512), _MM_HINT_T0);
    for (int c = 0; c < kCols; ++c) {
      a0[c] = _mm512_fmadd_ps(_mm512_set1_ps(w0[c]), xv, a0[c]);
      if (P > 1) a1[c] = _mm512_fmadd_ps(_mm512_set1_ps(w1[c]), xv, a1[c]);
    }
  }
  for (int c = 0; c < kCols; ++c) {
    _mm512_storeu_ps(out0 + c * kRows, a0[c]);
    if (P > 1) _mm512_storeu_ps(out1 + c * kRows, a1[c]);
  }
}

// Whether SkinnyMatmul takes the AVX-512 form: where the CPU has AVX-512F,
// unless switched off (MarlJaxAvx512, for tests and A/B runs).
std::atomic<bool> use_avx512{__builtin_cpu_supports("avx512f") != 0};

ffi::Error SkinnyMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                        ffi::Buffer<ffi::F32> wp, ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = wp.dimensions(), yd = y->dimensions();
  const size_t rank = xd.size();
  if (rank < 2 || wd.size() != rank + 1 || yd.size() != rank || wd[rank] != kCols ||
      !SameLead(xd, wd, rank - 2) || wd[rank - 1] != xd[rank - 1] ||
      yd[rank - 2] != xd[rank - 2] || wd[rank - 2] * kCols < yd[rank - 1])
    return ffi::Error::InvalidArgument(
        "skinny_matmul: expected x [..., M, K], packed w [..., P, K, 6], y [..., M, N <= 6P]");
  const int64_t g = Product(xd, 0, rank - 2), m = xd[rank - 2], k = xd[rank - 1];
  const int64_t n = yd[rank - 1], panels = wd[rank - 2], tiles = (m + kRows - 1) / kRows;
  if (g * m * n == 0) return ffi::Error::Success();  // nothing to compute (and no chunks)
  const float* xs = x.typed_data();
  const float* ws = wp.typed_data();
  float* ys = y->typed_data();
  std::vector<float> xt(g * tiles * k * kRows, 0.0f);  // [g, tiles, k, kRows]
  for (int64_t slot = 0; slot < g; ++slot)
    for (int64_t row = 0; row < m; ++row) {
      const float* src = xs + (slot * m + row) * k;
      float* dst = xt.data() + (slot * tiles + row / kRows) * k * kRows + row % kRows;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kRows] = src[kk];
    }
  // ~4 items per thread, so a slow thread does not hold the rest up.
  const int64_t per_slot = std::max<int64_t>(1, 4 * std::max<int64_t>(1, pool.num_threads()) / g);
  // Chunks of an even number of panels: the AVX-512 form takes them in pairs.
  const int64_t chunk = 2 * ((panels + 2 * per_slot - 1) / (2 * per_slot));
  const int64_t chunks = (panels + chunk - 1) / chunk;
  const bool avx512 = use_avx512.load(std::memory_order_relaxed);
  ParallelFor(pool, g * chunks, [&](int64_t item) {
    const int64_t slot = item / chunks, p0 = (item % chunks) * chunk;
    const int64_t p_end = std::min(panels, p0 + chunk);
    float tile_out[2][kCols * kRows];
    for (int64_t p = p0; p < p_end; p += avx512 ? 2 : 1) {
      const int64_t pair = avx512 && p + 1 < p_end ? 2 : 1;
      const float* w = ws + (slot * panels + p) * k * kCols;
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t rows = std::min(kRows, m - t * kRows);
        const float* xtile = xt.data() + (slot * tiles + t) * k * kRows;
        if (pair == 2) Panel512<2>(xtile, w, w + k * kCols, k, tile_out[0], tile_out[1]);
        else if (avx512) Panel512<1>(xtile, w, w, k, tile_out[0], tile_out[0]);
        else if (rows > 8) Panel<2>(xtile, w, k, tile_out[0]);
        else Panel<1>(xtile, w, k, tile_out[0]);
        for (int64_t q = 0; q < pair; ++q)
          for (int64_t c = 0; c < kCols && (p + q) * kCols + c < n; ++c)
            for (int64_t r = 0; r < rows; ++r)
              ys[(slot * m + t * kRows + r) * n + (p + q) * kCols + c] = tile_out[q][c * kRows + r];
      }
    }
  });
  return ffi::Error::Success();
}

// exp of 8 lanes: Cephes' polynomial on the reduced argument, as XLA's and
// Eigen's vectorised exp; within 2 ulp of std::exp on [-88, 88].
__m256 Exp(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)),
                    _mm256_set1_ps(-88.3762626647949f));
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                  5.0000001201e-1f})
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
  y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(0x7f)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

constexpr int64_t kQ = 3;  // queries sharing each key and value row's loads

// One (row, kv head): the group's queries against the slots in `slots`.
void AttendOne(const float* q, const float* keys, const float* values, const int64_t* slots,
               int64_t n, int64_t group, int64_t hd, float* scores, float* out) {
  const int64_t vec = hd / 8 * 8;
  for (int64_t g0 = 0; g0 < group; g0 += kQ) {
    const int64_t gn = std::min(kQ, group - g0);
    const float* qg = q + g0 * hd;
    for (int64_t i = 0; i < n; ++i) {  // scores: each key row loaded once for gn queries
      const float* k = keys + slots[i] * hd;
      if (g0 == 0) {  // the cache is read from memory: fetch ahead, values too
        const float* ahead = keys + slots[std::min(i + 4, n - 1)] * hd;
        for (int64_t d = 0; d < hd; d += 16) {
          _mm_prefetch(reinterpret_cast<const char*>(ahead + d), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(values + slots[i] * hd + d), _MM_HINT_T0);
        }
      }
      __m256 acc[kQ];
      for (int64_t j = 0; j < kQ; ++j) acc[j] = _mm256_setzero_ps();
      for (int64_t d = 0; d < vec; d += 8) {
        const __m256 kv = _mm256_loadu_ps(k + d);
        for (int64_t j = 0; j < kQ; ++j)
          if (j < gn) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(qg + j * hd + d), kv, acc[j]);
      }
      for (int64_t j = 0; j < gn; ++j) {
        float sum = HorizontalSum(acc[j]);
        for (int64_t d = vec; d < hd; ++d) sum += qg[j * hd + d] * k[d];
        scores[j * n + i] = sum;
      }
    }
    for (int64_t j = 0; j < gn; ++j) {  // softmax, vectorised over slots
      float* p = scores + j * n;
      const float top = *std::max_element(p, p + n);
      __m256 total = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {
        const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(p + i), _mm256_set1_ps(top)));
        _mm256_storeu_ps(p + i, e);
        total = _mm256_add_ps(total, e);
      }
      float sum = HorizontalSum(total);
      for (; i < n; ++i) sum += (p[i] = std::exp(p[i] - top));
      for (i = 0; i < n; ++i) p[i] /= sum;
    }
    for (int64_t d0 = 0; d0 < vec; d0 += 32) {  // out: each value row loaded once
      const int64_t chunks = std::min<int64_t>(4, (vec - d0) / 8);
      __m256 acc[kQ][4];
      for (int64_t j = 0; j < kQ; ++j)
        for (int64_t c = 0; c < 4; ++c) acc[j][c] = _mm256_setzero_ps();
      for (int64_t i = 0; i < n; ++i) {
        const float* v = values + slots[i] * hd + d0;
        for (int64_t c = 0; c < 4; ++c) {
          if (c >= chunks) break;
          const __m256 vv = _mm256_loadu_ps(v + 8 * c);
          for (int64_t j = 0; j < kQ; ++j)
            if (j < gn)
              acc[j][c] = _mm256_fmadd_ps(_mm256_set1_ps(scores[j * n + i]), vv, acc[j][c]);
        }
      }
      for (int64_t j = 0; j < gn; ++j)
        for (int64_t c = 0; c < chunks; ++c)
          _mm256_storeu_ps(out + (g0 + j) * hd + d0 + 8 * c, acc[j][c]);
    }
    for (int64_t j = 0; j < gn; ++j)
      for (int64_t d = vec; d < hd; ++d) {
        float sum = 0.0f;
        for (int64_t i = 0; i < n; ++i) sum += scores[j * n + i] * values[slots[i] * hd + d];
        out[(g0 + j) * hd + d] = sum;
      }
  }
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> keys, ffi::Buffer<ffi::F32> values,
                           ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<ffi::F32> out) {
  const auto qd = q.dimensions(), kd = keys.dimensions(), md = mask.dimensions();
  const size_t rank = qd.size();  // q [..., KV, G, hd], keys/values [..., KV, T, hd], mask [..., T]
  if (rank < 3 || kd.size() != rank || !Same(values.dimensions(), kd) || md.size() != rank - 2 ||
      !SameLead(qd, kd, rank - 2) || !SameLead(qd, md, rank - 3) || kd[rank - 1] != qd[rank - 1] ||
      md[rank - 3] != kd[rank - 2] || !Same(out->dimensions(), qd))
    return ffi::Error::InvalidArgument(
        "decode_attention: expected q [..., KV, G, hd], keys and values [..., KV, T, hd], "
        "mask [..., T]");
  const int64_t rows = Product(qd, 0, rank - 3), heads = qd[rank - 3], group = qd[rank - 2];
  const int64_t hd = qd[rank - 1], steps = kd[rank - 2];
  const float* qs = q.typed_data();
  const float* ks = keys.typed_data();
  const float* vs = values.typed_data();
  const bool* ms = mask.typed_data();
  float* os = out->typed_data();
  ParallelFor(pool, rows * heads, [&](int64_t item) {
    // The valid slots; with none, every slot at an equal score (softmax over -1e30s).
    const bool* valid = ms + item / heads * steps;
    std::vector<int64_t> slots;
    slots.reserve(steps);
    for (int64_t t = 0; t < steps; ++t)
      if (valid[t]) slots.push_back(t);
    const bool none = slots.empty();
    if (none)
      for (int64_t t = 0; t < steps; ++t) slots.push_back(t);
    std::vector<float> scores(std::min(kQ, group) * slots.size());
    const int64_t n = slots.size();
    if (none) {  // equal scores: the plain average of the values
      std::vector<float> zero(group * hd, 0.0f);
      AttendOne(zero.data(), ks + item * steps * hd, vs + item * steps * hd, slots.data(), n,
                group, hd, scores.data(), os + item * group * hd);
    } else {
      AttendOne(qs + item * group * hd, ks + item * steps * hd, vs + item * steps * hd,
                slots.data(), n, group, hd, scores.data(), os + item * group * hd);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

// The AVX-512 form of SkinnyMatmul: request 1 takes it where the CPU has
// AVX-512F, 0 keeps the AVX2 form, -1 asks; returns whether it is taken.
extern "C" int MarlJaxAvx512(int request) {
  if (request >= 0) use_avx512 = request && __builtin_cpu_supports("avx512f");
  return use_avx512.load();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(MarlJaxSkinnyMatmul, SkinnyMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MarlJaxDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
