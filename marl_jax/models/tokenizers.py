"""Tokenizers with one interface: Hugging Face (checkpoint dir or GGUF) and a character one.

Both expose `encode`, `decode`, `apply_chat_template` (token ids of a chat
prompt), and the special ids `eos_ids`, `pad_id`, `bos_id`, `vocab_size`.
`load_tokenizer('char' | directory | file.gguf)` picks one.

A GGUF file's tokenizer is converted by transformers (about 20 s for
SmolLM2's) once per file: the result is kept in a cache directory
($MARL_JAX_TOKENIZER_CACHE, else ~/.cache/marl_jax/tokenizers), one entry per
file path, size, modification time and transformers version, written to a
temporary sibling and renamed into place; a later load reads it in a fraction
of a second. A cache that cannot be written costs only the conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Protocol, Sequence

from marl_jax.models import entries

Message = dict[str, str]  # {'role': 'system' | 'user' | 'assistant', 'content': str}
# Any one of these makes a directory a Hugging Face tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
CACHE_ENV = "MARL_JAX_TOKENIZER_CACHE"


class Tokenizer(Protocol):
  eos_ids: tuple[int, ...]
  pad_id: int
  bos_id: int | None
  vocab_size: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...

  def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True,
                          enable_thinking: bool = False) -> list[int]: ...


class CharTokenizer:
  """Character tokenizer of the tiny models: 128 ids, one per ASCII code point.

  Text ids: '\\t' (9), '\\n' (10) and printable ASCII 32..126 map to their code
  points. Every other character maps to UNK (3) and decodes as U+FFFD, so any
  task text encodes (lossily) instead of failing mid-run. Special ids: PAD 0,
  BOS 1, EOS 2, UNK 3, role markers 4 (system), 5 (user), 6 (assistant); the
  remaining control ids are never produced by `encode`.

  Chat template, kept short for 512-position models:
    BOS, then per message: role marker, content, EOS; then the assistant marker
    when add_generation_prompt. A reply thus ends with EOS, as generation does.
  """

  PAD, BOS, EOS, UNK = 0, 1, 2, 3
  ROLES = {"system": 4, "user": 5, "assistant": 6}
  UNK_TEXT = "\ufffd"
  _NAMES = {0: "<pad>", 1: "<bos>", 2: "<eos>", 4: "<|system|>", 5: "<|user|>",
            6: "<|assistant|>"}
  _TEXT_IDS = frozenset([9, 10, *range(32, 127)])

  eos_ids = (EOS,)
  pad_id = PAD
  bos_id = BOS
  vocab_size = 128

  def encode(self, text: str) -> list[int]:
    text_ids = self._TEXT_IDS
    return [code if code in text_ids else self.UNK for code in map(ord, text)]

  def _piece(self, token: int, skip_special: bool) -> str:
    if token in self._TEXT_IDS:
      return chr(token)
    if token == self.UNK:
      return self.UNK_TEXT
    if not 0 <= token < self.vocab_size:
      raise ValueError(f"CharTokenizer.decode: id {token} is outside the vocabulary [0, 128).")
    return "" if skip_special else self._NAMES.get(token, f"<{token}>")

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    return "".join(self._piece(int(token), skip_special) for token in ids)

  def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True,
                          enable_thinking: bool = False) -> list[int]:
    """Token ids of a chat; enable_thinking is accepted for the shared interface and ignored."""
    del enable_thinking
    ids = [self.BOS]
    for message in messages:
      role = message.get("role")
      if role not in self.ROLES:
        raise ValueError(f"CharTokenizer chat message role {role!r} is unknown; use one of "
                         f"{sorted(self.ROLES)}.")
      ids += [self.ROLES[role], *self.encode(message["content"]), self.EOS]
    if add_generation_prompt:
      ids.append(self.ROLES["assistant"])
    return ids


class HFTokenizer:
  """A transformers tokenizer behind the shared interface.

  eos_ids: the tokenizer's eos token, then any further ids from the
  checkpoint's generation_config.json (Qwen3 stops on <|im_end|> and
  <|endoftext|>). pad_id falls back to the first eos id. vocab_size is
  len(tokenizer), which can be smaller than the model's embedding rows.
  """

  def __init__(self, tokenizer: Any, extra_eos_ids: Sequence[int] = ()):
    self.tokenizer = tokenizer
    eos = [tokenizer.eos_token_id, *extra_eos_ids]
    self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(int(t) for t in eos if t is not None))
    pad = tokenizer.pad_token_id
    self.pad_id: int = int(pad if pad is not None else (self.eos_ids or (0,))[0])
    self.bos_id: int | None = tokenizer.bos_token_id
    self.vocab_size: int = len(tokenizer)

  @classmethod
  def from_pretrained(cls, path: str) -> "HFTokenizer":
    """From a checkpoint directory or a .gguf file (transformers' GGUF tokenizer import)."""
    from transformers import AutoTokenizer  # heavy import, only when an HF tokenizer is used
    path = os.fspath(path)
    if path.endswith(".gguf"):
      if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file {path} does not exist.")
      return cls(_from_gguf(path))
    if not os.path.isdir(path):
      raise FileNotFoundError(f"Tokenizer directory {path} does not exist.")
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
      raise FileNotFoundError(
          f"Checkpoint directory {path} has no tokenizer files (none of {TOKENIZER_FILES}); "
          "set config.model.tokenizer to a directory or .gguf file that has them.")
    return cls(AutoTokenizer.from_pretrained(path, local_files_only=True),
               _generation_eos_ids(path))

  def save_pretrained(self, directory: str) -> None:
    """Writes the tokenizer files (with the chat template) into directory."""
    self.tokenizer.save_pretrained(directory)

  def encode(self, text: str) -> list[int]:
    """Ids of text alone: no BOS/EOS added (chat templates place their own)."""
    return list(self.tokenizer.encode(text, add_special_tokens=False))

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    return self.tokenizer.decode([int(t) for t in ids], skip_special_tokens=skip_special)

  def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True,
                          enable_thinking: bool = False) -> list[int]:
    """Ids of the rendered chat; enable_thinking reaches the template (Qwen3's switch)."""
    if not getattr(self.tokenizer, "chat_template", None):
      raise ValueError(f"The tokenizer of {self.tokenizer.name_or_path!r} has no chat template; "
                       "use a checkpoint that ships one (tokenizer_config.json 'chat_template').")
    text = self.tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking)
    return self.encode(text)


def cache_dir() -> str:
  """Where GGUF tokenizers are kept once converted: $MARL_JAX_TOKENIZER_CACHE, else
  ~/.cache/marl_jax/tokenizers."""
  default = os.path.join("~", ".cache", "marl_jax", "tokenizers")
  return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV) or default))


def cache_entry(path: str) -> str:
  """The cache directory of a GGUF file's converted tokenizer (it may not exist yet)."""
  import transformers  # pylint: disable=g-import-not-at-top
  path, stat = os.path.abspath(path), os.stat(path)
  return os.path.join(cache_dir(), hashlib.sha256("\0".join((
      path, str(stat.st_size), str(stat.st_mtime_ns), transformers.__version__)).encode()
  ).hexdigest()[:24])


def _from_gguf(path: str) -> Any:
  """transformers' tokenizer of a GGUF file, from the cache, else converted and cached."""
  import transformers  # pylint: disable=g-import-not-at-top
  path, entry = os.path.abspath(path), cache_entry(path)

  def convert():
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(path),
                                                      gguf_file=os.path.basename(path))

  if os.path.isdir(entry):
    try:
      return transformers.AutoTokenizer.from_pretrained(entry, local_files_only=True)
    except (OSError, ValueError) as err:
      logging.warning("The cached tokenizer %s is unreadable (%s); converting %s again. "
                      "Delete that directory to rebuild it.", entry, err, path)
      return convert()
  tokenizer = convert()
  try:
    entries.write_entry(cache_dir(), os.path.basename(entry),
                        lambda tmp: tokenizer.save_pretrained(tmp))
  except OSError as err:
    logging.warning("Could not keep the tokenizer converted from %s in %s (%s); the next "
                    "load converts it again (set $%s to a writable directory).",
                    path, cache_dir(), err, CACHE_ENV)
  return tokenizer


def _generation_eos_ids(directory: str) -> list[int]:
  path = os.path.join(directory, "generation_config.json")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    eos = json.load(f).get("eos_token_id")
  return [t for t in (eos if isinstance(eos, list) else [eos]) if t is not None]


def load_tokenizer(path_or_name: str) -> CharTokenizer | HFTokenizer:
  """'char' -> CharTokenizer; a checkpoint directory or a .gguf file -> HFTokenizer."""
  if path_or_name == "char":
    return CharTokenizer()
  path = os.fspath(path_or_name)
  if path.endswith(".gguf") or os.path.isdir(path):
    return HFTokenizer.from_pretrained(path)
  raise FileNotFoundError(f"Tokenizer {path_or_name!r} is neither 'char', an existing "
                          "checkpoint directory, nor a .gguf file.")
