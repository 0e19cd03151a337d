"""Diagnostics of finished or running runs: summaries and cliffs, failure modes, gradients.

  analysis        load a run directory; base / peak / final accuracy; terminal cliffs
                  (absolute and relative forms)
  cliffs          cliff counts over a grid of rules; the learning rate where a rule looks
  failure_modes   collapses read from the sampled rollouts (rollouts/step_<N>.jsonl)
  gradients       per-role gradient norms, mass shares, per-role means over windows
  mechanics       a run's update mechanics (scheme, minibatches, denominator, schedule)
                  and the same-role amplification they predict
  amplification   same-role amplification pairs: update, drift and gradient ratios
  roles           per-role parse rates and rewards per training step; start parse rates
  claims          the reference study's four claims, tested on a sweep's runs
"""
