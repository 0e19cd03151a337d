"""Final-answer extraction from GSM8K- and MATH-style model text."""

import pytest

from marl_jax.tasks.math.checking import extract_answer

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72")

CASES = [
    (GSM8K_SOLUTION, "72"),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10", "10"),
    ("The total is 1,000 dollars.\n#### 1,000", "1,000"),
    ("So $x = 3$ and therefore the answer is $\\boxed{\\dfrac{1}{2}}$.", "\\dfrac{1}{2}"),
    ("Hence $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\boxed{5}}", "5"),
    ("First guess \\boxed{3}. Wait, that is wrong; it is \\boxed{4}.", "4"),
    ("The result is \\boxed 7 apples", "7"),
    ("\\fbox{-12}", "-12"),
    ("The set is $\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),
    ("$\\boxed{\\text{(B)}}$", "\\text{(B)}"),
    ("We get \\boxed{x^{2}+\\frac{1}{x}} in the end.", "x^{2}+\\frac{1}{x}"),
    ("Answer: 3.5 hours", "3.5 hours"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "$5$"),
    ("Step 1 ...\nAnswer: \\frac{3}{4}", "\\frac{3}{4}"),
    ("**Answer:** 42", "42"),
    ("12 * 5 = 60\n\n**Final answer:** $60", "$60"),
]

# Prose markers: read by lenient, not by strict (not the stated format).
PROSE_MARKERS = [
    ("The answer is 42.", "42"),
    ("So the final answer is $18.", "$18"),
    ("the answer is: -7", "-7"),
    ("The answer is 3.5 hours. Let me double check: yes.", "3.5 hours"),
    ("The answer is **72**.", "72"),
    ("My answer: 9", "9"),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_stated_formats(text, expected):
  assert extract_answer(text) == expected
  assert extract_answer(text, "strict") == expected


@pytest.mark.parametrize("text,expected", PROSE_MARKERS)
def test_prose_markers_only_when_lenient(text, expected):
  assert extract_answer(text) == expected
  assert extract_answer(text, "strict") is None


LENIENT = [
    ("She has 5 apples and eats 2, leaving 3.", "3"),
    ("Total cost is $1,250.", "1,250"),
    ("It drops to -4 degrees", "-4"),
    ("Each gets 3/4 of a pie", "3/4"),
    ("To answer this, we compute 2+2=4.", "4"),
    ("The box \\boxed{5 is unbalanced", "5"),
    ("There are 30 students, so there are 15 girls in the class.", "15"),
    ("x = 72 apples", "72"),
    ("-12", "-12"),
]

# Lenient reads the last number only from a reply that reads as a bare answer.
NOT_ANSWERS = [
    "The train travels for 60 hours and then it must stop at the station for a while before it",
    "Step 1: 12 * 5 = 60 hours, and then we need to find out how many",
    "First, 3 + 4 = 7. Next we need to think about the remaining apples in the basket",
    "So the answer is correct, and we are done with the whole problem at last",
    "The answer is already contained within your output box and nowhere else in it",
]


def test_lenient_answer_markers_skip_echoes_of_the_prompt():
  assert extract_answer("The answer is \\boxed{}, which is $12.") == "12"
  assert extract_answer("Put the answer within \\boxed{}. The answer is within \\boxed{}") is None


@pytest.mark.parametrize("text,expected", LENIENT)
def test_last_number_fallback_only_when_lenient(text, expected):
  assert extract_answer(text) == expected
  assert extract_answer(text, "strict") is None


@pytest.mark.parametrize("text", NOT_ANSWERS)
def test_lenient_takes_no_stray_number_from_prose(text):
  assert extract_answer(text) is None


def test_short_replies_keep_the_last_number_reading():
  # The tiny world's character models reply with at most a few characters.
  for text, expected in [("46", "46"), ("4a6", "6"), ("12 3", "3"), ("46 +", "46"),
                         ("x" * 30 + " 9", "9")]:
    assert extract_answer(text) == expected, text


def test_boxed_strictness_ignores_other_markers():
  assert extract_answer("#### 5", "boxed") is None
  assert extract_answer("The answer is 5.", "boxed") is None
  assert extract_answer("so \\boxed{5}", "boxed") == "5"


def test_nothing_to_extract():
  assert extract_answer("I do not know.") is None
  assert extract_answer("") is None
  assert extract_answer("\\boxed{}") is None
  assert extract_answer(None) is None


def test_unknown_strictness_is_rejected():
  with pytest.raises(ValueError, match="strictness"):
    extract_answer("5", "loose")
