"""Gin parsing for every entry point: file look-up, include search paths, clean errors.

The shipped configs are package data (gecko_jax/gin_configs/, found through
importlib.resources, so an installed wheel has them; the checkout's top-level
gin_configs is a link to the same folder). A gin file given to `parse` (and every
`include`) is looked up as given (from the working directory), then beside the
package's gin_configs/ ('gin_configs/runs/finetune.gin'), then inside it
('runs/finetune.gin'); configs include each other as 'gin_configs/runs/finetune.gin'.
Callers import the modules that register their configurables before parsing
(unknown names fail here, before any compute).
A gin file may also be a URI (gs://, memory://): gin reads it through etils.epath.
"""

from __future__ import annotations

import importlib.resources
import logging
import pathlib
from typing import Sequence

from gecko_jax import paths
from gecko_jax.errors import GeckoError

# A package installed from a wheel (or the checkout) lies on the file system, so the
# resource folder is a real directory gin can open files under.
GIN_CONFIGS = pathlib.Path(str(importlib.resources.files("gecko_jax") / "gin_configs"))


class _DropGinPathNotFound(logging.Filter):
    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Path not found")


def resolve(name: str) -> pathlib.Path:
    """A gin file as given, else beside the package's gin_configs/, else inside it."""
    if paths.is_remote(name):
        if not paths.as_path(name).is_file():
            raise GeckoError(f"{name}: gin file not found")
        return paths.as_path(name)
    path = pathlib.Path(name)
    for base in (GIN_CONFIGS.parent, GIN_CONFIGS):
        if not path.is_file() and (base / name).is_file():
            path = base / name
    if not path.is_file():
        raise GeckoError(f"{name}: gin file not found (nor under {GIN_CONFIGS})")
    return path


def _open_uri(name: str):
    return paths.as_path(name).open("r")


def _is_uri_file(name: str) -> bool:
    return paths.is_remote(name) and paths.as_path(name).is_file()


def parse(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
    """Clears gin, then parses files + bindings (unknown configurables or parameters fail)."""
    import gin

    gin.clear_config()
    # URIs (and their includes): read with epath; local files keep gin's own `open`.
    gin.config.register_file_reader(_open_uri, _is_uri_file)
    # Includes name 'gin_configs/...' (not a bare 'runs/...': gin would try to import a
    # package named 'runs'); the package folder holding gin_configs/ resolves them in a
    # checkout and in an installed wheel alike.
    for path in (pathlib.Path.cwd(), GIN_CONFIGS.parent):
        gin.add_config_file_search_path(str(path))
    resolved = [str(resolve(name)) for name in gin_files]
    # gin logs an ERROR for every search path an include is not under: hide that noise.
    root = logging.getLogger()
    quiet = _DropGinPathNotFound()
    root.addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(resolved, list(gin_bindings),
                                            skip_unknown=False, finalize_config=False)
    except (ValueError, KeyError, TypeError, SyntaxError, IOError) as err:
        raise GeckoError(f"gin config: {err}") from None
    finally:
        root.removeFilter(quiet)
