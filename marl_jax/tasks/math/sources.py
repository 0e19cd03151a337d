"""Math data sources: GSM8K, MATH and DAPO-Math JSONL files, and TFDS gsm8k.

Each factory returns a MathTask whose splits are the files (or TFDS
splits) given; problem ids name their origin (`file:line`, `tfds:split:i`).
"""

import os
import re
from typing import Optional

from marl_jax.tasks import base
from marl_jax.tasks import jsonl
from marl_jax.tasks.math import checking as math_lib
from marl_jax.tasks.math import task as math_task

_DAPO_PREFIX = re.compile(
    r"^\s*Solve the following math problem step by step\..*?Answer:.*?\n\s*\n",
    re.DOTALL)
_DAPO_SUFFIX = re.compile(
    r"\n\s*\n\s*Remember to put your answer on its own line after "
    r"\"Answer:\"\.?\s*$")


def gsm8k_reference(answer: str, where: str) -> str:
  """The final answer after `####` in a GSM8K solution, commas removed."""
  if "####" not in answer:
    raise jsonl.DataError(f"{where}: GSM8K answer has no '#### <final answer>' "
                          "line")
  final = answer.rsplit("####", 1)[1].strip()
  if not final:
    raise jsonl.DataError(f"{where}: GSM8K answer is empty after '####'")
  return final.replace(",", "")


def parse_gsm8k(record: dict, where: str, default_id: str) -> base.Problem:
  question = jsonl.field(record, "question", where)
  answer = jsonl.field(record, "answer", where)
  return base.Problem(default_id, question, gsm8k_reference(answer, where),
                      {"solution": answer})


def parse_math(record: dict, where: str, default_id: str) -> base.Problem:
  problem = jsonl.field(record, "problem", where)
  if isinstance(record.get("answer"), str) and record["answer"].strip():
    reference = record["answer"].strip()
  else:
    solution = jsonl.field(record, "solution", where)
    reference = math_lib.last_boxed(solution)
    if not reference:
      raise jsonl.DataError(f"{where}: MATH solution has no \\boxed{{...}} "
                            "answer and the record has no 'answer' field")
  metadata = {k: record[k] for k in ("level", "type", "subject", "unique_id")
              if k in record}
  return base.Problem(default_id, problem, reference, metadata)


def _dapo_prompt(record: dict, where: str, keep_instructions: bool) -> str:
  prompt = jsonl.field(record, "prompt", where, (str, list))
  if isinstance(prompt, list):
    users = [m.get("content") for m in prompt
             if isinstance(m, dict) and m.get("role", "user") == "user"]
    if not users or not isinstance(users[-1], str):
      raise jsonl.DataError(f"{where}: field 'prompt' must be a string or a "
                            "list of chat messages with a user 'content'")
    prompt = users[-1]
  if not keep_instructions:
    prompt = _DAPO_SUFFIX.sub("", _DAPO_PREFIX.sub("", prompt)).strip()
  return prompt


def dapo_parser(keep_instructions: bool):
  def parse(record: dict, where: str, default_id: str) -> base.Problem:
    prompt = _dapo_prompt(record, where, keep_instructions)
    if "reward_model" in record:
      reward_model = jsonl.field(record, "reward_model", where, dict)
      reference = jsonl.field(reward_model, "ground_truth",
                              f"{where}: reward_model", (str, int, float))
    else:
      reference = jsonl.field(record, "solution", where, (str, int, float))
    reference = str(reference).strip()
    boxed = math_lib.last_boxed(reference)
    metadata = {k: record[k] for k in ("data_source", "extra_info", "ability")
                if k in record}
    return base.Problem(default_id, prompt, boxed or reference, metadata)
  return parse


def gsm8k_jsonl(train_path: Optional[str] = None, eval_path: Optional[str] = None,
                strictness: str = "lenient",
                timeout_s: float = 5.0) -> math_task.MathTask:
  """GSM8K format: {"question", "answer": "... #### 72"} per line."""
  return math_task.MathTask("gsm8k_jsonl", jsonl.split_loaders(
      train_path, eval_path, parse_gsm8k), strictness, timeout_s)


def math_jsonl(train_path: Optional[str] = None, eval_path: Optional[str] = None,
               strictness: str = "lenient",
               timeout_s: float = 5.0) -> math_task.MathTask:
  """MATH format: {"problem", "solution" with \\boxed{}} (or an "answer")."""
  return math_task.MathTask("math_jsonl", jsonl.split_loaders(
      train_path, eval_path, parse_math), strictness, timeout_s)


def dapo_jsonl(train_path: Optional[str] = None, eval_path: Optional[str] = None,
               strictness: str = "lenient", timeout_s: float = 5.0,
               keep_instructions: bool = False) -> math_task.MathTask:
  """DAPO-Math format: {"prompt": [chat messages], "reward_model":
  {"ground_truth"}, "data_source", "extra_info"}, or {"prompt": str,
  "solution": str}. DAPO's answer-format instructions around the problem
  are removed unless `keep_instructions`."""
  return math_task.MathTask("dapo_jsonl", jsonl.split_loaders(
      train_path, eval_path, dapo_parser(keep_instructions)),
                            strictness, timeout_s)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _tfds_loader(data_dir: str, tfds_split: str):
  def load():
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise jsonl.DataError("tfds_gsm8k needs tensorflow-datasets installed") from e
    try:
      source = tfds.data_source("gsm8k", data_dir=data_dir, split=tfds_split,
                                download=False)
    except Exception as e:  # pylint: disable=broad-except
      raise jsonl.DataError(
          f"no prepared TFDS gsm8k split {tfds_split!r} (array_record format) "
          f"under data_dir={data_dir!r}: {type(e).__name__}: {e}. Prepare it "
          "with `tfds build gsm8k --data_dir=DATA_DIR --file_format="
          "array_record`") from None
    problems = []
    for i in range(len(source)):
      example, where = source[i], f"tfds gsm8k {tfds_split}[{i}]"
      answer = _text(example["answer"])
      problems.append(base.Problem(
          f"tfds:gsm8k:{tfds_split}:{i}", _text(example["question"]),
          gsm8k_reference(answer, where), {"solution": answer}))
    return problems
  return load


def tfds_gsm8k(data_dir: str, train_split: str = "train",
               eval_split: str = "test", strictness: str = "lenient",
               timeout_s: float = 5.0) -> math_task.MathTask:
  """TFDS `gsm8k` read from a prepared array_record data_dir, without
  TensorFlow (through `tfds.data_source`)."""
  if not os.path.isdir(data_dir):
    raise jsonl.DataError(f"tfds_gsm8k data_dir {data_dir!r} is not a "
                          "directory")
  loaders = {"train": _tfds_loader(data_dir, train_split),
             "eval": _tfds_loader(data_dir, eval_split)}
  return math_task.MathTask("tfds_gsm8k", loaders, strictness, timeout_s)
