"""Test set-up: 8 emulated CPU devices so sharded paths run against unsharded twins."""

import os

# Must happen before jax is imported anywhere. The suite compiles hundreds of small
# programs, most run once: LLVM at -O0 halves XLA's compile time on CPU (the same HLO,
# so the same arithmetic; matmuls and convolutions run in their libraries either way).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import ctypes  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


def _bound_the_heap() -> None:
    """glibc's malloc serves large blocks from mmap only up to a threshold that grows
    with every large free, and keeps an arena per thread: a long process that loads
    and drops models ends up holding freed gigabytes. A fixed 1 MiB threshold returns
    every large buffer to the system when it is freed; two arenas bound the rest."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)      # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)            # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


_bound_the_heap()


def release_memory() -> None:
    """Frees what a finished test module leaves behind: jax's compiled programs and the
    heap pages glibc would keep. Without this (and the package-scoped models) the
    suite's process grew to ~19 GB: every module's compiled programs and the models it
    loaded stayed alive until the session ended."""
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: nothing to trim
        pass


def pytest_collection_finish(session):
    """The objects alive after collection (the imported libraries: about a million for
    TensorFlow, torch, jax and mteb) live until the session ends; gc.freeze() takes them
    out of the collector's reach, so each full collection (every module's release, and
    Python's own) scans only what the tests made: about 0.45 s less per collection."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def _release_after_module():
    yield
    # gin's bindings are process-global: a module that parsed a config must not leave
    # its bindings (a Gemma file's Matryoshka dims, say) to the modules after it.
    if "gin" in sys.modules:
        sys.modules["gin"].clear_config()
    release_memory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Teachers and embedders the FRet pipeline cached serve the tests of one folder
    (a fixture of package scope here would be the root package's: the whole session).
    Dropped before the teardown: the last module of a folder ends in it, and its
    release_memory then frees them."""
    pipeline = sys.modules.get("gecko_jax.fret.pipeline")
    if pipeline is not None and (nextitem is None or nextitem.path.parent != item.path.parent):
        pipeline.release_cached()
    yield


@pytest.fixture(scope="session", autouse=True)
def _parse_each_wikipedia_dump_once():
    """sources.read_wikipedia, memoised for the session by (file, size, mtime, min_words).

    The shipped sample takes seconds to parse (wikitext clean-up in Python), and some
    twenty tests and library paths (mixtures, FRet's corpus, the distill recipe) read
    it. Each call still returns a new list of the same (frozen) articles; the parser
    itself runs, and is tested, on the first call for each file.
    """
    from gecko_jax import assets
    from gecko_jax.data import sources

    parse = sources.read_wikipedia
    parsed = {}

    def read_wikipedia(path=None, min_words: int = 20):
        file = os.fspath(path or assets.wikipedia_sample())
        try:
            st = os.stat(file)              # URIs and missing files: the parser as is
        except OSError:
            return parse(path, min_words)
        key = (os.path.realpath(file), st.st_size, st.st_mtime_ns, min_words)
        if key not in parsed:
            parsed[key] = parse(path, min_words)
        return list(parsed[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "read_wikipedia", read_wikipedia)
        yield


@pytest.fixture(scope="session")
def minilm_dir():
    from gecko_jax import assets

    return assets.minilm_dir()


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir):
    """The shipped MiniLM as a gecko_jax Encoder on one device (max length 256)."""
    from gecko_jax.encode import Encoder

    return Encoder.from_pretrained(minilm_dir, max_length=256)


@pytest.fixture(scope="session")
def bbc_articles():
    from gecko_jax.data.sources import read_bbc_news

    return read_bbc_news(dedup=True)


@pytest.fixture(scope="session")
def st_minilm(minilm_dir):
    """sentence-transformers' MiniLM: the torch reference for numerics tests."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    model.max_seq_length = 256
    return model
