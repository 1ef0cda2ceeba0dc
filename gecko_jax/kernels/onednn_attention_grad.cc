// The gradient of onednn_attention.cc's attention for XLA:CPU (a typed XLA FFI custom
// call), float32: given qkv[b, l, 3, h, d], mask[b, l] and the output's cotangent
// g[b, l, h * d], returns dqkv[b, l, 3, h, d].
//
// Per sequence and group of heads (nothing of the forward is kept but its inputs):
//   S = q k^T, P = softmax(S * scale + mask bias)          (recomputed, normalised)
//   dP = dO v^T, D_i = sum_j P_ij dP_ij (= dO_i . O_i)
//   dS = P * (dP - D) * scale
//   dv = P^T dO, dq = dS k, dk = dS^T q
// the five products as oneDNN float32 matmuls batched over the heads, on heads-major
// copies; the softmax and dS in our own loops while the [heads, l, l] blocks are in
// cache. A sequence with no visible key has uniform P, as in the XLA form. Sequences
// run in parallel over OpenMP threads.

#include <omp.h>

#include <string>
#include <vector>

#include "attention_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace gecko_attention;

struct GradScratch {
  std::vector<float> q, k, v, dout, dq, dk, dv, p, dp, bias;
  std::vector<uint8_t> pad;
};

// P, normalised, for rows of n keys (uniform where no key is visible).
void softmax_rows(const float* s, const float* bias, float scale, float* p, int64_t rows,
                  int64_t n, bool any) {
  for (int64_t r = 0; r < rows; ++r) {
    float* pr = p + r * n;
    if (!any) {
      std::fill(pr, pr + n, 1.f / n);
      continue;
    }
    const float inv = 1.f / softmax_row(s + r * n, bias, scale, pr, n);
    for (int64_t j = 0; j < n; ++j) pr[j] *= inv;
  }
}

// dS = P (dP - rowsum(P dP)) * scale, written over dP.
void ds_rows(const float* p, float* dp, float scale, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * n;
    float* dr = dp + r * n;
    float dd = 0.f;
    for (int64_t j = 0; j < n; ++j) dd += pr[j] * dr[j];
    for (int64_t j = 0; j < n; ++j) dr[j] = pr[j] * (dr[j] - dd) * scale;
  }
}

void one_sequence(const Prims& pr, const float* qkv, const int32_t* mask, const float* g_out,
                  float scale, float* dqkv, int64_t h, int64_t l, int64_t d) {
  thread_local GradScratch sc;
  const int64_t g = pr.heads, n = h * l * d;
  for (auto* buf : {&sc.q, &sc.k, &sc.v, &sc.dout, &sc.dq, &sc.dk, &sc.dv}) buf->resize(n);
  sc.p.resize(g * l * l);
  sc.dp.resize(g * l * l);
  sc.bias.resize(l);
  split_heads(reinterpret_cast<const uint8_t*>(qkv), l, h, d, 4,
              reinterpret_cast<uint8_t*>(sc.q.data()), reinterpret_cast<uint8_t*>(sc.k.data()),
              reinterpret_cast<uint8_t*>(sc.v.data()));
  for (int64_t j = 0; j < l; ++j) {  // g [l, h * d] -> dO [h, l, d]
    for (int64_t hh = 0; hh < h; ++hh) {
      std::memcpy(&sc.dout[(hh * l + j) * d], g_out + (j * h + hh) * d, d * 4);
    }
  }
  bool any = false;
  for (int64_t j = 0; j < l; ++j) any |= mask[j] != 0;
  for (int64_t j = 0; j < l; ++j) sc.bias[j] = mask[j] != 0 ? 0.f : -1e30f;
  for (int64_t h0 = 0; h0 < h; h0 += g) {
    const int64_t at = h0 * l * d;
    const float *q = sc.q.data() + at, *k = sc.k.data() + at, *v = sc.v.data() + at,
                *dout = sc.dout.data() + at;
    // S into dp's buffer, then P
    run(pr.nt, pr.a_ld, q, pr.b_dl, k, pr.ll_f32, sc.dp.data(), pr.pad_nt, sc.pad);
    softmax_rows(sc.dp.data(), sc.bias.data(), scale, sc.p.data(), g * l, l, any);
    run(pr.nt, pr.a_ld, dout, pr.b_dl, v, pr.ll_f32, sc.dp.data(), pr.pad_nt, sc.pad);
    ds_rows(sc.p.data(), sc.dp.data(), scale, g * l, l);
    run(pr.tn, pr.ll_t, sc.p.data(), pr.ld_in, dout, pr.ld_f32, sc.dv.data() + at, pr.pad_tn,
        sc.pad);
    run(pr.nn, pr.ll_in, sc.dp.data(), pr.ld_in, k, pr.ld_f32, sc.dq.data() + at, pr.pad_nn,
        sc.pad);
    run(pr.tn, pr.ll_t, sc.dp.data(), pr.ld_in, q, pr.ld_f32, sc.dk.data() + at, pr.pad_tn,
        sc.pad);
  }
  for (int64_t j = 0; j < l; ++j) {  // [h, l, d] x 3 -> dqkv [l, 3, h, d]
    for (int64_t hh = 0; hh < h; ++hh) {
      const int64_t src = (hh * l + j) * d;
      float* dst = dqkv + (j * 3 * h + hh) * d;
      std::memcpy(dst, &sc.dq[src], d * 4);
      std::memcpy(dst + h * d, &sc.dk[src], d * 4);
      std::memcpy(dst + 2 * h * d, &sc.dv[src], d * 4);
    }
  }
}

ffi::Error AttentionGrad(ffi::Buffer<ffi::F32> qkv, ffi::Buffer<ffi::S32> mask,
                         ffi::Buffer<ffi::F32> g_out, ffi::Result<ffi::Buffer<ffi::F32>> dqkv,
                         float scale) {
  auto dq = qkv.dimensions(), dm = mask.dimensions(), dg = g_out.dimensions(),
       dr = dqkv->dimensions();
  if (dq.size() != 5 || dq[2] != 3) {
    return ffi::Error::InvalidArgument("onednn_attention_grad: qkv must be f32 [b, l, 3, h, d]");
  }
  const int64_t b = dq[0], l = dq[1], h = dq[3], d = dq[4];
  if (dm.size() != 2 || dm[0] != b || dm[1] != l) {
    return ffi::Error::InvalidArgument("onednn_attention_grad: mask must be int32 [b, l]");
  }
  if (dg.size() != 3 || dg[0] != b || dg[1] != l || dg[2] != h * d) {
    return ffi::Error::InvalidArgument("onednn_attention_grad: g must be f32 [b, l, h*d]");
  }
  if (dr.size() != 5 || dqkv->element_count() != qkv.element_count()) {
    return ffi::Error::InvalidArgument("onednn_attention_grad: dqkv must be qkv's shape");
  }
  if (b == 0 || l == 0) return ffi::Error::Success();
  std::string failure;
  try {
    const Prims& pr = prims(h, l, d, dnnl::memory::data_type::f32, true);
    const float *x = qkv.typed_data(), *go = g_out.typed_data();
    const int32_t* m = mask.typed_data();
    float* out = dqkv->typed_data();
    const int threads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (b > 1 && threads > 1)
    for (int64_t i = 0; i < b; ++i) {
      try {
        one_sequence(pr, x + i * l * 3 * h * d, m + i * l, go + i * l * h * d, scale,
                     out + i * l * 3 * h * d, h, l, d);
      } catch (const dnnl::error& e) {
#pragma omp critical
        failure = e.what();
      }
    }
  } catch (const dnnl::error& e) {
    failure = e.what();
  }
  if (!failure.empty()) return ffi::Error::Internal("onednn_attention_grad: " + failure);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GeckoOnednnAttentionGrad, AttentionGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale"));
