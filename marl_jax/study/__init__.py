"""Studies built on the trainer: sweeps, reports and figures, diagnostics of
role-level dynamics, and the demo job."""
