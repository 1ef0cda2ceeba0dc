"""oneDNN's matmul as an XLA:CPU custom call (jax.ffi), built once per machine.

XLA:CPU's dot emitters do not use the CPU's bf16 dot-product (AVX512-BF16) or
matrix (AMX) units, so its bf16 matmuls run no faster than float32 there, while
oneDNN's reach about 3x float32 on an AVX512-BF16 Zen 4 (bench/matmul.py).
`gecko_jax/kernels/onednn_matmul.cc` wraps oneDNN's matmul primitive in a typed FFI
handler (with a bias and an activation fused), `onednn_attention.cc` the BERT
tower's attention (two batched bf16 or float32 matmuls around a float32 softmax) and
`onednn_attention_grad.cc` its float32 gradient (both share attention_common.h);
this module compiles them on first use with the system C++ compiler against the
pinned `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels and jaxlib's FFI headers,
caches the library (GECKO_KERNEL_CACHE, default ~/.cache/gecko_jax/kernels, keyed by
the sources, both versions and the CPU's flags: it is built with -march=native),
loads it and registers the three targets.

The sources are package data (importlib.resources: an installed wheel has them); they
are copied into a temporary folder and compiled there.

`available()` says whether the kernel can run here (and `why_unavailable()` why not:
no compiler, no wheel, a source missing from the package, not x86-64 Linux, or
GECKO_ONEDNN=0); callers fall back to XLA's own dot and attention (kernels/dense.py,
models/attention.py). The first look logs one line saying why and which route runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sysconfig
import tempfile

import jax

from gecko_jax import hardware
from gecko_jax.kernels import spmd

TARGET = "gecko_onednn_matmul"
ATTENTION_TARGET = "gecko_onednn_attention"
ATTENTION_GRAD_TARGET = "gecko_onednn_attention_grad"
_SOURCES = ("onednn_matmul.cc", "onednn_attention.cc", "onednn_attention_grad.cc")
_HEADERS = ("attention_common.h",)
_WHEEL = "onednn-cpu-gomp"

log = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    pass


def _source_bytes() -> dict[str, bytes]:
    """The kernel's sources and headers by file name, read from the package."""
    folder = importlib.resources.files("gecko_jax.kernels")
    found = {}
    for name in _SOURCES + _HEADERS:
        resource = folder / name
        if not resource.is_file():
            raise KernelUnavailable(f"{name} is missing from the installed gecko_jax package "
                                    "(package data of setup.py)")
        found[name] = resource.read_bytes()
    return found


def _dnnl_root() -> pathlib.Path:
    """Where pip put the wheel's data files (lib/libdnnl.so.3, include/oneapi/dnnl)."""
    return pathlib.Path(os.environ.get("GECKO_ONEDNN_ROOT") or sysconfig.get_path("data"))


def _cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("GECKO_KERNEL_CACHE")
                        or pathlib.Path.home() / ".cache" / "gecko_jax" / "kernels")


def _library_path() -> pathlib.Path:
    key = hashlib.sha256()
    for text in _source_bytes().values():
        key.update(text)
    for dist in ("jaxlib", _WHEEL):
        key.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    key.update(str(_dnnl_root()).encode())
    # Built with -march=native: one library per kind of CPU (a shared cache directory
    # may serve several).
    key.update(" ".join(sorted(hardware.cpu_features())).encode())
    return _cache_dir() / f"onednn_matmul-{key.hexdigest()[:16]}.so"


def build(out: pathlib.Path) -> pathlib.Path:
    """Compile the handler into `out` (written atomically: a crash leaves no half file)."""
    root = _dnnl_root()
    include, lib = root / "include", root / "lib"
    if not (include / "oneapi" / "dnnl" / "dnnl.hpp").is_file() or not (lib / "libdnnl.so").exists():
        raise KernelUnavailable(f"oneDNN headers or library not under {root} (pip install "
                                f"{_WHEEL} onednn-devel-cpu-gomp, see setup.py)")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise KernelUnavailable("no C++ compiler (g++) on PATH")
    sources = _source_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so", delete=False) as tmp:
        tmp_path = pathlib.Path(tmp.name)
    # The sources (and the header they include) side by side in a scratch folder: the
    # package may not be writable, nor a plain folder.
    with tempfile.TemporaryDirectory() as src_dir:
        for name, text in sources.items():
            (pathlib.Path(src_dir) / name).write_bytes(text)
        cmd = [cxx, "-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math",
               "-fopenmp", "-std=c++17", "-shared", "-fPIC", "-w",
               *(str(pathlib.Path(src_dir) / n) for n in _SOURCES),
               f"-I{jax.ffi.include_dir()}", f"-I{include}", f"-L{lib}", "-ldnnl",
               f"-Wl,-rpath,{lib}", "-o", str(tmp_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as err:     # e.g. $CXX names no program
            tmp_path.unlink(missing_ok=True)
            raise KernelUnavailable(f"cannot run the C++ compiler {cxx}: {err}") from None
    if proc.returncode:
        tmp_path.unlink(missing_ok=True)
        raise KernelUnavailable(f"compiling {' '.join(_SOURCES)} failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp_path, out)
    return out


@functools.cache
def _load() -> str | None:
    """Build (once per machine), load and register the kernel; None or the reason it
    cannot run here (logged once, with the route that runs instead)."""
    reason = _try_load()
    if reason is not None:
        level = logging.INFO if reason.startswith("switched off") else logging.WARNING
        log.log(level, "oneDNN kernels not built (%s); using XLA's dot and attention",
                " ".join(reason.split())[:500])
    return reason


def _try_load() -> str | None:
    if os.environ.get("GECKO_ONEDNN", "1") == "0":
        return "switched off (GECKO_ONEDNN=0)"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"oneDNN kernel is built for x86-64 Linux, not {platform.system()} {platform.machine()}"
    try:
        importlib.metadata.version(_WHEEL)
        path = _library_path()
        if not path.is_file():
            build(path)
        lib = ctypes.cdll.LoadLibrary(str(path))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.GeckoOnednnMatmul),
                                    platform="cpu")
        jax.ffi.register_ffi_target(ATTENTION_TARGET,
                                    jax.ffi.pycapsule(lib.GeckoOnednnAttention), platform="cpu")
        jax.ffi.register_ffi_target(ATTENTION_GRAD_TARGET,
                                    jax.ffi.pycapsule(lib.GeckoOnednnAttentionGrad),
                                    platform="cpu")
    except importlib.metadata.PackageNotFoundError:
        return f"{_WHEEL} is not installed"
    except (KernelUnavailable, OSError) as e:
        return str(e)
    return None


def why_unavailable() -> str | None:
    return _load()


def available() -> bool:
    return _load() is None


# Activations oneDNN applies inside the kernel (post-ops), by the handler's code.
ACTIVATIONS = {None: 0, "gelu": 1, "gelu_tanh": 2, "relu": 3, "silu": 4}


def _matmul_local(a, b, bias, transpose_a, transpose_b, out_dtype, activation):
    """One device's oneDNN product (spmd.matmul_partitioned splits a sharded one)."""
    import numpy as np

    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), out_dtype),
                            vmap_method="sequential")
    return call(a, b, bias, transpose_a=np.int32(transpose_a), transpose_b=np.int32(transpose_b),
                activation=np.int32(ACTIVATIONS[activation]))


_matmul = spmd.matmul_partitioned(_matmul_local)


def matmul(a, b, *, transpose_a: bool = False, transpose_b: bool = False, out_dtype=None,
           bias=None, activation: str | None = None):
    """act(op(a) @ op(b) + bias) for 2-D a, b (both bf16 or both float32), in
    `out_dtype` (default a's dtype), accumulated in float32 by oneDNN. op(x) = x.T when
    asked; `bias` is float32 [N] (or None); `activation` one of ACTIVATIONS ("gelu" is
    the erf form), applied to the float32 sum before the result is rounded. On a mesh
    each device computes its own rows/columns (spmd.py)."""
    if not available():
        raise KernelUnavailable(why_unavailable())
    if activation not in ACTIVATIONS:
        known = sorted(map(str, ACTIVATIONS))
        raise ValueError(f"activation {activation!r} is not one of {known}")
    n = b.shape[0] if transpose_b else b.shape[1]
    bias = (jax.numpy.zeros((0,), jax.numpy.float32) if bias is None
            else jax.numpy.asarray(bias, jax.numpy.float32).reshape(n))
    return _matmul(a, b, bias, bool(transpose_a), bool(transpose_b),
                   jax.numpy.dtype(out_dtype or a.dtype), activation)


def _attention_local(qkv_bl3hd, mask_bl, scale, out_dtype):
    import numpy as np

    b, l, _, h, d = qkv_bl3hd.shape
    call = jax.ffi.ffi_call(ATTENTION_TARGET, jax.ShapeDtypeStruct((b, l, h * d), out_dtype),
                            vmap_method="sequential")
    return call(qkv_bl3hd, mask_bl, scale=np.float32(scale))


def _attention_grad_local(qkv_bl3hd, mask_bl, g_bld, scale):
    import numpy as np

    call = jax.ffi.ffi_call(ATTENTION_GRAD_TARGET,
                            jax.ShapeDtypeStruct(qkv_bl3hd.shape, jax.numpy.float32),
                            vmap_method="sequential")
    return call(qkv_bl3hd, mask_bl, g_bld, scale=np.float32(scale))


_attention = spmd.batch_partitioned(_attention_local, "b l t h d, b l -> b l (h d)", (2, 3),
                                    ("l", "t", "h", "d"))
_attention_grad = spmd.batch_partitioned(_attention_grad_local,
                                         "b l t h d, b l, b l (h d) -> b l t h d", (3,),
                                         ("l", "t", "h", "d"))


def attention(qkv_bl3hd, mask_bl, scale: float, out_dtype=None):
    """softmax(q k^T * scale over the keys `mask_bl` shows) v for every head, with q, k,
    v taken from a fused projection qkv [b, l, 3, h, d] (bf16 or float32: the products'
    operand type); mask [b, l] (nonzero = visible key). Returns [b, l, h * d] in
    `out_dtype` (default qkv's); logits and softmax are float32, the products
    accumulated in float32. On a mesh each device runs its sequences (spmd.py)."""
    if not available():
        raise KernelUnavailable(why_unavailable())
    b, l, three, h, d = qkv_bl3hd.shape
    if three != 3:
        raise ValueError(f"qkv must be [b, l, 3, h, d], got {qkv_bl3hd.shape}")
    if qkv_bl3hd.dtype not in (jax.numpy.bfloat16, jax.numpy.float32):
        qkv_bl3hd = qkv_bl3hd.astype(jax.numpy.bfloat16)
    return _attention(qkv_bl3hd, mask_bl.astype(jax.numpy.int32), float(scale),
                      jax.numpy.dtype(out_dtype or qkv_bl3hd.dtype))


def attention_grad(qkv_bl3hd, mask_bl, g_bld, scale: float):
    """The vector-Jacobian product of `attention` in float32: d(qkv) [b, l, 3, h, d]
    for the output's cotangent g [b, l, h * d] (onednn_attention_grad.cc: the
    probabilities recomputed, five float32 products batched over the heads)."""
    if not available():
        raise KernelUnavailable(why_unavailable())
    b, l, three, h, d = qkv_bl3hd.shape
    if three != 3 or g_bld.shape != (b, l, h * d):
        raise ValueError(f"qkv must be [b, l, 3, h, d] and g [b, l, h * d], got "
                         f"{qkv_bl3hd.shape} and {g_bld.shape}")
    f32 = jax.numpy.float32
    return _attention_grad(qkv_bl3hd.astype(f32), mask_bl.astype(jax.numpy.int32),
                           g_bld.astype(f32), float(scale))
