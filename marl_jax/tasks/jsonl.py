"""Reading data files (JSONL, JSONL.gz, Parquet, a JSON array) with errors that
name the file, the line (a Parquet file's row, an array's item, counted from 1)
and the field."""

import gzip
import json
import os
from typing import Any, Callable, Iterator, Optional

import pyarrow.parquet as pq


class DataError(ValueError):
  """A data file is missing, malformed, or lacks a required field."""


PARQUET = (".parquet", ".pq")


def check_exists(path: str) -> None:
  if not os.path.isfile(path):
    raise DataError(f"data file {path!r} does not exist; check the task's path "
                    "(a run's config: task.train_path / task.eval_path)")


def read_jsonl(path: str) -> Iterator[tuple]:
  """Yields (line_number, record) per non-blank line of a (.gz) JSONL file."""
  check_exists(path)
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


def read_parquet(path: str) -> Iterator[tuple]:
  """Yields (row_number, record) per row of a Parquet file (rows count from 1);
  nested columns (chat messages, reward_model) come back as lists and dicts."""
  check_exists(path)
  try:
    reader = pq.ParquetFile(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: "
                    f"{e})") from None
  row = 0
  for batch in reader.iter_batches(batch_size=1024):
    for record in batch.to_pylist():
      row += 1
      yield row, record


def read_json_array(path: str) -> Iterator[tuple]:
  """Yields (index + 1, record) per object of a file holding one JSON array
  (how some benchmarks ship, e.g. a test.json); a .json file of one object
  per line is read as JSONL."""
  check_exists(path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if not text.lstrip().startswith("["):
    yield from read_jsonl(path)
    return
  try:
    records = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column "
                    f"{e.colno})") from None
  for number, record in enumerate(records, start=1):
    if not isinstance(record, dict):
      raise DataError(f"{path}: item {number} of the array is a "
                      f"{type(record).__name__}, not a JSON object")
    yield number, record


def read_records(path: str) -> Iterator[tuple]:
  """(number, record) pairs of a data file, by its extension: Parquet
  (.parquet, .pq; the number is the row), a JSON array (.json; the item),
  else JSONL (.gz compressed; the line)."""
  lower = path.lower()
  if lower.endswith(PARQUET):
    return read_parquet(path)
  if lower.endswith(".json"):
    return read_json_array(path)
  return read_jsonl(path)


def first_record(path: str) -> tuple:
  """(number, record) of a data file's first record: what format sniffing reads."""
  for number, record in read_records(path):
    return number, record
  raise DataError(f"data file {path!r} holds no records")


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
  """Lazy per-split loaders for a task whose splits are data files.

  `parse(record, where, default_id)` builds one problem; `where` names the
  record for errors ("path:line"), `default_id` is "file_name:line".
  """
  paths = {"train": train_path, "eval": eval_path}
  if not any(paths.values()):
    raise ValueError("give train_path and/or eval_path (JSONL, JSONL.gz or "
                     "Parquet files)")

  def loader(path: str):
    def load() -> list:
      name = os.path.basename(path)
      problems = [parse(record, f"{path}:{n}", f"{name}:{n}")
                  for n, record in read_records(path)]
      if not problems:
        raise DataError(f"data file {path!r} holds no records")
      return problems
    return load

  return {split: loader(p) for split, p in paths.items() if p}
