"""Diagnostics of finished or running runs: summaries and cliffs, failure modes, gradients.

  analysis        load a run directory; base / peak / final accuracy; terminal cliffs
  failure_modes   collapses read from the sampled rollouts (rollouts/step_<N>.jsonl)
  gradients       per-role gradient norms, mass shares, same-role amplification
  roles           per-role parse rates and rewards per training step
  claims          the reference study's four claims, tested on a sweep's runs
"""
