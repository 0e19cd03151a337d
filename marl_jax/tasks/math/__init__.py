"""Math tasks: answer extraction and equivalence (`checking`, `symbolic`), the
task class (`task`), data sources in published formats (`sources`), and the
tiny world's arithmetic (`arithmetic`)."""
