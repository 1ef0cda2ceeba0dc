// Softmax attention of the BERT tower for XLA:CPU (a typed XLA FFI custom call).
//
// ctx[b, t, h, d] = softmax(q k^T * scale, keys hidden by mask) v, with q, k and v read
// from the fused projection qkv[b, l, 3, h, d] (bfloat16 or float32) and mask[b, l]
// (int32, nonzero = a visible key). For each sequence and group of heads, both
// products run as oneDNN matmuls batched over the heads (bf16 ones on AMX /
// AVX512-BF16 where the CPU has them) around our own float32 softmax
// (attention_common.h), so the [heads, l, l] logits stay in cache. The scale and the
// mask are applied as the softmax reads the logits, the unnormalised probabilities
// e = exp(y - max y) are stored in qkv's type, and each output row is divided by its
// sum of e afterwards (d columns instead of l). ctx is written as [b, l, h * d], the
// out-projection's input, in bfloat16 or float32. A sequence with no visible key gets
// the mean of its values (the XLA form's result).
//
// Each sequence's q, k, v are first copied heads-major. Sequences run in parallel over
// OpenMP threads (oneDNN runs single-threaded inside them); a batch of one leaves the
// threads to oneDNN. The gradient is onednn_attention_grad.cc (float32).

#include <omp.h>

#include <string>
#include <vector>

#include "attention_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace gecko_attention;

template <typename T>  // uint16_t: bf16 bits; float
struct Scratch {
  std::vector<float> s, o, inv_sum, bias;
  std::vector<T> p, q, k, v;
  std::vector<uint8_t> pad;
};

template <typename T>
void one_sequence(const Prims& pr, const T* qkv, const int32_t* mask, float scale, void* out,
                  int64_t h, int64_t l, int64_t d, size_t out_bytes) {
  thread_local Scratch<T> sc;
  const int64_t g = pr.heads;  // heads per step
  sc.s.resize(g * l * l);
  sc.p.resize(g * l * l);
  sc.bias.resize(l);
  sc.inv_sum.resize(h * l);
  sc.q.resize(h * l * d);
  sc.k.resize(h * l * d);
  sc.v.resize(h * l * d);
  sc.o.resize(h * l * d);
  split_heads(reinterpret_cast<const uint8_t*>(qkv), l, h, d, sizeof(T),
              reinterpret_cast<uint8_t*>(sc.q.data()), reinterpret_cast<uint8_t*>(sc.k.data()),
              reinterpret_cast<uint8_t*>(sc.v.data()));
  bool any = false;
  for (int64_t j = 0; j < l; ++j) any |= mask[j] != 0;
  for (int64_t j = 0; j < l; ++j) sc.bias[j] = mask[j] != 0 ? 0.f : -1e30f;
  T one;
  if constexpr (sizeof(T) == 4) one = 1.f; else one = to_bf16(1.f);
  for (int64_t h0 = 0; h0 < h; h0 += g) {
    const int64_t at = h0 * l * d;
    run(pr.nt, pr.a_ld, sc.q.data() + at, pr.b_dl, sc.k.data() + at, pr.ll_f32, sc.s.data(),
        pr.pad_nt, sc.pad);
    float* inv = sc.inv_sum.data() + h0 * l;
    if (any) {
      for (int64_t r = 0; r < g * l; ++r) {
        inv[r] = 1.f / softmax_row(sc.s.data() + r * l, sc.bias.data(), scale,
                                   sc.p.data() + r * l, l);
      }
    } else {  // no visible key: the mean of all values, as the XLA form gives
      std::fill(sc.p.begin(), sc.p.end(), one);
      std::fill(inv, inv + g * l, 1.f / l);
    }
    run(pr.nn, pr.ll_in, sc.p.data(), pr.ld_in, sc.v.data() + at, pr.ld_f32,
        sc.o.data() + at, pr.pad_nn, sc.pad);
  }
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

template <typename T>
std::string all_sequences(const void* qkv, const int32_t* m, float scale, uint8_t* o, int64_t b,
                          int64_t l, int64_t h, int64_t d, size_t out_bytes) {
  std::string failure;
  try {
    const auto t = sizeof(T) == 4 ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
    const Prims& pr = prims(h, l, d, t, false);
    const T* q = static_cast<const T*>(qkv);
    const int threads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (b > 1 && threads > 1)
    for (int64_t i = 0; i < b; ++i) {
      try {
        one_sequence<T>(pr, q + i * l * 3 * h * d, m + i * l, scale,
                        o + i * l * h * d * out_bytes, h, l, d, out_bytes);
      } catch (const dnnl::error& e) {
#pragma omp critical
        failure = e.what();
      }
    }
  } catch (const dnnl::error& e) {
    failure = e.what();
  }
  return failure;
}

ffi::Error Attention(ffi::AnyBuffer qkv, ffi::Buffer<ffi::S32> mask,
                     ffi::Result<ffi::AnyBuffer> ctx, float scale) {
  auto dq = qkv.dimensions(), dm = mask.dimensions(), dc = ctx->dimensions();
  const bool f32_in = qkv.element_type() == ffi::DataType::F32;
  if ((!f32_in && qkv.element_type() != ffi::DataType::BF16) || dq.size() != 5 || dq[2] != 3) {
    return ffi::Error::InvalidArgument(
        "onednn_attention: qkv must be bf16 or f32 [b, l, 3, h, d]");
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
  auto* o = static_cast<uint8_t*>(ctx->untyped_data());
  const std::string failure =
      f32_in ? all_sequences<float>(qkv.untyped_data(), mask.typed_data(), scale, o, b, l, h, d,
                                    out_bytes)
             : all_sequences<uint16_t>(qkv.untyped_data(), mask.typed_data(), scale, o, b, l, h,
                                       d, out_bytes);
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
