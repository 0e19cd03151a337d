"""Reading JSONL data files with errors that name the file, line and field."""

import gzip
import json
import os
from typing import Any, Callable, Iterator, Optional


class DataError(ValueError):
  """A data file is missing, malformed, or lacks a required field."""


def read_jsonl(path: str) -> Iterator[tuple]:
  """Yields (line_number, record) per non-blank line of a (.gz) JSONL file."""
  if not os.path.isfile(path):
    raise DataError(f"data file {path!r} does not exist; check the task's "
                    "path option")
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg} at column "
                        f"{e.colno}); fix or remove this line") from None
      if not isinstance(record, dict):
        raise DataError(f"{path}:{line_no}: expected a JSON object, got "
                        f"{type(record).__name__}")
      yield line_no, record


def field(record: dict, name: str, where: str, kind=str) -> Any:
  """record[name], checked to exist and to be of type(s) `kind`.

  `where` names the record in errors, e.g. "data/train.jsonl:12".
  """
  if name not in record:
    raise DataError(f"{where}: missing field {name!r} (fields present: "
                    f"{sorted(record)})")
  value = record[name]
  if not isinstance(value, kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    raise DataError(f"{where}: field {name!r} must be "
                    f"{' or '.join(k.__name__ for k in kinds)}, got "
                    f"{type(value).__name__}")
  return value


def split_loaders(train_path: Optional[str], eval_path: Optional[str],
                  parse: Callable[[dict, str, str], Any]) -> dict:
  """Lazy per-split loaders for a task whose splits are JSONL files.

  `parse(record, where, default_id)` builds one problem; `where` names the
  record for errors ("path:line"), `default_id` is "file_name:line".
  """
  paths = {"train": train_path, "eval": eval_path}
  if not any(paths.values()):
    raise ValueError("give train_path and/or eval_path (JSONL files)")

  def loader(path: str):
    def load() -> list:
      name = os.path.basename(path)
      problems = [parse(record, f"{path}:{n}", f"{name}:{n}")
                  for n, record in read_jsonl(path)]
      if not problems:
        raise DataError(f"data file {path!r} holds no records")
      return problems
    return load

  return {split: loader(p) for split, p in paths.items() if p}
