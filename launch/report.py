r"""Writes report.md with figures for a sweep directory, or for one run.

  python launch/report.py --dir=sweeps/tiny                 # <dir>/report.md
  python launch/report.py --dir=docs/tiny_study             # runs in <dir>/runs; <dir>/report.md
  python launch/report.py --dir=docs/study/runs --out=docs/study  # docs/study/report.md
  python launch/report.py --dir=sweeps/tiny --title="The tiny-world study"
  python launch/report.py --run=runs/voting_sp              # <run>/report.md
  python launch/report.py --dir=sweeps/tiny --cliff_drop=0.15 --cliff_window=2
  python launch/report.py --dir=sweeps/tiny --cliff_relative=0.5   # the relative form
  # sweeps that differ in one setting, side by side (marl_jax.study.compare):
  python launch/report.py --out=docs/mechanisms --title="The mechanism study" \
      --compare=reference=docs/mechanisms/reference,clean=docs/mechanisms/clean,joint=docs/mechanisms/joint
"""

from absl import app, flags

from marl_jax.study import compare
from marl_jax.study import report
from marl_jax.study.diagnostics import analysis
from marl_jax.trainer import console

_DIR = flags.DEFINE_string("dir", None, "Sweep directory (launch/sweep.py --dir).")
_RUN = flags.DEFINE_string("run", None, "One run directory instead of a sweep.")
_COMPARE = flags.DEFINE_string(
    "compare", None, "Sweeps side by side instead: 'name=dir,name=dir,...' (or dirs, named "
    "by their directory); writes --out/report.md.")
_OUT = flags.DEFINE_string("out", None, "Write the sweep's report.md and figures here "
                           "(default: --dir).")
_TITLE = flags.DEFINE_string("title", None, "The sweep report's heading (default: the "
                             "sweep's name from its manifest, sweep.json, else the directory's "
                             "name made readable, e.g. docs/tiny_study -> 'Tiny study').")
_DROP = flags.DEFINE_float("cliff_drop", analysis.CliffConfig.min_drop,
                           "Terminal cliff: accuracy points (fraction) below the peak.")
_WINDOW = flags.DEFINE_integer("cliff_window", analysis.CliffConfig.window,
                               "Terminal cliff: last evaluations that must all stay down.")
_RELATIVE = flags.DEFINE_float("cliff_relative", analysis.CliffConfig.relative,
                               "Terminal cliff in the relative form: the share of the peak's "
                               "gain over the base given back (0: the absolute form, "
                               "--cliff_drop). Claim 2 reports both forms either way.")
_SHARE = flags.DEFINE_float("dominant_share", 0.6,
                            "Claim 4: mass share at which a role 'captures' the gradient.")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  if sum(map(bool, (_DIR.value, _RUN.value, _COMPARE.value))) != 1:
    raise app.UsageError("Give exactly one of --dir (a sweep), --run (one run directory) or "
                         "--compare (sweeps side by side).")
  cliff = analysis.CliffConfig(min_drop=_DROP.value, window=_WINDOW.value,
                               relative=_RELATIVE.value)
  if _COMPARE.value:
    if not _OUT.value:
      raise app.UsageError("--compare writes its report.md into --out; give --out.")
    try:
      arms = compare.parse_arms(_COMPARE.value)
    except ValueError as error:
      raise app.UsageError(str(error))
    path = compare.write_comparison(arms, _OUT.value, _TITLE.value or "Sweeps compared", cliff,
                                    dominant_share=_SHARE.value)
  elif _RUN.value:
    path = report.write_run_report(_RUN.value, cliff)
  else:
    path = report.write_sweep_report(_DIR.value, cliff, dominant_share=_SHARE.value,
                                     out_dir=_OUT.value, title=_TITLE.value)
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
