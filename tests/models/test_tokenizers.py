"""Tokenizers: the character tokenizer, HF tokenizers from GGUF and from a local directory."""

from __future__ import annotations

import json
import logging
import os

import pytest

from marl_jax.models import tokenizers
from marl_jax.models.tokenizers import CharTokenizer, HFTokenizer, load_tokenizer

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "And 2*3?"}]


def test_char_round_trip_and_ids():
  tok = load_tokenizer("char")
  assert isinstance(tok, CharTokenizer)
  text = "def f(x):\n\treturn x + 1  # ~ok!"
  ids = tok.encode(text)
  assert ids == [ord(c) for c in text]
  assert tok.decode(ids) == text
  assert (tok.pad_id, tok.bos_id, tok.eos_ids, tok.vocab_size) == (0, 1, (2,), 128)
  assert max(ids) < tok.vocab_size and min(ids) > 6


def test_char_unknown_characters_map_to_unk():
  tok = CharTokenizer()
  assert tok.encode("a\u00e9\x05b") == [97, CharTokenizer.UNK, CharTokenizer.UNK, 98]
  assert tok.decode(tok.encode("a\u00e9b")) == "a\ufffdb"


def test_char_chat_template():
  tok = CharTokenizer()
  ids = tok.apply_chat_template(CHAT[:2])
  assert ids == [1, 4, *map(ord, "Be brief."), 2, 5, *map(ord, "What is 2+3?"), 2, 6]
  assert tok.apply_chat_template(CHAT[:2], add_generation_prompt=False) == ids[:-1]
  assert tok.decode(ids) == "Be brief.What is 2+3?"
  assert tok.decode(ids, skip_special=False) == (
      "<bos><|system|>Be brief.<eos><|user|>What is 2+3?<eos><|assistant|>")
  # Overhead is 2 ids per message plus BOS and the generation prompt.
  full = tok.apply_chat_template(CHAT)
  assert len(full) == 2 + sum(2 + len(m["content"]) for m in CHAT)
  with pytest.raises(ValueError, match="role 'tool' is unknown"):
    tok.apply_chat_template([{"role": "tool", "content": "x"}])
  with pytest.raises(ValueError, match="id 300 is outside"):
    tok.decode([300])


def test_load_tokenizer_rejects_unknown_names():
  with pytest.raises(FileNotFoundError, match="'no_such_tokenizer' is neither 'char'"):
    load_tokenizer("no_such_tokenizer")


def test_gguf_tokenizer_matches_transformers(smollm2):
  _, _, tok, _ = smollm2
  assert isinstance(tok, HFTokenizer)
  assert (tok.eos_ids, tok.bos_id, tok.pad_id, tok.vocab_size) == ((2,), 1, 2, 49152)
  ids = tok.apply_chat_template(CHAT)
  reference = tok.tokenizer.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"]
  assert ids == list(reference)
  # <|im_start|> is 1 and <|im_end|> 2 in SmolLM2; the prompt ends "<|im_start|>assistant\n".
  assert ids[0] == 1 and ids.count(2) == len(CHAT)
  assert ids[-4:] == [1] + tok.encode("assistant\n")
  assert tok.decode(ids, skip_special=False).startswith("<|im_start|>system\nBe brief.<|im_end|>")
  assert "<|im_start|>" not in tok.decode(ids)
  text = "Résumé: 3 × 4 = 12\n"
  assert tok.decode(tok.encode(text)) == text
  # SmolLM2's template has no thinking switch; the flag reaches it and changes nothing.
  assert tok.apply_chat_template(CHAT, enable_thinking=True) == ids


def test_a_gguf_tokenizer_is_converted_once_then_read_from_the_cache(smollm2_gguf_path, tmp_path,
                                                                      monkeypatch):
  transformers = pytest.importorskip("transformers")
  monkeypatch.setenv(tokenizers.CACHE_ENV, str(tmp_path / "cache"))
  real, sources = transformers.AutoTokenizer.from_pretrained, []

  def recording(source, *args, **kwargs):
    sources.append(kwargs.get("gguf_file") or os.path.basename(source))
    return real(source, *args, **kwargs)

  monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recording)
  converted, cached = load_tokenizer(smollm2_gguf_path), load_tokenizer(smollm2_gguf_path)
  entries = os.listdir(tmp_path / "cache")
  assert len(entries) == 1 and ".tmp-" not in entries[0]  # one entry, nothing half-written
  assert sources == [os.path.basename(smollm2_gguf_path), entries[0]]  # converted once
  for tok in (converted, cached):
    assert (tok.eos_ids, tok.bos_id, tok.pad_id, tok.vocab_size) == ((2,), 1, 2, 49152)
  assert cached.apply_chat_template(CHAT) == converted.apply_chat_template(CHAT)
  texts = ("Résumé: 3 × 4 = 12\n", "<|im_start|>user\nhi<|im_end|>", "  def f(x):\n\treturn x")
  for text in texts:
    ids = converted.encode(text)
    assert cached.encode(text) == ids
    assert cached.decode(ids, skip_special=False) == converted.decode(ids, skip_special=False)


def test_a_cache_that_cannot_be_written_costs_only_the_conversion(smollm2_gguf_path, tmp_path,
                                                                  monkeypatch, caplog):
  transformers = pytest.importorskip("transformers")
  (tmp_path / "a_file").write_text("")
  monkeypatch.setenv(tokenizers.CACHE_ENV, str(tmp_path / "a_file"))
  fake = object()
  monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: fake)
  with caplog.at_level(logging.WARNING):
    assert tokenizers._from_gguf(smollm2_gguf_path) is fake  # pylint: disable=protected-access
  assert "Could not keep the tokenizer" in caplog.text and tokenizers.CACHE_ENV in caplog.text
  assert (tmp_path / "a_file").read_text() == ""

def test_an_unreadable_cache_entry_is_converted_again_with_a_warning(tmp_path, monkeypatch,
                                                                      caplog):
  transformers = pytest.importorskip("transformers")
  gguf = tmp_path / "model.gguf"
  gguf.write_bytes(b"GGUF")
  monkeypatch.setenv(tokenizers.CACHE_ENV, str(tmp_path / "cache"))
  os.makedirs(tokenizers.cache_entry(str(gguf)))  # an entry without its files
  real, fake = transformers.AutoTokenizer.from_pretrained, object()
  monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                      lambda source, **kw: fake if "gguf_file" in kw else real(source, **kw))
  with caplog.at_level(logging.WARNING):
    assert tokenizers._from_gguf(str(gguf)) is fake  # pylint: disable=protected-access
  assert "is unreadable" in caplog.text and "converting" in caplog.text

QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content"
    " + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    # Verbatim from Qwen3's chat template:
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")


@pytest.fixture(scope="module")
def qwen3_style_dir(tmp_path_factory):
  """A byte-level tokenizer built offline, with Qwen3's special tokens and thinking switch."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  backend.decoder = decoders.ByteLevel()
  tok = PreTrainedTokenizerFast(
      tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
      additional_special_tokens=["<|im_start|>", "<think>", "</think>"])
  tok.chat_template = QWEN3_STYLE_TEMPLATE
  directory = tmp_path_factory.mktemp("qwen3_style")
  tok.save_pretrained(directory)
  ids = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
  with open(directory / "generation_config.json", "w") as f:
    json.dump({"eos_token_id": ids}, f)
  return directory, ids


def test_qwen3_style_thinking_off_by_default(qwen3_style_dir):
  directory, (im_end, endoftext) = qwen3_style_dir
  tok = load_tokenizer(str(directory))
  assert tok.eos_ids == (im_end, endoftext) and tok.pad_id == endoftext
  messages = CHAT[1:2]
  default = tok.apply_chat_template(messages)
  thinking = tok.apply_chat_template(messages, enable_thinking=True)
  assert tok.decode(thinking, skip_special=False) == (
      "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
  assert tok.decode(default, skip_special=False) == (
      tok.decode(thinking, skip_special=False) + "<think>\n\n</think>\n\n")
  assert default == tok.apply_chat_template(messages, enable_thinking=False)
  assert tok.decode(tok.encode("héllo wörld")) == "héllo wörld"
