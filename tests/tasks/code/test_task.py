"""Code extraction from model text, program assembly, and voting equivalence."""

import pytest

from marl_jax.tasks.code import task as code

FENCED = """I'll first sketch it:
```
def f(x): pass
```
Final version:
```python
def f(x):
    return x + 1
```
"""


def test_last_python_block_is_preferred():
  assert code.extract_code(FENCED) == "def f(x):\n    return x + 1"
  assert code.extract_code(FENCED, prefer="first") == "def f(x): pass"
  longest = code.extract_code(FENCED, prefer="longest")
  assert longest == "def f(x):\n    return x + 1"


def test_python_tags_beat_other_languages():
  text = "```python\nprint(1)\n```\n```bash\nrm -rf /\n```\n"
  assert code.extract_code(text) == "print(1)"
  assert code.extract_code("```py3\nx = 2\n```") == "x = 2"
  assert code.extract_code("```cpp\nint main(){}\n```") == "int main(){}"


def test_unterminated_fence_and_raw_text():
  assert code.extract_code("```python\ndef g():\n    return 2") == \
      "def g():\n    return 2"
  assert code.extract_code("def h():\n    return 3\n") == "def h():\n    return 3"
  assert code.extract_code("def h(): pass", require_fence=True) is None
  assert code.extract_code("```python\n```") is None
  assert code.extract_code("   \n") is None
  assert code.extract_code(None) is None
  with pytest.raises(ValueError, match="prefer"):
    code.extract_code("x", prefer="best")


def test_indentation_of_a_body_completion_is_kept():
  assert code.extract_code("\n\n    return a + b\n") == "    return a + b"


def test_assembly_completes_or_replaces_the_prompt():
  prompt = "import math\n\ndef area(r):\n    \"\"\"Area.\"\"\"\n"
  ref = code.CodeReference(tests="assert area(1) > 3", entry_point="area",
                           prompt_code=prompt)
  body = "    return math.pi * r * r"
  assert code.assemble_program(body, ref) == prompt + body + "\n"
  whole = "def area(r):\n    return math.pi * r ** 2"
  program = code.assemble_program(whole, ref)
  assert program.startswith("import math") and program.endswith(whole + "\n")
  prelude = code.CodeReference(tests="assert f()", prelude="from typing import *")
  assert code.assemble_program("x = 1", prelude) == "from typing import *\n\nx = 1\n"


def test_reference_needs_tests():
  with pytest.raises(ValueError, match="tests or io_cases"):
    code.CodeReference()


def test_same_answer_ignores_formatting_and_comments():
  verifier = code.CodeVerifier()
  a = "def f(x):\n    # add one\n    return x+1\n"
  b = "def f(x):  return (x + 1)"
  assert verifier.same_answer(a, b)
  assert not verifier.same_answer(a, "def f(x):\n    return x + 2\n")
  assert not verifier.same_answer(a, None)
  assert verifier.same_answer("def (", "def (")  # unparsable: text equality


def test_verify_statuses():
  verifier = code.CodeVerifier(timeout_s=2.0)
  from marl_jax.tasks import base  # pylint: disable=g-import-not-at-top
  problem = base.Problem("p", "write f", code.CodeReference(
      tests="assert f(2) == 4", io_cases=(("3", "9"),)))
  program = "def f(x):\n    return x * x\nif __name__ == '__main__':\n    print(f(int(input())))\n"
  good = verifier.verify(problem, f"```python\n{program}```")
  assert good.reward == 1.0 and good.status == "correct"
  half = "def f(x):\n    return x * x\nprint(0)\n"
  assert verifier.verify(problem, half).status == "wrong"
  loop = "def f(x):\n    while True:\n        pass\n"
  assert verifier.verify(problem, loop).status == "timeout"
  assert verifier.verify(problem, "```\n```").status == "unparsable"
