"""Who answers a role's call: the `PolicyStore` (frozen base + trainable slots,
role -> slot routing under shared, isolated or hybrid policies) and scripted
policies for tests and demonstrations."""

from marl_jax.policies.store import KINDS, MODES, PolicyStore, Routing, ScriptedPolicy

__all__ = ["KINDS", "MODES", "PolicyStore", "Routing", "ScriptedPolicy"]
