// A dense matmul for XLA:CPU through oneDNN (a typed XLA FFI custom call).
//
// c[M, N] = act(op(a) @ op(b) + bias), op = identity or transpose (attributes
// transpose_a / transpose_b: the buffer then holds the operand transposed, row-major).
// a and b are both bfloat16 or both float32; c is bfloat16 or float32; bias is float32
// [N], or empty for none; act (attribute activation) is 0 none, 1 GELU (erf form),
// 2 GELU (tanh form), 3 ReLU, 4 SiLU, applied by oneDNN inside the kernel as a post-op, so the
// [M, N] result is written once. oneDNN accumulates in float32. On a CPU with AVX512-BF16 or AMX, oneDNN's bf16 kernels use them, which
// XLA:CPU's own dot emitters do not (bench/matmul.py).
//
// Built on first use by gecko_jax/kernels/onednn.py against the pinned
// onednn-cpu-gomp wheel and jaxlib's FFI headers.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, int, int, int, bool, bool, bool, int>;

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

bool to_dnnl(ffi::DataType t, dnnl::memory::data_type* out) {
  if (t == ffi::DataType::BF16) {
    *out = dnnl::memory::data_type::bf16;
  } else if (t == ffi::DataType::F32) {
    *out = dnnl::memory::data_type::f32;
  } else {
    return false;
  }
  return true;
}

// One primitive per shape, dtypes and layout. XLA may run the same primitive from
// several threads at once (one per device of an emulated multi-device CPU mesh), and
// oneDNN's library-managed scratchpad is shared between those calls, so each primitive
// takes a user scratchpad instead: a buffer per calling thread.
struct Cached {
  dnnl::matmul prim;
  dnnl::memory::desc scratch;
};

bool activation(int32_t code, dnnl::algorithm* out) {
  switch (code) {
    case 1: *out = dnnl::algorithm::eltwise_gelu_erf; return true;
    case 2: *out = dnnl::algorithm::eltwise_gelu_tanh; return true;
    case 3: *out = dnnl::algorithm::eltwise_relu; return true;
    case 4: *out = dnnl::algorithm::eltwise_swish; return true;  // alpha 1: SiLU
    default: return false;
  }
}

const Cached& primitive(const Key& key, dnnl::memory::desc a, dnnl::memory::desc b,
                        const dnnl::memory::desc* bias, dnnl::memory::desc c, int32_t act) {
  static std::mutex mu;
  static std::map<Key, Cached> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::algorithm alg;
    if (activation(act, &alg)) {
      dnnl::post_ops ops;
      ops.append_eltwise(alg, alg == dnnl::algorithm::eltwise_swish ? 1.f : 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::primitive_desc pd = bias
        ? dnnl::matmul::primitive_desc(cpu_engine(), a, b, *bias, c, attr)
        : dnnl::matmul::primitive_desc(cpu_engine(), a, b, c, attr);
    it = cache.emplace(key, Cached{dnnl::matmul(pd), pd.scratchpad_desc()}).first;
  }
  return it->second;
}

ffi::Error Matmul(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer bias,
                  ffi::Result<ffi::AnyBuffer> c, int32_t transpose_a, int32_t transpose_b,
                  int32_t act) {
  auto da = a.dimensions(), db = b.dimensions(), dc = c->dimensions();
  if (da.size() != 2 || db.size() != 2 || dc.size() != 2) {
    return ffi::Error::InvalidArgument("onednn_matmul: operands must be 2-D");
  }
  const int64_t m = transpose_a ? da[1] : da[0], k = transpose_a ? da[0] : da[1];
  const int64_t kb = transpose_b ? db[1] : db[0], n = transpose_b ? db[0] : db[1];
  if (k != kb || dc[0] != m || dc[1] != n) {
    return ffi::Error::InvalidArgument("onednn_matmul: shapes do not match");
  }
  dnnl::memory::data_type ta, tb, tc;
  if (!to_dnnl(a.element_type(), &ta) || !to_dnnl(b.element_type(), &tb) ||
      !to_dnnl(c->element_type(), &tc) || ta != tb) {
    return ffi::Error::InvalidArgument(
        "onednn_matmul: a, b must both be bf16 or both f32; c bf16 or f32");
  }
  const bool has_bias = bias.element_count() > 0;
  if (has_bias && (bias.element_type() != ffi::DataType::F32 || bias.element_count() != n)) {
    return ffi::Error::InvalidArgument("onednn_matmul: bias must be float32 [N] or empty");
  }
  dnnl::algorithm alg;
  if (act != 0 && !activation(act, &alg)) {
    return ffi::Error::InvalidArgument("onednn_matmul: unknown activation code");
  }
  if (m == 0 || n == 0) return ffi::Error::Success();
  using tag = dnnl::memory::format_tag;
  try {
    dnnl::memory::desc ma({m, k}, ta, transpose_a ? tag::ba : tag::ab);
    dnnl::memory::desc mb({k, n}, tb, transpose_b ? tag::ba : tag::ab);
    dnnl::memory::desc mc({m, n}, tc, tag::ab);
    dnnl::memory::desc mbias({1, n}, dnnl::memory::data_type::f32, tag::ab);
    Key key{m, k, n, static_cast<int>(ta), static_cast<int>(tb), static_cast<int>(tc),
            transpose_a != 0, transpose_b != 0, has_bias, act};
    const Cached& mm = primitive(key, ma, mb, has_bias ? &mbias : nullptr, mc, act);
    dnnl::engine& eng = cpu_engine();
    dnnl::memory A(ma, eng, a.untyped_data()), B(mb, eng, b.untyped_data()),
        C(mc, eng, c->untyped_data());
    thread_local std::vector<uint8_t> scratch_buf;
    if (scratch_buf.size() < mm.scratch.get_size()) scratch_buf.resize(mm.scratch.get_size());
    dnnl::memory S(mm.scratch, eng, scratch_buf.data());
    dnnl::stream s(eng);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, B}, {DNNL_ARG_DST, C}, {DNNL_ARG_SCRATCHPAD, S}};
    if (has_bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(mbias, eng, bias.untyped_data()));
    mm.prim.execute(s, args);
    s.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_matmul: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GeckoOnednnMatmul, Matmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int32_t>("transpose_a")
                                  .Attr<int32_t>("transpose_b")
                                  .Attr<int32_t>("activation"));
