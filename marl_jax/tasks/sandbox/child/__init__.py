"""Code that runs inside the sandbox's child processes, never in the trainer.

`supervisor.py` is started as a script by an isolated interpreter
(`python -I -S -B supervisor.py`); it and its siblings use the standard
library only. The trainer side imports `wire` from here for the framing.
"""
