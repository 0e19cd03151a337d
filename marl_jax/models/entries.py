"""Cache entries written whole: a directory built beside its final name and renamed
into place, so a reader never sees half of one (the tiny bases, converted tokenizers)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable


def write_entry(directory: str, key: str, write: Callable[[str], object]) -> str:
  """Entry `key` of `directory`, its files written by write(a temporary directory);
  returns its path. An entry another process renamed into place first is kept. A
  killed write leaves only a `<key>.tmp-*` directory (ignored, safe to delete).
  Raises OSError where the entry cannot be written."""
  os.makedirs(directory, exist_ok=True)
  entry = os.path.join(directory, key)
  tmp = tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=directory)
  try:
    write(tmp)
    try:
      os.rename(tmp, entry)
    except OSError:
      if not os.path.isdir(entry):  # not a concurrent write of the same key
        raise
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return entry
