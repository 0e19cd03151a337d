"""Framed messages and the plain-data value codec shared by sandbox processes.

A value crossing a process boundary is rebuilt from JSON by the receiver, so
the receiver only ever holds its own builtin objects (None, bool, int, float,
complex, str, bytes, list, tuple, dict, set, frozenset) or opaque references
to objects that stay in the sender. An object that overrides `__eq__` can
therefore never reach the process that compares results.

Integers beyond 64 bits travel as hexadecimal text (`{"$i": "-1f"}`):
Python refuses to turn integers of more than 4300 digits into decimal text
(sys.set_int_max_str_digits), and the conversion is quadratic below that,
while hexadecimal is exempt and linear; so 10 ** 5000 crosses intact.
"""

import json
import os
import re
import struct
from typing import Any, Callable

MAX_FRAME_BYTES = 256 << 20
# The largest answer the program process may send the tests process (a
# value, a run's stdout): beyond it the run fails as "output too large".
MAX_REPLY_BYTES = 64 << 20
_HEADER = struct.Struct("<Q")
_MAX_DEPTH = 200
_JSON_INT_BITS = 64
_HEX = re.compile(r"-?[0-9a-f]+")


class ProtocolError(Exception):
  """A peer sent something that is not a well-formed frame or value."""


class FrameTooLarge(ProtocolError):
  """A peer announced a frame longer than the reader accepts."""

  def __init__(self, size: int, limit: int):
    super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
    self.size, self.limit = size, limit


def frame(payload: bytes) -> bytes:
  """One length-prefixed frame."""
  return _HEADER.pack(len(payload)) + payload


def write_frame(fd: int, payload: bytes) -> None:
  """Writes one frame to a file descriptor."""
  view = memoryview(frame(payload))
  while view:
    view = view[os.write(fd, view):]


def read_exact(fd: int, size: int) -> bytes:
  """Reads exactly `size` bytes with os.read (no read-ahead buffering)."""
  chunks, left = [], size
  while left:
    chunk = os.read(fd, min(left, 1 << 20))
    if not chunk:
      raise EOFError(f"stream closed with {left} of {size} bytes unread")
    chunks.append(chunk)
    left -= len(chunk)
  return b"".join(chunks)


def read_frame(fd: int, limit: int = MAX_FRAME_BYTES) -> bytes:
  """Reads one frame; refuses frames longer than `limit` bytes."""
  (size,) = _HEADER.unpack(read_exact(fd, _HEADER.size))
  if size > limit:
    raise FrameTooLarge(size, limit)
  return read_exact(fd, size)


def send_json(fd: int, message) -> None:
  write_frame(fd, json.dumps(message).encode("utf-8"))


def recv_json(fd: int, limit: int = MAX_FRAME_BYTES) -> Any:
  try:
    return json.loads(read_frame(fd, limit).decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError) as e:
    raise ProtocolError(f"malformed message: {e}") from None


def encode(value: Any, to_ref: Callable[[Any], int], depth: int = 0) -> Any:
  """Turns a value into JSON data; `to_ref(obj)` names objects that stay put.

  Instances of subclasses of builtin types are reduced to the builtin value,
  so whatever methods they override stay behind in the sending process. The
  kind is read from type(value), never from a `__class__` the value may fake.
  """
  if depth > _MAX_DEPTH:
    raise ValueError("value is nested too deeply to send")
  if value is None or value is True or value is False:
    return value
  kind = type(value)
  if issubclass(kind, bool):
    return bool(int.__index__(value))
  if issubclass(kind, int):
    value = int.__index__(value)
    if value.bit_length() > _JSON_INT_BITS:
      return {"$i": format(value, "x")}
    return value
  if issubclass(kind, float):
    return float.__float__(value)
  if issubclass(kind, str):
    return str.__str__(value)
  d = depth + 1
  if issubclass(kind, complex):
    number = complex.__complex__(value)
    return {"$c": [number.real, number.imag]}
  if issubclass(kind, (bytes, bytearray)):
    return {"$b": (bytes.hex if issubclass(kind, bytes) else bytearray.hex)(value)}
  if issubclass(kind, list):
    return [encode(v, to_ref, d) for v in list.__iter__(value)]
  if issubclass(kind, tuple):
    return {"$t": [encode(v, to_ref, d) for v in tuple.__iter__(value)]}
  if issubclass(kind, dict):
    return {"$d": [[encode(k, to_ref, d), encode(v, to_ref, d)]
                   for k, v in dict.items(value)]}
  if issubclass(kind, frozenset):
    return {"$f": [encode(v, to_ref, d) for v in frozenset.__iter__(value)]}
  if issubclass(kind, set):
    return {"$s": [encode(v, to_ref, d) for v in set.__iter__(value)]}
  return {"$r": to_ref(value)}


def exceeds(data: Any, limit: int) -> bool:
  """Whether encoded `data` is sure to take more than `limit` bytes as JSON.

  Counts one byte per character of its strings and one per other item, a
  floor of json.dumps' size found in a fraction of its time (json.dumps
  writes ~100 MB/s: an 80 MB answer is refused at once, not after 1 s).
  """
  total, stack = 0, [data]
  while stack:
    item = stack.pop()
    if type(item) is str:
      total += len(item) + 2
    elif type(item) is list:
      stack.extend(item)
      total += len(item) + 1
    elif type(item) is dict:
      stack.extend(item.values())
      total += 2 * len(item) + 1
    else:
      total += 1
    if total > limit:
      return True
  return False


def decode(data: Any, from_ref: Callable[[int], Any], depth: int = 0) -> Any:
  """Rebuilds a value from JSON data; `from_ref(int)` resolves references."""
  if depth > _MAX_DEPTH:
    raise ProtocolError("value is nested too deeply")
  if data is None or type(data) in (bool, int, float, str):
    return data
  d = depth + 1
  if type(data) is list:
    return [decode(v, from_ref, d) for v in data]
  if type(data) is not dict or len(data) != 1:
    raise ProtocolError(f"malformed value of type {type(data).__name__}")
  ((tag, body),) = data.items()
  try:
    if tag == "$r" and type(body) is int:
      return from_ref(body)
    if tag == "$i" and type(body) is str and _HEX.fullmatch(body):
      return int(body, 16)
    if tag == "$b" and type(body) is str:
      return bytes.fromhex(body)
    if tag == "$c" and type(body) is list and len(body) == 2:
      return complex(float(body[0]), float(body[1]))
    if type(body) is list:
      items = [decode(v, from_ref, d) for v in body]
      if tag == "$t":
        return tuple(items)
      if tag == "$s":
        return set(items)
      if tag == "$f":
        return frozenset(items)
      if tag == "$d" and all(type(p) is list and len(p) == 2 for p in items):
        return {k: v for k, v in items}
  except (TypeError, ValueError) as e:
    raise ProtocolError(f"malformed {tag} value: {e}") from None
  raise ProtocolError(f"malformed value tagged {tag!r}")
