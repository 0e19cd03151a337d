"""Hand-written role replies in the styles of Qwen3 and Llama instruct models, with their readings.

The real SmolLM2-135M-Instruct replies are in phrasings_smollm2.py; test_phrasings.py
asserts every reading of both. Each entry: (source, text, expected reading).
  source: 'qwen3-style' or 'llama-style' (hand-written in that model family's manner).
  verdicts: True (correct), False (incorrect), None (unreadable: no_verdict).
  choices: the 1-based candidate k, ('own', answer) for a synthesizer's own
    answer, or None (bad_choice). Candidates: CHOICE_CANDIDATES.
  plans: the strategies read (first PLAN_M), or () when nothing can be read.
  answers: (strict reading, lenient reading) of a math reply (None: no answer).
"""

CHOICE_CANDIDATES = ("72", "64", "48")
PLAN_M = 3

Q, L = "qwen3-style", "llama-style"

VERDICTS = [
    (Q, "Let me check the solution.\n\nNatalia sold 48 clips in April and 48/2 = 24 in May, so "
        "48 + 24 = 72 in total. The proposed solution computes 72.\n\nVERDICT: correct", True),
    (Q, "The solution adds 48 and 16 instead of 48 and 24, so it is incorrect.\n\n"
        "VERDICT: incorrect", False),
    (Q, "**Step 1:** 48 / 2 = 24 ✔\n**Step 2:** 48 + 24 = 72 ✔\n\n**VERDICT:** correct", True),
    (Q, "The proposed answer of 64 does not match my calculation of 72.\n\n"
        "**Verdict: incorrect**", False),
    (Q, "The correct answer is 72, so the proposed answer 64 is wrong.", False),
    (Q, "The reasoning is valid, but the final answer is wrong: 48 + 24 is 72, not 64.", False),
    (Q, "I verified each step and found no errors. The proposed solution is correct.", True),
    (Q, "There is an arithmetic error in step 2 (48 / 2 = 24, not 14).\n\nVERDICT: incorrect",
     False),
    (Q, "Checking: 6 * 4 = 24. The proposed answer is 24, which is the correct answer.\n"
        "VERDICT: correct", True),
    (Q, "VERDICT: incorrect - the solution forgot to subtract the 5 apples Tom gave away.",
     False),
    (Q, "Final verdict: CORRECT", True),
    (Q, "Let's verify whether 45 is right. 15 * 3 = 45. Yes, the answer is right.", True),
    (Q, "The solution is not correct. It multiplies where it should divide.\n\n"
        "VERDICT: incorrect", False),
    (Q, "Hmm, at first glance this looks wrong, but re-checking, 8 - 3 = 5, so the solution "
        "is actually correct.\n\nVERDICT: correct", True),
    (Q, "64 is not the correct answer; the right total is 72.", False),
    (Q, "Everything checks out.\n\nVERDICT: **correct**", True),
    (Q, "VERDICT: [incorrect]", False),
    (Q, "Is the proposed answer correct? Let me see. 3 cows have 12 legs and 4 chickens have 8 "
        "legs, 20 in total. The answer 20 is accurate.", True),
    (Q, "The proposed solution makes a mistake in the second step.", False),
    (Q, "I need to check if the answer is correct.", None),
    (L, "The proposed solution is correct.", True),
    (L, "No, the answer is wrong. Natalia sold 72 clips, not 64.", False),
    (L, "Yes, the solution is correct. 12 - 5 = 7.", True),
    (L, "The answer is not right. The correct calculation is 100 - 35 - 25 = 40.", False),
    (L, "I'd say the proposed solution is incorrect because it ignores the chickens' legs.",
     False),
    (L, "The solution provided is accurate and the final answer of 16 balloons is correct.",
     True),
    (L, "Unfortunately, the proposed solution isn't correct. The total should be $28.", False),
    (L, "The final answer is: $\\boxed{correct}$", True),
    (L, "The calculation 60 * 2 = 120 is right, so the proposed answer is right too.", True),
    (L, "There are no mistakes in this solution.", True),
    (L, "The solution contains an error: 24 / 6 is 4, not 3. Therefore the answer is "
        "incorrect.", False),
    (L, "I don't think this is right. 10 * 7 = 70, but the solution says 17.", False),
    (L, "The answer provided (32) is the right answer.", True),
    (L, "Incorrect. The correct answer is 14 miles.", False),
    (L, "Correct!", True),
    (L, "Thank you for the problem. Please let me know if you need anything else.", None),
    (L, "VERDICT: correct or VERDICT: incorrect", None),
]

CHOICES = [
    (Q, "Candidate 1 computes 48 + 24 = 72, which is right. Candidate 2 adds 16 instead of "
        "24. Candidate 3 forgets May.\n\nCHOICE: 1", 1),
    (Q, "All three candidates disagree. Checking: 48/2 = 24 and 48 + 24 = 72.\n\n"
        "**CHOICE: 1**", 1),
    (Q, "CHOICE: 2", 2),
    (Q, "The best answer is 2.", 2),
    (Q, "**2**", 2),
    (Q, "After comparing the solutions, I choose candidate 3.", 3),
    (Q, "Candidate 2 is correct, since it divides 48 by 2 before adding.\n\nCHOICE: candidate 2",
     2),
    (Q, "Candidate 1 is not correct (it adds the wrong numbers). Candidate 3 is correct.", 3),
    (Q, "The correct total is \\boxed{72}, which matches candidate 1.", 1),
    (Q, "Final choice: **Candidate 3**", 3),
    (Q, "CHOICE: [2]", 2),
    (Q, "Comparing the final answers, candidate 1 (72) is the most accurate one.", 1),
    (Q, "Let me check each candidate.\n1) 72: correct.\n2) 64: wrong.\n3) 48: wrong.\n\n"
        "CHOICE: 1", 1),
    (Q, "CHOICE: 7", None),
    (Q, "None of them look right to me.", None),
    (L, "The best solution is Solution 3.", 3),
    (L, "I would go with option 2.", 2),
    (L, "Based on the calculations, the correct answer is 72.", 1),
    (L, "The answer is 64.", 2),
    (L, "Solution 1 is the best.", 1),
    (L, "The correct one is 3.", 3),
    (L, "2", 2),
    (L, "#3.", 3),
    (L, "Answer: 2", 2),
    (L, "The best answer is candidate number 1.", 1),
    (L, "I pick the first one.", 1),
    (L, "Of the three, the best one is the third.", 3),
    (L, "**Candidate 2** is the most accurate answer.", 2),
    (L, "The final answer is $\\boxed{48}$.", 3),
]

# Synthesizer replies: a pick, or its own answer when no candidate is right.
OWN_ANSWERS = [
    (Q, "None of the candidates is correct. 48 + 24 = 72... wait, the candidates are 64, 48 "
        "and 60. Solving it myself: \\boxed{72}", ("64", "48", "60"), ("own", "72")),
    (L, "The candidates are all wrong. The answer is 120.", ("64", "48", "60"), ("own", "120")),
    (Q, "CHOICE: 2", ("64", "72", "60"), 2),
]

PLANS = [
    (Q, "1. Work backwards from the total.\n2. Set up an equation for the unknown.\n"
        "3. Draw a bar model of the quantities.",
     ("Work backwards from the total.", "Set up an equation for the unknown.",
      "Draw a bar model of the quantities.")),
    (Q, "Here are 3 different strategies:\n\n1. Compute May's sales, then add April's.\n"
        "2. Multiply April's sales by 1.5.\n3. Add the two months in a table.",
     ("Compute May's sales, then add April's.", "Multiply April's sales by 1.5.",
      "Add the two months in a table.")),
    (Q, "Sure! Here are three strategies:\n\n1. **Direct computation:** find May's total, then "
        "add.\n2. **Ratio reasoning:** May is half of April, so the total is 1.5 times April.\n"
        "3. **Guess and check:** try totals and check the halves.",
     ("Direct computation: find May's total, then add.",
      "Ratio reasoning: May is half of April, so the total is 1.5 times April.",
      "Guess and check: try totals and check the halves.")),
    (Q, "### Strategy 1: Unit rate\nFind the cost of one item.\n### Strategy 2: Scaling\n"
        "Scale the known quantity.\n### Strategy 3: Table\nList the values.",
     ("Unit rate", "Scaling", "Table")),
    (Q, "1. Add the numbers.\n   - first the tens\n   - then the ones\n2. Subtract the "
        "difference.\n3. Estimate and adjust.",
     ("Add the numbers.", "Subtract the difference.", "Estimate and adjust.")),
    (Q, "1. Draw a diagram\n2. Write an equation\n3. Work backwards\n4. Guess and check",
     ("Draw a diagram", "Write an equation", "Work backwards", "Guess and check")),
    (Q, "1. Count the legs of each animal type separately.\n2. Use multiplication.",
     ("Count the legs of each animal type separately.", "Use multiplication.")),
    (Q, "Strategy 1: Break the problem into months.\nStrategy 2: Use a proportion.\n"
        "Strategy 3: Model it with algebra.",
     ("Break the problem into months.", "Use a proportion.", "Model it with algebra.")),
    (Q, "1) Halve April's sales\n2) Add both months\n3) Check with estimation\n\nThese "
        "strategies each reach the total.",
     ("Halve April's sales", "Add both months", "Check with estimation")),
    (Q, "Plan:\n1. Find the number of girls by halving.\n2. Use a fraction of the class.\n"
        "3. Subtract the boys from the total.\n\nStep 1: 30 / 2 = 15.",
     ("Find the number of girls by halving.", "Use a fraction of the class.",
      "Subtract the boys from the total.")),
    (Q, "1. Multiply price by quantity.\n2. Repeated addition.\n3. Use a table.\n\nNow "
        "solving:\n1. 12 * 5 = 60",
     ("Multiply price by quantity.", "Repeated addition.", "Use a table.")),
    (L, "- Use repeated addition\n- Use multiplication\n- Use an array model",
     ("Use repeated addition", "Use multiplication", "Use an array model")),
    (L, "Here are three different strategies to solve the problem:\n\n* Strategy A: count up "
        "from 5 to 12.\n* Strategy B: subtract directly.\n* Strategy C: use a number line.",
     ("Strategy A: count up from 5 to 12.", "Strategy B: subtract directly.",
      "Strategy C: use a number line.")),
    (L, "Divide the cookies into groups\nUse multiplication facts\nDraw the cookies",
     ("Divide the cookies into groups", "Use multiplication facts", "Draw the cookies")),
    (L, "Here are 3 strategies:\nDirect subtraction\nCounting back\nUsing a number line",
     ("Direct subtraction", "Counting back", "Using a number line")),
    (L, "1. Subtract the slices eaten from the total.", ("Subtract the slices eaten from the "
                                                        "total.",)),
    (L, "", ()),
    (L, "Sure, I can help with that!", ()),
    (L, "**1.** Use unit rates\n**2.** Use a ratio table\n**3.** Use a double number line",
     ("Use unit rates", "Use a ratio table", "Use a double number line")),
    (Q, "<think>\n</think>\n\n1. Compute each day's toys sold and subtract from 100.\n2. Add "
        "both days first, then subtract once.\n3. Count down from 100 in steps.",
     ("Compute each day's toys sold and subtract from 100.",
      "Add both days first, then subtract once.", "Count down from 100 in steps.")),
    (Q, "Okay, let me propose three approaches.\n\n1. **Multiplication**: 7 bags times 10 "
        "marbles.\n2. **Skip counting**: count by tens seven times.\n3. **Place value**: 7 "
        "tens is 70.\n\nEach approach works for this problem.",
     ("Multiplication: 7 bags times 10 marbles.", "Skip counting: count by tens seven times.",
      "Place value: 7 tens is 70.")),
    (Q, "1. Halve April's number to get May's.\n\n2. Add April and May.\n\n3. Verify by "
        "estimating.",
     ("Halve April's number to get May's.", "Add April and May.", "Verify by estimating.")),
    (Q, "Strategies:\n- Rate times time\n- Build a table of hours and miles\n- Double the "
        "distance of one hour",
     ("Rate times time", "Build a table of hours and miles", "Double the distance of one hour")),
    (Q, "1. Use the formula distance = speed x time.\n2. Use a unit rate.",
     ("Use the formula distance = speed x time.", "Use a unit rate.")),
    (L, "Strategy 1 - Direct addition of the two prices\nStrategy 2 - Round $8 to $10 and "
        "adjust\nStrategy 3 - Count on from 20",
     ("Direct addition of the two prices", "Round $8 to $10 and adjust", "Count on from 20")),
    (L, "1: Multiply 12 by 5\n2: Add 12 five times\n3: Use 10 books plus 2 books",
     ("Multiply 12 by 5", "Add 12 five times", "Use 10 books plus 2 books")),
    (L, "Approach 1) Multiply the daily miles by 7.\nApproach 2) Add 2 seven times.\n"
        "Approach 3) Use a weekly table.",
     ("Multiply the daily miles by 7.", "Add 2 seven times.", "Use a weekly table.")),
    (L, "To solve this problem, you can use the following strategies:\n\n1. Subtraction\n2. "
        "Counting back\n3. A number line\n\nLet me know if you need help with any of them!",
     ("Subtraction", "Counting back", "A number line")),
]

# Math answers: (strict reading, lenient reading).
ANSWERS = [
    (Q, "April: 48. May: 48 / 2 = 24. Total: 48 + 24 = 72.\n\n\\boxed{72}", ("72", "72")),
    (Q, "So Natalia sold $\\boxed{72}$ clips in total.", ("72", "72")),
    (Q, "**Final Answer**\n\\[\n\\boxed{72}\n\\]", ("72", "72")),
    (Q, "The final answer is $\\boxed{\\dfrac{1}{2}}$.", ("\\dfrac{1}{2}", "\\dfrac{1}{2}")),
    (Q, "First I got \\boxed{64}, but that double-counts May. Correcting: \\boxed{72}.",
     ("72", "72")),
    (Q, "12 * 5 = 60\n\nAnswer: 60", ("60", "60")),
    (Q, "Step 1: 100 - 35 = 65.\nStep 2: 65 - 25 = 40.\nAnswer: 40", ("40", "40")),
    (Q, "**Answer:** 28", ("28", "28")),
    (Q, "Final answer: $32", ("$32", "$32")),
    (Q, "15 * 3 = 45\n#### 45", ("45", "45")),
    (L, "The final answer is: $\\boxed{24}$", ("24", "24")),
    (L, "Tom has 12 - 5 = 7 apples left. The answer is 7.", (None, "7")),
    (L, "To find the total, we add 9 and 7. 9 + 7 = 16. So Lily has 16 balloons.", (None, "16")),
    (L, "Each friend gets 24 / 6 = 4 cookies.", (None, "4")),
    (L, "The train travels 60 * 2 = 120 miles.", (None, "120")),
    (L, "There are 30 students, and half are girls, so there are 15 girls in the class.",
     (None, "15")),
    (L, "Emma walks 2 miles a day for 7 days, which is 14 miles in a week.", (None, "14")),
    (L, "72", (None, "72")),
    (L, "= 5", (None, "5")),
    (L, "The train travels for 60 hours and then it must stop at the station for a while "
        "before it goes on", (None, None)),
    (L, "Step 1: 12 * 5 = 60 hours, and then we need to find out how many", (None, None)),
    (L, "I'm not sure how to solve this problem.", (None, None)),
    (L, "", (None, None)),
]
