"""GSM8K, MATH, DAPO-Math and TFDS gsm8k sources, and math task scoring."""

import json

import pytest

import marl_jax.tasks as tasks
from marl_jax.tasks import jsonl

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she "
                 "sold half as many clips in May. How many clips did Natalia sell "
                 "altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold "
               "48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A company pays $1,000 a day. What does it pay in 2 days?",
     "answer": "It pays 2*1,000=<<2*1000=2000>>2,000 dollars.\n#### 2,000"},
]
MATH = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
     "solution": "We have $\\frac{1}{2}+\\frac{1}{4} = \\frac{2}{4}+\\frac{1}{4} = "
                 "\\boxed{\\frac{3}{4}}$.", "level": "Level 1", "type": "Prealgebra"},
    {"problem": "Find the set of roots of $x^2 = 1$.",
     "solution": "The roots are $\\boxed{\\{-1, 1\\}}$.", "level": "Level 2",
     "type": "Algebra"},
    {"problem": "Simplify $\\sqrt{8}$.", "solution": "...", "answer": "2\\sqrt{2}"},
]
DAPO_INSTRUCTIONS = (
    "Solve the following math problem step by step. The last line of your "
    "response should be of the form Answer: $Answer (without quotes) where "
    "$Answer is the answer to the problem.\n\n{}\n\nRemember to put your answer "
    "on its own line after \"Answer:\".")
DAPO = [
    {"data_source": "math_dapo", "ability": "MATH",
     "prompt": [{"role": "user", "content": DAPO_INSTRUCTIONS.format(
         "In triangle $ABC$, $AB = 3$ and $BC = 4$ with a right angle at $B$. "
         "Find $AC$.")}],
     "reward_model": {"ground_truth": "5", "style": "rule-lighteval/MATH_v2"},
     "extra_info": {"index": "a1b2"}},
    {"prompt": "What is 7 times 8?", "solution": "56"},
]


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_gsm8k_jsonl(tmp_path):
  task = tasks.get("gsm8k_jsonl", train_path=_write(tmp_path / "train.jsonl", GSM8K),
                   eval_path=_write(tmp_path / "test.jsonl", GSM8K[:1]))
  train = task.problems("train")
  assert [p.reference for p in train] == ["72", "2000"]
  assert train[0].id == "train.jsonl:1" and "Natalia" in train[0].prompt
  assert len(task.problems("eval")) == 1
  assert task.verify(train[1], "So it pays $2,000.\n#### 2,000").status == "correct"
  assert task.verify(train[1], "The answer is 2000 dollars.").reward == 1.0
  assert task.verify(train[0], "The answer is 720.").status == "wrong"
  assert task.verify(train[0], "I am not sure.").status == "unparsable"


def test_math_jsonl(tmp_path):
  task = tasks.get("math_jsonl", eval_path=_write(tmp_path / "math.jsonl", MATH))
  problems = task.problems("eval")
  assert [p.reference for p in problems] == ["\\frac{3}{4}", "\\{-1, 1\\}", "2\\sqrt{2}"]
  assert problems[0].metadata == {"level": "Level 1", "type": "Prealgebra"}
  texts = ["... so it is $\\boxed{0.75}$", "\\boxed{\\{1,-1\\}}", "\\boxed{\\sqrt{8}}"]
  assert [s.status for s in task.verify_batch(problems, texts)] == ["correct"] * 3
  assert task.verify(problems[0], "\\boxed{\\frac{3}{5}}").status == "wrong"


def test_dapo_jsonl_both_layouts(tmp_path):
  task = tasks.get("dapo_jsonl", train_path=_write(tmp_path / "dapo.jsonl", DAPO))
  chat, flat = task.problems("train")
  assert chat.prompt.startswith("In triangle $ABC$") and chat.prompt.endswith("$AC$.")
  assert chat.reference == "5" and chat.metadata["data_source"] == "math_dapo"
  assert flat.prompt == "What is 7 times 8?" and flat.reference == "56"
  assert task.verify(chat, "By Pythagoras...\nAnswer: 5").status == "correct"
  kept = tasks.get("dapo_jsonl", train_path=str(tmp_path / "dapo.jsonl"),
                   keep_instructions=True)
  assert kept.problems("train")[0].prompt.startswith("Solve the following")


@pytest.mark.parametrize("name,record,message", [
    ("gsm8k_jsonl", {"question": "q"}, "missing field 'answer'"),
    ("gsm8k_jsonl", {"question": "q", "answer": "no marker"}, "has no '####"),
    ("gsm8k_jsonl", {"question": 3, "answer": "#### 3"}, "field 'question' must be str"),
    ("math_jsonl", {"problem": "p", "solution": "no box"}, "no \\\\boxed"),
    ("dapo_jsonl", {"prompt": "p"}, "missing field 'solution'"),
    ("dapo_jsonl", {"prompt": "p", "reward_model": {}}, "missing field 'ground_truth'"),
    ("dapo_jsonl", {"prompt": [{"role": "user"}], "solution": "1"},
     "list of chat messages"),
])
def test_bad_records_name_file_line_and_field(tmp_path, name, record, message):
  good = {"gsm8k_jsonl": GSM8K[0], "math_jsonl": MATH[0], "dapo_jsonl": DAPO[1]}[name]
  path = _write(tmp_path / "bad.jsonl", [good, record])
  with pytest.raises(jsonl.DataError, match=message) as info:
    tasks.get(name, train_path=path).problems("train")
  assert f"{path}:2" in str(info.value)


def test_malformed_line_names_file_and_line(tmp_path):
  path = tmp_path / "gsm.jsonl"
  path.write_text(json.dumps(GSM8K[0]) + "\n" + '{"question": "q", "answer":\n')
  with pytest.raises(jsonl.DataError, match="gsm.jsonl:2: malformed JSON"):
    tasks.get("gsm8k_jsonl", train_path=str(path)).problems("train")


def test_a_file_source_needs_a_path():
  with pytest.raises(ValueError, match="train_path and/or eval_path"):
    tasks.get("math_jsonl")


def _prepare_tfds_gsm8k(data_dir, jsonl_path):
  """Writes a real TFDS gsm8k (array_record) with TFDS's own builder."""
  tfds = pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.text.gsm8k import gsm8k  # pylint: disable=g-import-not-at-top
  with registered.skip_registration():
    class LocalGsm8k(gsm8k.Gsm8k):  # pylint: disable=unused-variable
      name = "gsm8k"

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(jsonl_path),
                "test": self._generate_examples(jsonl_path)}
  try:
    LocalGsm8k(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"TFDS cannot write array_record here without TensorFlow: {e}")
  return tfds


def test_tfds_gsm8k_from_a_prepared_array_record_dir(tmp_path):
  source = _write(tmp_path / "gsm8k.jsonl", GSM8K)
  _prepare_tfds_gsm8k(tmp_path / "tfds", source)
  task = tasks.get("tfds_gsm8k", data_dir=str(tmp_path / "tfds"))
  train = task.problems("train")
  assert sorted(p.reference for p in train) == ["2000", "72"]
  assert all(p.id.startswith("tfds:gsm8k:train:") for p in train)
  assert len(task.problems("eval")) == 2
  natalia = next(p for p in train if "Natalia" in p.prompt)
  assert task.verify(natalia, "#### 72").status == "correct"


def test_tfds_gsm8k_without_prepared_data_says_how_to_prepare(tmp_path):
  task = tasks.get("tfds_gsm8k", data_dir=str(tmp_path))
  with pytest.raises(jsonl.DataError, match="tfds build gsm8k"):
    task.problems("train")
  with pytest.raises(jsonl.DataError, match="not a directory"):
    tasks.get("tfds_gsm8k", data_dir=str(tmp_path / "missing"))


def test_timeout_status_from_the_symbolic_checker(tmp_path):
  task = tasks.get("math_jsonl", eval_path=_write(tmp_path / "m.jsonl", MATH[:1]),
                   timeout_s=1.0)
  score = task.verify(task.problems("eval")[0], "\\boxed{9^{9^{9}}}")
  assert score.status == "timeout" and score.reward == 0.0
