"""The cache of warm-started tiny bases: content-addressed entries, written atomically.

    <cache_dir>/<key>/params.npz   float arrays, one per parameter path ('layers/q', ...)
    <cache_dir>/<key>/record.json  the key's inputs, the warm-start record, the format version

`key` is a hash of everything that decides the parameters (model fields,
warm-start settings, demonstration sources and noise, rollout limits, the
format version). An entry is built in a temporary sibling directory and
renamed into place, so a killed build leaves no partial entry (only a
`.tmp-*` directory, ignored and safe to delete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import numpy as np

from marl_jax.models import entries

DEFAULT_DIR = os.path.join("~", ".cache", "marl_jax", "tiny")
# Entries built from configs/default.py for tiny_s / tiny_m / tiny_l, shipped
# with the package (launch/pretrain_tiny.py --ship writes them); read-only.
SHIPPED_DIR = os.path.join(os.path.dirname(__file__), "bases")
ENV_VAR = "MARL_JAX_CACHE"
_PARAMS, _RECORD = "params.npz", "record.json"


def cache_dir(configured: str = "") -> str:
  """config.tiny.cache_dir if set, else $MARL_JAX_CACHE, else ~/.cache/marl_jax/tiny."""
  return os.path.abspath(os.path.expanduser(configured or os.environ.get(ENV_VAR) or DEFAULT_DIR))


def key_of(inputs: dict[str, Any]) -> str:
  """A stable hash of JSON-able inputs (sorted keys; tuples as lists)."""
  text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:24]


def _named_leaves(tree: Any) -> dict[str, Any]:
  """{'layers/q': leaf, ...} of a nested dict pytree."""
  return {"/".join(str(getattr(p, "key", p)) for p in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  params: dict[str, Any] = {}
  for name, value in flat.items():
    node = params
    *parents, leaf = name.split("/")
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return params


def load(directory: str, key: str, shapes: Any) -> tuple[Any, dict] | None:
  """(params, record) of entry `key`, or None when there is none.

  `shapes` (decoder.param_shapes) is checked leaf by leaf: an entry that does
  not match is reported with its path rather than loaded.
  """
  entry = os.path.join(directory, key)
  if not os.path.isdir(entry):
    return None
  try:
    with open(os.path.join(entry, _RECORD)) as f:
      record = json.load(f)
    with np.load(os.path.join(entry, _PARAMS)) as data:
      flat = {name: data[name] for name in data.files}
  except (OSError, ValueError, KeyError) as err:
    raise ValueError(f"tiny base cache entry {entry} is unreadable ({err}); delete that "
                     "directory to rebuild it.") from None
  expected = {name: (tuple(s.shape), np.dtype(s.dtype)) for name, s in
              _named_leaves(shapes).items()}
  got = {name: (value.shape, value.dtype) for name, value in flat.items()}
  if got != expected:
    raise ValueError(f"tiny base cache entry {entry} holds parameters {got}, but the model "
                     f"needs {expected}; delete that directory to rebuild it.")
  return _unflatten(flat), record


def ship(directory: str, key: str) -> str:
  """Copies entry `key` of `directory` into SHIPPED_DIR (kept if there); returns its path."""
  target = os.path.join(SHIPPED_DIR, key)
  if not os.path.isdir(target):
    source = os.path.join(directory, key)
    if not os.path.isdir(source):
      raise FileNotFoundError(f"no tiny base cache entry {source} to ship; build it first.")
    shutil.copytree(source, target)
  return target


def save(directory: str, key: str, params: Any, record: dict) -> str:
  """Writes entry `key` atomically; returns its path. An existing entry is kept."""

  def write(tmp: str) -> None:
    np.savez(os.path.join(tmp, _PARAMS),
             **{n: np.asarray(v) for n, v in _named_leaves(params).items()})
    with open(os.path.join(tmp, _RECORD), "w") as f:
      json.dump(record, f, indent=1, sort_keys=True, default=str)

  return entries.write_entry(directory, key, write)
