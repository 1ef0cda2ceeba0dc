// Pieces shared by the attention kernels (onednn_attention.cc: forward, bf16 or float32;
// onednn_attention_grad.cc: backward, float32): oneDNN's engine, the per-shape batched
// matmuls over a group of heads, the copies between qkv[l, 3, h, d] and heads-major
// [h, l, d] buffers, and the float32 row softmax with its exp.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

namespace gecko_attention {

inline dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// Logits of the heads taken at once stay under this size (L2 holds them between the
// matmul, the softmax and the next matmul; all heads of a 256-token sequence, 3 MB,
// did not, and the softmax ran from memory).
constexpr int64_t kLogitsBytes = 1 << 19;

// The heads per step: the largest divisor of h whose [g, l, l] float32 logits fit.
inline int64_t head_group(int64_t h, int64_t l) {
  for (int64_t g = h; g > 1; --g) {
    if (h % g == 0 && g * l * l * 4 <= kLogitsBytes) return g;
  }
  return 1;
}

// The three batched products of a group of g heads on dense heads-major operands
// (oneDNN's fast kernels take dense operands; on strided views of qkv it falls back
// to a slower gemm), operands of type `t`, float32 results:
//   nt: [g, l, d] x [g, l, d]^T -> [g, l, l]   (q k^T; dO v^T)
//   nn: [g, l, l] x [g, l, d]   -> [g, l, d]   (p v; dS k)
//   tn: [g, l, l]^T x [g, l, d] -> [g, l, d]   (p^T dO; dS^T q)
struct Prims {
  int64_t heads;
  dnnl::matmul nt, nn, tn;
  dnnl::memory::desc a_ld, b_dl, ll_f32, ll_in, ll_t, ld_in, ld_f32;
  dnnl::memory::desc pad_nt, pad_nn, pad_tn;  // their scratchpads (user-provided)
};

inline const Prims& prims(int64_t h, int64_t l, int64_t d, dnnl::memory::data_type t,
                          bool with_tn) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool>;
  static std::mutex mu;
  static std::map<Key, Prims> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key key{h, l, d, static_cast<int>(t), with_tn};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  using dt = dnnl::memory::data_type;
  Prims p;
  const int64_t g = p.heads = head_group(h, l);
  p.a_ld = dnnl::memory::desc({g, l, d}, t, {l * d, d, 1});
  p.b_dl = dnnl::memory::desc({g, d, l}, t, {l * d, 1, d});  // [g, l, d] seen transposed
  p.ll_f32 = dnnl::memory::desc({g, l, l}, dt::f32, {l * l, l, 1});
  p.ll_in = dnnl::memory::desc({g, l, l}, t, {l * l, l, 1});
  p.ll_t = dnnl::memory::desc({g, l, l}, t, {l * l, 1, l});  // [g, l, l] seen transposed
  p.ld_in = dnnl::memory::desc({g, l, d}, t, {l * d, d, 1});
  p.ld_f32 = dnnl::memory::desc({g, l, d}, dt::f32, {l * d, d, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::matmul::primitive_desc nt(engine(), p.a_ld, p.b_dl, p.ll_f32, attr);
  dnnl::matmul::primitive_desc nn(engine(), p.ll_in, p.ld_in, p.ld_f32, attr);
  p.nt = dnnl::matmul(nt);
  p.nn = dnnl::matmul(nn);
  p.pad_nt = nt.scratchpad_desc();
  p.pad_nn = nn.scratchpad_desc();
  if (with_tn) {
    dnnl::matmul::primitive_desc tn(engine(), p.ll_t, p.ld_in, p.ld_f32, attr);
    p.tn = dnnl::matmul(tn);
    p.pad_tn = tn.scratchpad_desc();
  }
  return cache.emplace(key, p).first->second;
}

// c = a x b by one of the Prims' matmuls (scratchpad `pad_md` in `pad`), on a stream
// of this thread's own, created once per thread (not once per product).
inline void run(const dnnl::matmul& mm, const dnnl::memory::desc& ma, const void* a,
                const dnnl::memory::desc& mb, const void* b, const dnnl::memory::desc& mc,
                void* c, const dnnl::memory::desc& pad_md, std::vector<uint8_t>& pad) {
  dnnl::engine& eng = engine();
  if (pad.size() < pad_md.get_size()) pad.resize(pad_md.get_size());
  auto mem = [&](const dnnl::memory::desc& md, const void* ptr) {
    return dnnl::memory(md, eng, const_cast<void*>(ptr));
  };
  thread_local dnnl::stream st(eng);
  mm.execute(st, {{DNNL_ARG_SRC, mem(ma, a)}, {DNNL_ARG_WEIGHTS, mem(mb, b)},
                  {DNNL_ARG_DST, mem(mc, c)}, {DNNL_ARG_SCRATCHPAD, mem(pad_md, pad.data())}});
  st.wait();
}

// One sequence's qkv [l, 3, h, d] (elements of `bytes` bytes) -> q, k, v [h, l, d].
inline void split_heads(const uint8_t* qkv, int64_t l, int64_t h, int64_t d, size_t bytes,
                        uint8_t* q, uint8_t* k, uint8_t* v) {
  const size_t row = d * bytes;
  for (int64_t j = 0; j < l; ++j) {
    for (int64_t hh = 0; hh < h; ++hh) {
      const uint8_t* src = qkv + (j * 3 * h + hh) * row;
      const size_t dst = (hh * l + j) * row;
      std::memcpy(q + dst, src, row);
      std::memcpy(k + dst, src + h * row, row);
      std::memcpy(v + dst, src + 2 * h * row, row);
    }
  }
}

inline uint16_t to_bf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// e^x for x <= 0 (softmax's shifted logits), relative error ~3e-6: x = (n + f) ln 2
// with integer n and |f| <= 1/2, 2^f from its Taylor series to degree 5, 2^n placed in
// the exponent bits. Branch-free, so the compiler vectorises the loops that call it.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.f);  // e^-87 ~ 1.6e-38: still a normal float
  const float t = x * 1.44269504f;
  const float n = std::floor(t + 0.5f);
  const float f = (t - n) * 0.693147181f;  // (t - n) ln 2, |f| <= ln(2) / 2
  float y = 1.f / 120.f;
  y = y * f + 1.f / 24.f;
  y = y * f + 1.f / 6.f;
  y = y * f + 0.5f;
  y = y * f + 1.f;
  y = y * f + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, 4);
  return y * two_n;
}

#if defined(__AVX512F__)
// The same for 16 lanes: vscalefps places 2^n (the plain form spends most of its time
// on the bit manipulation).
inline __m512 exp_nonpositive16(__m512 y) {
  y = _mm512_max_ps(y, _mm512_set1_ps(-87.f));
  const __m512 t = _mm512_mul_ps(y, _mm512_set1_ps(1.44269504f));
  const __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, k), _mm512_set1_ps(0.693147181f));
  __m512 p = _mm512_set1_ps(1.f / 120.f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, k);
}
#endif

// For one row of n logits x: y = x * scale + bias (bias: 0 for a visible key, -1e30 for
// a hidden one), e = e^(y - max y) stored as E (bf16 bits or float32), returning the sum
// of the stored values (what the product with v multiplies). The row needs a visible key.
template <typename E>
float softmax_row(const float* x, const float* bias, float scale, E* e, int64_t n) {
  static_assert(sizeof(E) == 2 || sizeof(E) == 4, "bf16 bits or float32");
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  if (n % 16 == 0) {
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vm = _mm512_set1_ps(-3e38f);
    for (int64_t j = 0; j < n; j += 16) {
      vm = _mm512_max_ps(vm, _mm512_fmadd_ps(_mm512_loadu_ps(x + j), vs,
                                             _mm512_loadu_ps(bias + j)));
    }
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __m512 y = _mm512_fmadd_ps(_mm512_loadu_ps(x + j), vs, _mm512_loadu_ps(bias + j));
      const __m512 p = exp_nonpositive16(_mm512_sub_ps(y, m));
      if constexpr (sizeof(E) == 4) {
        _mm512_storeu_ps(reinterpret_cast<float*>(e + j), p);
        sum = _mm512_add_ps(sum, p);
      } else {
        const __m256bh b = _mm512_cvtneps_pbh(p);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(e + j),
                            reinterpret_cast<const __m256i&>(b));
        sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(
                                     _mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(b)),
                                     16)));
      }
    }
    return _mm512_reduce_add_ps(sum);
  }
#endif
  float m = -3e38f;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j] * scale + bias[j]);
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    const float p = exp_nonpositive(x[j] * scale + bias[j] - m);
    if constexpr (sizeof(E) == 4) {
      e[j] = p;
      sum += p;
    } else {
      const uint16_t b = to_bf16(p);
      e[j] = b;
      sum += from_bf16(b);
    }
  }
  return sum;
}

}  // namespace gecko_attention
