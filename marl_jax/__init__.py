"""marl_jax: multi-agent LLM workflows trained end to end with RL, in JAX."""

__version__ = "0.1.0"
