"""The files task: train and eval data files in published formats (JSONL,
JSONL.gz, Parquet), formats per split or sniffed, and the errors of bad input."""

import logging

import pytest

from marl_jax import tiny
import marl_jax.tasks as tasks
from marl_jax.tasks import files
from marl_jax.tasks import jsonl
from marl_jax.tasks.math import word_problems
from marl_jax.trainer.config import get_config
from tests.tasks import records


@pytest.mark.parametrize("fmt", sorted(files.FORMATS))
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet", ".json"])
def test_every_format_is_read_and_sniffed_from_every_file_type(tmp_path, fmt, suffix):
  rows = records.records(fmt)
  path = records.write(tmp_path / f"data{suffix}", rows)
  for asked in (fmt, "auto"):
    task = tasks.get("files", eval_path=path, format=asked)
    assert task.formats == {"eval": fmt}
    assert task.kind == files.FORMATS[fmt].kind
    problems = task.sample("eval", len(rows))
    assert len({p.id for p in problems}) == len(rows)


def test_train_and_eval_formats_are_independent(tmp_path):
  # DAPO-Math training from Parquet, MATH-500 evaluation from JSONL.
  train = records.write(tmp_path / "dapo-math-17k.parquet", records.DAPO)
  test = records.write(tmp_path / "math500.jsonl", records.MATH)
  sniffed = tasks.get("files", train_path=train, eval_path=test)
  named = tasks.get("files", train_path=train, eval_path=test, format="dapo",
                    eval_format="math")
  for task in (sniffed, named):
    assert task.formats == {"train": "dapo", "eval": "math"}
    train_batch = task.sample("train", 4, seed=0, step=0)  # epochs of 2 problems
    assert {p.reference for p in train_batch} == {"5", "56"}
    assert "Remember to put" not in train_batch[0].prompt  # DAPO's wrapper removed
    assert {p.reference for p in task.problems("eval")} == {"\\frac{3}{4}", "2\\sqrt{2}"}
    assert task.verify(task.problems("eval")[0], "\\boxed{0.75}").status == "correct"


def test_wrong_format_names_the_line_and_the_fields_found(tmp_path):
  path = records.write(tmp_path / "math.jsonl", records.MATH)
  task = tasks.get("files", train_path=path, format="gsm8k")
  with pytest.raises(jsonl.DataError) as info:
    task.problems("train")
  message = str(info.value)
  assert f"{path}:1:" in message and "'gsm8k'" in message
  assert "'problem'" in message and "'solution'" in message  # the fields found
  assert "look like 'math'" in message


def test_a_bad_record_later_in_the_file_is_named_by_its_line(tmp_path):
  path = records.write(tmp_path / "gsm8k.jsonl",
                       records.GSM8K + [{"question": "q", "reply": "#### 1"}])
  with pytest.raises(jsonl.DataError, match=r"gsm8k.jsonl:3: .*fields found are "
                                            r"\['question', 'reply'\]"):
    tasks.get("files", train_path=path).problems("train")


def test_parquet_rows_are_numbered_from_one(tmp_path):
  path = records.write(tmp_path / "bad.parquet", [{"question": "q", "answer": "no hashes"}])
  with pytest.raises(jsonl.DataError, match=r"bad.parquet:1: GSM8K answer has no '####"):
    tasks.get("files", eval_path=path, format="gsm8k").problems("eval")


def test_unknown_fields_under_auto_are_listed(tmp_path):
  path = records.write(tmp_path / "odd.jsonl", [{"input": "x", "target": "y"}])
  with pytest.raises(jsonl.DataError, match=r"odd.jsonl:1: cannot tell .*\['input', "
                                            r"'target'\].*task.format"):
    tasks.get("files", train_path=path)


def test_train_and_eval_of_two_kinds_are_refused(tmp_path):
  train = records.write(tmp_path / "gsm8k.jsonl", records.GSM8K)
  test = records.write(tmp_path / "mbpp.jsonl", records.MBPP)
  with pytest.raises(ValueError, match="train file is math .* eval file is code"):
    tasks.get("files", train_path=train, eval_path=test)


def test_the_run_family_must_match_the_files(tmp_path):
  path = records.write(tmp_path / "mbpp.jsonl", records.MBPP)
  with pytest.raises(ValueError, match="task=code"):
    tasks.get("files", train_path=path, family="math")


def test_options_of_the_other_kind_are_refused(tmp_path):
  path = records.write(tmp_path / "mbpp.jsonl", records.MBPP)
  with pytest.raises(ValueError, match="strictness"):
    tasks.get("files", train_path=path, strictness="strict")


def test_more_eval_problems_than_the_file_has_is_an_error(tmp_path):
  path = records.write(tmp_path / "test.jsonl", records.GSM8K)
  task = tasks.get("files", eval_path=path)
  assert len(task.sample("eval", 2)) == 2
  with pytest.raises(ValueError, match=r"512 eval problems asked.*test.jsonl.*has 2.*"
                                       r"eval.num_problems=2"):
    task.sample("eval", 512)


def test_a_missing_split_names_the_config_field(tmp_path):
  task = tasks.get("files", train_path=records.write(tmp_path / "t.jsonl", records.GSM8K))
  with pytest.raises(ValueError, match="task.eval_path"):
    task.sample("eval", 1)


def test_humaneval_trains_only_when_asked_explicitly(tmp_path, caplog):
  path = records.write(tmp_path / "he.jsonl", records.humaneval())
  with pytest.raises(jsonl.DataError, match="format=humaneval"):
    tasks.get("files", train_path=path)
  with caplog.at_level(logging.WARNING):
    task = tasks.get("files", train_path=path, format="humaneval")
  assert "training on HumanEval" in caplog.text
  problem = task.sample("train", 1)[0]
  assert task.verify(problem, problem.reference.solution).status == "correct"
  # As an eval set it needs no flag; `humaneval` names the package's copy.
  assert len(tasks.get("files", eval_path="humaneval").problems("eval")) == 164
  assert tasks.get("humaneval", train=True).splits == ("train", "eval")


def test_missing_file_is_named_at_build(tmp_path):
  with pytest.raises(jsonl.DataError, match="nope.parquet.*task.train_path"):
    tasks.get("files", train_path=str(tmp_path / "nope.parquet"))


def _section(**fields):
  section = {"family": "math", "name": "arithmetic", "options": {}, "train_path": "",
             "eval_path": "", "format": "auto", "eval_format": ""}
  section.update(fields)
  return section


def test_resolve_keeps_the_tiny_world_without_paths_and_reads_files_with_them(tmp_path):
  assert tasks.resolve(_section()) == ("arithmetic", {})
  assert tasks.resolve({"name": "tiny_code", "options": {"depth": 2}}) == (
      "tiny_code", {"depth": 2})  # a config saved before the data fields
  path = records.write(tmp_path / "g.jsonl", records.GSM8K)
  name, options = tasks.resolve(_section(train_path=path))
  assert name == "files" and options["train_path"] == path and options["family"] == "math"
  assert tasks.from_config(_section(eval_path=path)).formats == {"eval": "gsm8k"}
  # The older registered names read their one format.
  assert tasks.resolve(_section(name="dapo_jsonl", train_path=path))[1]["format"] == "dapo"


@pytest.mark.parametrize("fields, message", [
    (dict(format="gsm8k"), "neither task.train_path nor task.eval_path"),
    (dict(name="dapo_jsonl", train_path="x.jsonl", format="math"), "contradicts"),
    (dict(train_path="x.jsonl", options={"digits": 1}), "options of task 'arithmetic'"),
])
def test_resolve_refuses_contradictions(fields, message):
  with pytest.raises(ValueError, match=message):
    tasks.resolve(_section(**fields))


def test_unknown_format_lists_the_formats(tmp_path):
  with pytest.raises(ValueError, match="'dapo', 'gsm8k', 'math'"):
    tasks.get("files", train_path=records.write(tmp_path / "g.jsonl", records.GSM8K),
              format="gsm8k8k")


def test_a_tiny_base_built_on_data_files_has_its_own_cache_key():
  # Data paths replace the generated task, so they must enter the tiny base's
  # key: a base built on the files is never found under arithmetic's key.
  config = get_config("")
  default = tiny.cache_key(config)
  config.task.train_path = word_problems.TRAIN_FILE
  assert tiny.cache_key(config) != default


def test_sanitized_mbpp_is_read_as_mbpp(tmp_path):
  task = tasks.get("files", train_path=records.write(tmp_path / "s.jsonl",
                                                     records.MBPP_SANITIZED))
  assert task.formats == {"train": "mbpp"}
  problem = task.problems("train")[0]
  assert problem.prompt.startswith("Write a python function to remove first")
  assert task.verify(problem, problem.reference.solution).status == "correct"


def test_a_json_array_names_the_bad_item(tmp_path):
  path = records.write(tmp_path / "test.json", records.GSM8K + [{"question": "q"}])
  with pytest.raises(jsonl.DataError, match=r"test.json:3: a 'gsm8k' record"):
    tasks.get("files", eval_path=path, format="gsm8k").problems("eval")
