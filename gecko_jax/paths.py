"""Paths as pods use them: local, gs:// (s3://, ...) and fsspec memory:// through etils.epath.

As in t5x, every path the trainer, export and the data readers touch is an
`epath.Path`, so a model dir or a data file may live on an object store:

  - local paths: the os backend;
  - gs://, s3://, az://, hf://: tf.io.gfile when TensorFlow imports, else fsspec
    (then gcsfs / s3fs must be installed on the pod);
  - memory://: fsspec's in-process memory filesystem, registered here (epath does
    not know it): the object-store stand-in the tests use.

Atomic writes. Locally: a temporary sibling, fsync, os.replace (an atomic rename).
Object stores have no atomic rename (a gs:// rename is copy + delete), but one
object's upload is atomic: the object appears only when its upload completes. So a
remote file is written straight to its final name (write_bytes_atomic).

Folders (model exports): built in a local temporary folder (safetensors, tokenizers
and transformers write local files), then moved into place: locally by a rename,
remotely by uploading file by file with COMPLETE_MARKER (gecko_config.json) last,
so a remote export is complete once its gecko_config.json exists. Remote model
folders are read through a local copy (local_folder).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile

from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath

COMPLETE_MARKER = "gecko_config.json"
MEMORY = "memory://"


def as_path(path: str | os.PathLike) -> epath.Path:
    """Any path or URI as an epath.Path (local paths stay local)."""
    return epath.Path(path)


def is_remote(path: str | os.PathLike) -> bool:
    """True for URIs (gs://, memory://, ...): no local file, no atomic rename."""
    return "://" in os.fspath(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """A reader sees the old content or the new, never half (see the module docstring)."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(path):
        path.write_bytes(data)          # one object upload: atomic on object stores
        return
    local = pathlib.Path(path)
    tmp = local.with_name(f".{local.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, local)


def local_folder(folder: str | os.PathLike) -> pathlib.Path:
    """A local folder holding `folder`'s files: itself if local, else a downloaded copy."""
    if not is_remote(folder):
        return pathlib.Path(folder)
    src = as_path(folder)
    dst = pathlib.Path(tempfile.mkdtemp(prefix="gecko_remote_")) / src.name
    _copy_tree(src, as_path(dst))
    return dst


def publish_folder(local_tmp: str | os.PathLike, dest: str | os.PathLike):
    """Moves a finished local folder to `dest`, replacing it. Returns dest: a
    pathlib.Path when local, an epath.Path for a URI."""
    local_tmp = pathlib.Path(local_tmp)
    if not is_remote(dest):
        dest = pathlib.Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        local_tmp.rename(dest)
        return dest
    dest_path = as_path(dest)
    if dest_path.exists():
        dest_path.rmtree()
    _copy_tree(as_path(local_tmp), dest_path, last=COMPLETE_MARKER)
    shutil.rmtree(local_tmp)
    return dest_path


def _copy_tree(src: epath.Path, dst: epath.Path, last: str | None = None) -> None:
    files = sorted(_files(src, ""))
    files.sort(key=lambda rel: rel == last)   # the marker last
    for rel in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((src / rel).read_bytes())


def _files(folder: epath.Path, prefix: str):
    """Relative names of every file under folder (iterdir: works on every backend;
    epath refuses recursive globs on object stores)."""
    for p in folder.iterdir():
        if p.is_dir():
            yield from _files(p, f"{prefix}{p.name}/")
        else:
            yield prefix + p.name


# --------------------------------------------------------------------------- memory://
class _MemoryBackend(epath_backend._FileSystemSpecBackend):   # etils pinned (constraints)
    """epath's fsspec backend, pointed at fsspec's memory filesystem."""

    def fs(self, path):
        import fsspec

        return fsspec.filesystem("memory")

    def open(self, path, mode):
        if "a" in mode and not self.exists(path):   # fsspec memory: append needs a file
            mode = mode.replace("a", "w")
        return self.fs(path).open(os.fspath(path), mode=mode)

    def glob(self, path):
        return [MEMORY + p.lstrip("/") for p in self.fs(path).glob(os.fspath(path))]


_MEMORY_BACKEND = _MemoryBackend()


def _memory_parts(parts):
    full = "/".join(os.fspath(p) for p in parts)
    return (full.replace(MEMORY, "/memory/", 1),) if full.startswith(MEMORY) else parts


@epath.register_path_cls(MEMORY)
class MemoryPath(gpath.PosixGPath):
    """memory://bucket/a/b as an epath.Path (fsspec's MemoryFileSystem)."""

    if sys.version_info < (3, 12):
        def __new__(cls, *parts):
            return super().__new__(cls, *_memory_parts(parts))
    else:
        def __init__(self, *parts):
            super().__init__(*_memory_parts(parts))

    @property
    def _uri_scheme(self):
        return "memory" if self.parts[:2] == ("/", "memory") else super()._uri_scheme

    @property
    def _backend(self):
        return _MEMORY_BACKEND if self._uri_scheme == "memory" else super()._backend

    @property
    def _path_str(self) -> str:
        if self._uri_scheme == "memory":
            return MEMORY + "/".join(self.parts[2:])
        return super()._path_str
