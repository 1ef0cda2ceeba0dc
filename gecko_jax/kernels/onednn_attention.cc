// Softmax attention of the BERT tower for XLA:CPU (a typed XLA FFI custom call).
//
// ctx[b, t, h, d] = softmax(q k^T * scale, keys hidden by mask) v, with q, k and v read
// from the fused projection qkv[b, l, 3, h, d] (bfloat16) and mask[b, l]
// (int32, nonzero = a visible key). For each sequence and group of heads, both
// products run as oneDNN bf16 matmuls batched over the heads (AMX / AVX512-BF16
// where the CPU has them) and oneDNN's float32 softmax between them, so the
// [heads, l, l] logits stay in cache (see `prims`). ctx is written as [b, l, h * d],
// the out-projection's input, in bfloat16 or float32. A sequence with no visible key
// gets the mean of its values (the XLA form's result).
//
// Each sequence's q, k, v are first copied heads-major (dense operands keep oneDNN
// on its AMX kernels). Sequences run in parallel over OpenMP threads (oneDNN runs
// single-threaded inside them); a batch of one leaves the threads to oneDNN.

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

struct Prims {
  int64_t heads;  // heads per step: a divisor of h whose logits stay in a core's L2
  dnnl::matmul logits, context;
  dnnl::memory::desc q, k, s, p, v, o, scratch_logits, scratch_context;
};

using Key = std::tuple<int64_t, int64_t, int64_t>;  // h, l, d

// Logits of the heads taken at once stay under this size (L2 holds them between the
// matmul, the softmax and the second matmul; all heads of a 256-token sequence, 3 MB,
// did not, and the softmax ran from memory).
constexpr int64_t kLogitsBytes = 1 << 19;

// One sequence's two products, oneDNN matmuls on dense heads-major operands (its AMX
// kernels take dense operands; on strided views of qkv it falls back to a slower
// gemm): logits[g, l, l] = q k^T and out[g, l, d] = e v, with e the unnormalised
// probabilities (softmax_rows) in bf16.
const Prims& prims(int64_t h, int64_t l, int64_t d) {
  static std::mutex mu;
  static std::map<Key, Prims> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key key{h, l, d};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  using dt = dnnl::memory::data_type;
  Prims p;
  p.heads = 1;
  for (int64_t g = h; g >= 1; --g) {
    if (h % g == 0 && g * l * l * 4 <= kLogitsBytes) {
      p.heads = g;
      break;
    }
  }
  h = p.heads;
  p.q = dnnl::memory::desc({h, l, d}, dt::bf16, {l * d, d, 1});
  p.k = dnnl::memory::desc({h, d, l}, dt::bf16, {l * d, 1, d});  // k^T as a view
  p.s = dnnl::memory::desc({h, l, l}, dt::f32, {l * l, l, 1});
  p.p = dnnl::memory::desc({h, l, l}, dt::bf16, {l * l, l, 1});
  p.v = dnnl::memory::desc({h, l, d}, dt::bf16, {l * d, d, 1});
  p.o = dnnl::memory::desc({h, l, d}, dt::f32, {l * d, d, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::matmul::primitive_desc pl(engine(), p.q, p.k, p.s, attr);
  dnnl::matmul::primitive_desc pc(engine(), p.p, p.v, p.o, attr);
  p.logits = dnnl::matmul(pl);
  p.context = dnnl::matmul(pc);
  p.scratch_logits = pl.scratchpad_desc();
  p.scratch_context = pc.scratchpad_desc();
  return cache.emplace(key, p).first->second;
}

inline uint16_t to_bf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// e^x for x <= 0 (softmax's shifted logits), relative error ~3e-6 (the probabilities
// are rounded to bf16, 2^-9): x = (n + f) ln 2 with integer n and |f| <= 1/2, 2^f from
// its Taylor series to degree 5, 2^n placed in the exponent bits. Branch-free, so the
// compiler vectorises the loops that call it.
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

// For `rows` rows of n logits x: y = x * scale + bias (bias: 0 for a visible key, -1e30
// for a hidden one), e = e^(y - max y) written as bf16 (unnormalised probabilities,
// <= 1), inv_sum[r] = 1 / sum e. The product e v is normalised afterwards, on d columns
// instead of n. Rows need a visible key (one_sequence handles a mask with none).
#if defined(__AVX512F__) && defined(__AVX512BF16__)
// The same for one row with AVX-512: vscalefps for 2^n, vcvtneps2bf16 for the rounding
// (the plain loop below spends most of its time on the bit manipulation); n % 16 == 0.
float softmax_row_avx512(const float* x, const float* bias, float scale, uint16_t* e,
                         int64_t n) {
  const __m512 vs = _mm512_set1_ps(scale);
  __m512 vm = _mm512_set1_ps(-3e38f);
  for (int64_t j = 0; j < n; j += 16) {
    vm = _mm512_max_ps(vm, _mm512_fmadd_ps(_mm512_loadu_ps(x + j), vs, _mm512_loadu_ps(bias + j)));
  }
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
  const __m512 lo = _mm512_set1_ps(-87.f), log2e = _mm512_set1_ps(1.44269504f),
               ln2 = _mm512_set1_ps(0.693147181f);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    __m512 y = _mm512_fmadd_ps(_mm512_loadu_ps(x + j), vs, _mm512_loadu_ps(bias + j));
    y = _mm512_max_ps(_mm512_sub_ps(y, m), lo);
    const __m512 t = _mm512_mul_ps(y, log2e);
    const __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, k), ln2);
    __m512 p = _mm512_set1_ps(1.f / 120.f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_scalef_ps(p, k));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(e + j), reinterpret_cast<const __m256i&>(b));
    // sum what v is multiplied by: the bf16 values, widened back
    sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(
                                 _mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(b)), 16)));
  }
  return _mm512_reduce_add_ps(sum);
}
#endif

void softmax_rows(const float* logits, const float* bias, float scale, uint16_t* e,
                  float* inv_sum, int64_t rows, int64_t n) {
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  if (n % 16 == 0) {
    for (int64_t r = 0; r < rows; ++r) {
      inv_sum[r] = 1.f / softmax_row_avx512(logits + r * n, bias, scale, e + r * n, n);
    }
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * n;
    uint16_t* er = e + r * n;
    float m = -3e38f;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j] * scale + bias[j]);
    float sum = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const uint16_t b = to_bf16(exp_nonpositive(x[j] * scale + bias[j] - m));
      er[j] = b;
      const uint32_t u = static_cast<uint32_t>(b) << 16;  // sum what v is multiplied by
      float f;
      std::memcpy(&f, &u, 4);
      sum += f;
    }
    inv_sum[r] = 1.f / sum;
  }
}

struct Scratch {
  std::vector<float> s, o, inv_sum, bias;
  std::vector<uint16_t> p, q, k, v;
  std::vector<uint8_t> pad;
};

void one_sequence(const Prims& pr, const uint16_t* qkv, const int32_t* mask, float scale,
                  void* out, int64_t h, int64_t l, int64_t d, size_t out_bytes) {
  thread_local Scratch sc;
  const int64_t g = pr.heads;  // heads per step
  sc.s.resize(g * l * l);
  sc.p.resize(g * l * l);
  sc.bias.resize(l);
  sc.inv_sum.resize(h * l);
  sc.q.resize(h * l * d);
  sc.k.resize(h * l * d);
  sc.v.resize(h * l * d);
  sc.o.resize(h * l * d);
  // [l, 3, h, d] -> three [h, l, d]
  for (int64_t j = 0; j < l; ++j) {
    for (int64_t hh = 0; hh < h; ++hh) {
      const uint16_t* src = qkv + (j * 3 * h + hh) * d;
      const int64_t dst = (hh * l + j) * d;
      std::memcpy(&sc.q[dst], src, d * 2);
      std::memcpy(&sc.k[dst], src + h * d, d * 2);
      std::memcpy(&sc.v[dst], src + 2 * h * d, d * 2);
    }
  }
  bool any = false;
  for (int64_t j = 0; j < l; ++j) any |= mask[j] != 0;
  for (int64_t j = 0; j < l; ++j) sc.bias[j] = mask[j] != 0 ? 0.f : -1e30f;
  size_t pad = std::max(pr.scratch_logits.get_size(), pr.scratch_context.get_size());
  if (sc.pad.size() < pad) sc.pad.resize(pad);
  dnnl::engine& eng = engine();
  dnnl::stream st(eng);
  auto mem = [&](const dnnl::memory::desc& md, const void* ptr) {
    return dnnl::memory(md, eng, const_cast<void*>(ptr));
  };
  for (int64_t h0 = 0; h0 < h; h0 += g) {
    const int64_t at = h0 * l * d;
    pr.logits.execute(st, {{DNNL_ARG_SRC, mem(pr.q, sc.q.data() + at)},
                           {DNNL_ARG_WEIGHTS, mem(pr.k, sc.k.data() + at)},
                           {DNNL_ARG_DST, mem(pr.s, sc.s.data())},
                           {DNNL_ARG_SCRATCHPAD, mem(pr.scratch_logits, sc.pad.data())}});
    st.wait();  // the logits are read here, outside oneDNN's stream
    if (any) {
      softmax_rows(sc.s.data(), sc.bias.data(), scale, sc.p.data(), sc.inv_sum.data() + h0 * l,
                   g * l, l);
    } else {  // no visible key: the mean of all values, as the XLA form gives
      std::fill(sc.p.begin(), sc.p.end(), to_bf16(1.f));
      std::fill(sc.inv_sum.begin() + h0 * l, sc.inv_sum.begin() + (h0 + g) * l, 1.f / l);
    }
    pr.context.execute(st, {{DNNL_ARG_SRC, mem(pr.p, sc.p.data())},
                            {DNNL_ARG_WEIGHTS, mem(pr.v, sc.v.data() + at)},
                            {DNNL_ARG_DST, mem(pr.o, sc.o.data() + at)},
                            {DNNL_ARG_SCRATCHPAD, mem(pr.scratch_context, sc.pad.data())}});
  }
  st.wait();
  // [h, l, d] -> out [l, h * d], each row divided by its probabilities' sum
  for (int64_t j = 0; j < l; ++j) {
    for (int64_t hh = 0; hh < h; ++hh) {
      const float* src = &sc.o[(hh * l + j) * d];
      const float inv = sc.inv_sum[hh * l + j];
      const int64_t at = (j * h + hh) * d;
      if (out_bytes == 4) {
        float* dst = static_cast<float*>(out) + at;
        for (int64_t e = 0; e < d; ++e) dst[e] = src[e] * inv;
      } else {
        uint16_t* dst = static_cast<uint16_t*>(out) + at;
        for (int64_t e = 0; e < d; ++e) dst[e] = to_bf16(src[e] * inv);
      }
    }
  }
}

ffi::Error Attention(ffi::AnyBuffer qkv, ffi::Buffer<ffi::S32> mask,
                     ffi::Result<ffi::AnyBuffer> ctx, float scale) {
  auto dq = qkv.dimensions(), dm = mask.dimensions(), dc = ctx->dimensions();
  if (qkv.element_type() != ffi::DataType::BF16 || dq.size() != 5 || dq[2] != 3) {
    return ffi::Error::InvalidArgument("onednn_attention: qkv must be bf16 [b, l, 3, h, d]");
  }
  const int64_t b = dq[0], l = dq[1], h = dq[3], d = dq[4];
  if (dm.size() != 2 || dm[0] != b || dm[1] != l) {
    return ffi::Error::InvalidArgument("onednn_attention: mask must be int32 [b, l]");
  }
  const bool f32_out = ctx->element_type() == ffi::DataType::F32;
  if ((!f32_out && ctx->element_type() != ffi::DataType::BF16) || dc.size() != 3 ||
      dc[0] != b || dc[1] != l || dc[2] != h * d) {
    return ffi::Error::InvalidArgument("onednn_attention: ctx must be bf16 or f32 [b, l, h*d]");
  }
  if (b == 0 || l == 0) return ffi::Error::Success();
  const size_t out_bytes = f32_out ? 4 : 2;
  const auto* q = static_cast<const uint16_t*>(qkv.untyped_data());
  auto* o = static_cast<uint8_t*>(ctx->untyped_data());
  const int32_t* m = mask.typed_data();
  std::string failure;
  try {
    const Prims& pr = prims(h, l, d);
    const int threads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (b > 1 && threads > 1)
    for (int64_t i = 0; i < b; ++i) {
      try {
        one_sequence(pr, q + i * l * 3 * h * d, m + i * l, scale, o + i * l * h * d * out_bytes,
                     h, l, d, out_bytes);
      } catch (const dnnl::error& e) {
#pragma omp critical
        failure = e.what();
      }
    }
  } catch (const dnnl::error& e) {
    failure = e.what();
  }
  if (!failure.empty()) return ffi::Error::Internal("onednn_attention: " + failure);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GeckoOnednnAttention, Attention,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("scale"));
