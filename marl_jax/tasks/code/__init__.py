"""Code tasks: the task class and program extraction (`task`), data sources in
published formats (`sources`), and the tiny world's code task (`tiny_code`).
Programs are judged in `marl_jax.tasks.sandbox`."""
