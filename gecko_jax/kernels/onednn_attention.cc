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

#include <omp.h>

#include <algorithm>
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
  dnnl::softmax_forward softmax;
  dnnl::memory::desc q, k, s, p, v, o, bias, scratch_logits, scratch_softmax, scratch_context;
};

using Key = std::tuple<int64_t, int64_t, int64_t, float>;  // h, l, d, scale

// Logits of the heads taken at once stay under this size (L2 holds them between the
// matmul, the softmax and the second matmul; all heads of a 256-token sequence, 3 MB,
// did not, and the softmax ran from memory).
constexpr int64_t kLogitsBytes = 1 << 19;

// One sequence's three steps, all oneDNN primitives on dense heads-major operands
// (its AMX kernels take dense operands; on strided views of qkv it falls back to a
// slower gemm): logits[h, l, l] = q k^T * scale + bias (a post-op: bias[l] hides
// padding keys), probabilities = softmax(logits) in float32 written as bf16, and
// out[h, l, d] = p v.
const Prims& prims(int64_t h, int64_t l, int64_t d, float scale) {
  static std::mutex mu;
  static std::map<Key, Prims> cache;
  std::lock_guard<std::mutex> lock(mu);
  Key key{h, l, d, scale};
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
  p.bias = dnnl::memory::desc({1, 1, l}, dt::f32, {l, l, 1});
  dnnl::primitive_attr plain;
  plain.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::primitive_attr with_bias;  // (a copy of `plain` would share its handle)
  with_bias.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops ops;
  ops.append_eltwise(dnnl::algorithm::eltwise_linear, scale, 0.f);
  ops.append_binary(dnnl::algorithm::binary_add, p.bias);
  with_bias.set_post_ops(ops);
  dnnl::matmul::primitive_desc pl(engine(), p.q, p.k, p.s, with_bias);
  dnnl::softmax_forward::primitive_desc ps(engine(), dnnl::prop_kind::forward_inference,
                                           dnnl::algorithm::softmax_accurate, p.s, p.p, 2,
                                           plain);
  dnnl::matmul::primitive_desc pc(engine(), p.p, p.v, p.o, plain);
  p.logits = dnnl::matmul(pl);
  p.softmax = dnnl::softmax_forward(ps);
  p.context = dnnl::matmul(pc);
  p.scratch_logits = pl.scratchpad_desc();
  p.scratch_softmax = ps.scratchpad_desc();
  p.scratch_context = pc.scratchpad_desc();
  return cache.emplace(key, p).first->second;
}

inline uint16_t to_bf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

struct Scratch {
  std::vector<float> s, o;
  std::vector<uint16_t> p, q, k, v;
  std::vector<uint8_t> pad;
  std::vector<float> bias;
};

void one_sequence(const Prims& pr, const uint16_t* qkv, const int32_t* mask, void* out,
                  int64_t h, int64_t l, int64_t d, size_t out_bytes) {
  thread_local Scratch sc;
  const int64_t g = pr.heads;  // heads per step
  sc.s.resize(g * l * l);
  sc.p.resize(g * l * l);
  sc.bias.resize(l);
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
  size_t pad = std::max({pr.scratch_logits.get_size(), pr.scratch_softmax.get_size(),
                         pr.scratch_context.get_size()});
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
                           {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1,
                            mem(pr.bias, sc.bias.data())},
                           {DNNL_ARG_SCRATCHPAD, mem(pr.scratch_logits, sc.pad.data())}});
    if (any) {
      pr.softmax.execute(st, {{DNNL_ARG_SRC, mem(pr.s, sc.s.data())},
                              {DNNL_ARG_DST, mem(pr.p, sc.p.data())},
                              {DNNL_ARG_SCRATCHPAD, mem(pr.scratch_softmax, sc.pad.data())}});
    } else {  // no visible key: the mean of all values, as the XLA form gives
      std::fill(sc.p.begin(), sc.p.end(), to_bf16(1.f / l));
    }
    pr.context.execute(st, {{DNNL_ARG_SRC, mem(pr.p, sc.p.data())},
                            {DNNL_ARG_WEIGHTS, mem(pr.v, sc.v.data() + at)},
                            {DNNL_ARG_DST, mem(pr.o, sc.o.data() + at)},
                            {DNNL_ARG_SCRATCHPAD, mem(pr.scratch_context, sc.pad.data())}});
  }
  st.wait();
  // [h, l, d] -> out [l, h * d]
  for (int64_t j = 0; j < l; ++j) {
    for (int64_t hh = 0; hh < h; ++hh) {
      const float* src = &sc.o[(hh * l + j) * d];
      const int64_t at = (j * h + hh) * d;
      if (out_bytes == 4) {
        std::memcpy(static_cast<float*>(out) + at, src, d * 4);
      } else {
        uint16_t* dst = static_cast<uint16_t*>(out) + at;
        for (int64_t e = 0; e < d; ++e) dst[e] = to_bf16(src[e]);
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
    const Prims& pr = prims(h, l, d, scale);
    const int threads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (b > 1 && threads > 1)
    for (int64_t i = 0; i < b; ++i) {
      try {
        one_sequence(pr, q + i * l * 3 * h * d, m + i * l, o + i * l * h * d * out_bytes, h, l,
                     d, out_bytes);
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
