"""Report tables written twice: as markdown (report.md) and as CSV beside it.

A cell is a string or one of the typed cells below. In markdown every cell
reads as one short string ("0.207 ± 0.028 (n=2)"); in the CSV a typed cell
becomes plain numbers in one or more columns (mean, std and n of a spread;
a value and its step), so a table can be loaded without parsing text. Rows
are the same rows in the same order.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Sequence

from marl_jax.study.diagnostics import analysis


def fmt(x: float | None, signed: bool = False, digits: int = 3) -> str:
  if x is None or not math.isfinite(x):
    return "-"
  return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _number(x: float | int | None) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return ""
  return str(x) if isinstance(x, int) else f"{x:.6g}"


@dataclasses.dataclass(frozen=True)
class Num:
  value: float | None
  signed: bool = False
  digits: int = 3

  def md(self) -> str:
    return fmt(self.value, self.signed, self.digits)

  def csv(self) -> list[str]:
    return [_number(self.value)]

  @staticmethod
  def columns(name: str) -> list[str]:
    return [name]


@dataclasses.dataclass(frozen=True)
class Spread:
  """mean ± sample std (n) of the finite values (analysis.spread)."""

  values: tuple[float, ...]
  signed: bool = False

  def md(self) -> str:
    return analysis.format_spread(self.values, signed=self.signed)

  def csv(self) -> list[str]:
    mean, std, n = analysis.spread(self.values)
    return [_number(mean), _number(std), str(n)]

  @staticmethod
  def columns(name: str) -> list[str]:
    return [f"{name} mean", f"{name} std", f"{name} n"]


@dataclasses.dataclass(frozen=True)
class MeanSE:
  """mean ± standard error of the mean (n) of the finite values: '+0.012 ± 0.008 (n=6)'."""

  values: tuple[float, ...]
  signed: bool = False

  @property
  def figures(self) -> tuple[float, float, int]:
    mean, std, n = analysis.spread(self.values)
    return mean, std / math.sqrt(n) if n > 1 else math.nan, n

  def md(self) -> str:
    mean, se, n = self.figures
    if not n:
      return "-"
    return f"{fmt(mean, self.signed)} ± {fmt(se)} (n={n})"

  def csv(self) -> list[str]:
    mean, se, n = self.figures
    return [_number(mean), _number(se), str(n)]

  @staticmethod
  def columns(name: str) -> list[str]:
    return [f"{name} mean", f"{name} se", f"{name} n"]


@dataclasses.dataclass(frozen=True)
class AtStep:
  """A value reached at a step: '0.620 (30)'."""

  value: float | None
  step: int

  def md(self) -> str:
    return f"{fmt(self.value)} ({self.step})"

  def csv(self) -> list[str]:
    return [_number(self.value), str(self.step)]

  @staticmethod
  def columns(name: str) -> list[str]:
    name = name.replace(" (step)", "")
    return [name, f"{name} step"]


@dataclasses.dataclass(frozen=True)
class Int:
  """A whole number, or none ('-' in markdown, empty in the CSV)."""

  value: int | None

  def md(self) -> str:
    return "-" if self.value is None else str(self.value)

  def csv(self) -> list[str]:
    return [_number(self.value)]

  @staticmethod
  def columns(name: str) -> list[str]:
    return [name]


@dataclasses.dataclass(frozen=True)
class OutOf:
  """k of n: '30/30' (steps done of the total), '0/2' (runs with a cliff)."""

  count: int
  total: int | None

  def md(self) -> str:
    return f"{self.count}/{'?' if self.total is None else self.total}"

  def csv(self) -> list[str]:
    return [str(self.count), _number(self.total)]

  @staticmethod
  def columns(name: str) -> list[str]:
    return [name, f"{name} out of"]


Cell = str | Num | Spread | MeanSE | AtStep | Int | OutOf


def _md(cell: Cell) -> str:
  return cell if isinstance(cell, str) else cell.md()


def _csv(cell: Cell) -> list[str]:
  return [cell] if isinstance(cell, str) else cell.csv()


def markdown(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return out + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
  """The table as CSV; a column's typed cells (first row's type) set its CSV columns."""
  kinds = [type(c) for c in rows[0]] if rows else [str] * len(header)
  columns = [c for name, kind in zip(header, kinds)
             for c in ([name] if kind is str else kind.columns(name))]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([v for c in row for v in _csv(c)])
  return path


class Tables:
  """Writes each table's CSV into out_dir as <prefix><name>.csv and returns
  its markdown with a link to the CSV under it."""

  def __init__(self, out_dir: str, prefix: str = ""):
    self.out_dir, self.prefix = out_dir, prefix
    self.written: list[str] = []

  def __call__(self, name: str, header: Sequence[str], rows: Sequence[Sequence[Cell]]
               ) -> list[str]:
    path = write_csv(os.path.join(self.out_dir, f"{self.prefix}{name}.csv"), header, rows)
    self.written.append(path)
    return markdown(header, rows) + ["", f"CSV: [{os.path.basename(path)}]"
                                         f"({os.path.basename(path)})"]
