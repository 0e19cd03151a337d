"""Examples of user-defined workflows (see second_opinion.py)."""
