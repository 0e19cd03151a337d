"""The trusted side of a sandbox run: executes the tests against the program.

The program lives in another process (see program_side.py). Every name the
tests use that the program defines becomes a `RemoteRef`; calling it sends
the arguments over a pipe and rebuilds the answer as this process's own
plain builtin objects. Comparisons, assertions and exceptions therefore all
happen here, out of the program's reach. A pass is reported only when the
test code ran to its end with the program still answering.
"""

import ast
import builtins
import math
import re

try:
  from . import wire
except ImportError:  # Loaded as a top-level module by supervisor.py.
  import wire

_DETAIL_CHARS = 600
_MAX_REPLY_BYTES = 64 << 20
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_EXCEPTIONS = {name: obj for name, obj in vars(builtins).items()
               if isinstance(obj, type) and issubclass(obj, Exception)}
_SIGXCPU = 24


class ProgramGone(BaseException):
  """The program process stopped answering (exited, crashed, or lied).

  A BaseException, so that `except Exception` in test code cannot swallow it.
  """


class UnsupportedValue(BaseException):
  """The tests tried to send the program a value the wire cannot carry."""


class ProgramRaised(Exception):
  """The program raised an exception that is not a builtin exception type."""


def _short(text: str, limit: int = 120) -> str:
  text = repr(text)
  return text if len(text) <= limit else text[:limit] + "..."


class Channel:
  """Request/response pipe pair to the program process."""

  def __init__(self, req_w: int, resp_r: int):
    self._req_w, self._resp_r = req_w, resp_r
    self.broken = ""

  def _receive(self, what: str) -> dict:
    # Any failure here (EOF, garbage, a reply too big or deep to decode,
    # MemoryError) is the program's doing. It breaks the channel for good,
    # so test code that swallows the exception still cannot pass.
    try:
      reply = wire.recv_json(self._resp_r, _MAX_REPLY_BYTES)
      if type(reply) is not dict:
        raise wire.ProtocolError("reply is not an object")
      return reply
    except Exception as e:  # pylint: disable=broad-except
      self.broken = f"program process {what} ({type(e).__name__}: {e})"
      raise ProgramGone(self.broken) from None

  def request(self, message: dict) -> dict:
    if self.broken:
      raise ProgramGone(self.broken)
    try:
      wire.send_json(self._req_w, message)
    except OSError as e:
      self.broken = f"program process stopped reading ({e})"
      raise ProgramGone(self.broken) from None
    return self._receive("stopped answering")

  def ready(self) -> dict:
    return self._receive("ended before loading finished")

  def _to_ref(self, obj) -> int:
    if isinstance(obj, RemoteRef) and obj._channel is self:  # pylint: disable=protected-access
      return obj._ref  # pylint: disable=protected-access
    raise UnsupportedValue(
        f"the tests passed a {type(obj).__name__} to the program; only plain "
        "data and the program's own objects can cross the sandbox boundary")

  def _decode(self, data):
    try:
      return wire.decode(data, lambda ref: RemoteRef(self, ref))
    except Exception as e:  # pylint: disable=broad-except
      self.broken = f"program sent a malformed value ({type(e).__name__}: {e})"
      raise ProgramGone(self.broken) from None

  def result(self, reply: dict):
    if "value" in reply:
      return self._decode(reply["value"])
    raised = reply.get("raise")
    if (type(raised) is list and len(raised) == 2
        and all(type(x) is str for x in raised)):
      name, message = raised
      cls = _EXCEPTIONS.get(name)
      try:
        exc = cls(message) if cls else None
      except TypeError:
        exc = None
      raise exc if exc is not None else ProgramRaised(f"{name}: {message}")
    self.broken = "program sent a malformed reply"
    raise ProgramGone(self.broken)

  def lookup(self, names) -> dict:
    reply = self.request({"op": "lookup", "names": list(names)})
    found = reply.get("names")
    if type(found) is not dict:
      self.broken = "program sent a malformed lookup reply"
      raise ProgramGone(self.broken)
    return {n: self._decode(v) for n, v in found.items() if n in names}

  def call(self, ref: int, args: tuple, kwargs: dict):
    return self.result(self.request({
        "op": "call", "ref": ref,
        "args": wire.encode(list(args), self._to_ref),
        "kwargs": wire.encode(dict(kwargs), self._to_ref)}))

  def getattr(self, ref: int, name: str):
    return self.result(self.request({"op": "getattr", "ref": ref, "name": name}))


class RemoteRef:
  """An object that stays in the program process.

  It compares by identity and has no truth value, so a rigged object can
  neither equal an expected value nor satisfy a bare `assert`.
  """

  __slots__ = ("_channel", "_ref")

  def __init__(self, channel: Channel, ref: int):
    self._channel, self._ref = channel, ref

  def __call__(self, *args, **kwargs):
    return self._channel.call(self._ref, args, kwargs)

  def __getattr__(self, name: str):
    if name.startswith("__"):
      raise AttributeError(name)
    return self._channel.getattr(self._ref, name)

  def __bool__(self):
    raise TypeError("a program object has no trusted truth value; "
                    "compare plain values instead")

  def __repr__(self):
    return f"<program object #{self._ref}>"


def _free_names(tree: ast.AST) -> list:
  used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
  return sorted(n for n in used if n not in vars(builtins)
                and not n.startswith("__"))


def _describe_failure(exc: BaseException, tests: str) -> str:
  line_no, tb = None, exc.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_filename == "<tests>":
      line_no = tb.tb_lineno
    tb = tb.tb_next
  what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
  if line_no is not None:
    lines = tests.splitlines()
    source = lines[line_no - 1].strip() if line_no <= len(lines) else ""
    what = f"{what} at tests line {line_no}: {source}"
  return what[:_DETAIL_CHARS]


def _run_module(tests: str, channel: Channel) -> dict:
  try:
    tree = ast.parse(tests, "<tests>")
    code = compile(tree, "<tests>", "exec")
  except SyntaxError as e:
    return {"status": "error",
            "detail": f"tests do not compile: line {e.lineno}: {e.msg}"}
  namespace = {"__name__": "__tests__", "__builtins__": builtins}
  namespace.update(channel.lookup(_free_names(tree)))
  try:
    exec(code, namespace)  # pylint: disable=exec-used
  except UnsupportedValue as e:
    return {"status": "error", "detail": str(e)}
  except ProgramGone as e:
    return {"status": "failed", "detail": str(e), "program_gone": True}
  except BaseException as e:  # pylint: disable=broad-except
    return {"status": "failed", "detail": _describe_failure(e, tests)}
  return {"status": "passed", "detail": "tests ran to completion"}


def outputs_match(got: str, expected: str) -> bool:
  """Judge's comparison of stdout: lines modulo trailing whitespace, else
  whitespace-separated tokens with numbers equal to 1e-6 (abs or relative)."""
  def lines(text):
    return [line.rstrip() for line in text.strip().splitlines()]
  if lines(got) == lines(expected):
    return True
  got_tokens, want_tokens = got.split(), expected.split()
  if len(got_tokens) != len(want_tokens):
    return False
  for a, b in zip(got_tokens, want_tokens):
    if a == b:
      continue
    if not (_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b)):
      return False
    if not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6):
      return False
  return True


def _run_script(cases, channel: Channel) -> dict:
  for i, (stdin, expected) in enumerate(cases):
    reply = channel.request({"op": "run", "stdin": stdin})
    if "raise" in reply:
      return {"status": "failed",
              "detail": f"case {i}: could not run the program: {reply['raise']}"}
    out, code, err = reply.get("stdout"), reply.get("exit"), reply.get("stderr")
    if type(out) is not str or type(code) is not int or type(err) is not str:
      return {"status": "failed", "detail": "program sent a malformed run reply",
              "program_gone": True}
    if code == -_SIGXCPU:
      return {"status": "timeout", "detail": f"case {i}: CPU time limit"}
    if code != 0:
      return {"status": "failed",
              "detail": f"case {i}: exit code {code}: {err[-300:].strip()}"}
    if not outputs_match(out, expected):
      return {"status": "failed", "detail": f"case {i}: wrong output: expected "
                                            f"{_short(expected)}, got {_short(out)}"}
  return {"status": "passed", "detail": f"all {len(cases)} cases matched"}


def run(task: dict, channel: Channel) -> dict:
  """Waits for the program to load, then runs the tests or the I/O cases."""
  try:
    ready = channel.ready()
    if type(ready) is not dict or ready.get("ready") is not True:
      detail = ready.get("detail") if type(ready) is dict else None
      return {"status": "failed",
              "detail": f"program failed to load: {str(detail)[-_DETAIL_CHARS:]}"}
    if task["mode"] == "script":
      outcome = _run_script(task["cases"], channel)
    else:
      outcome = _run_module(task["tests"], channel)
  except ProgramGone as e:
    return {"status": "failed", "detail": str(e), "program_gone": True}
  if outcome["status"] == "passed" and channel.broken:
    return {"status": "failed", "detail": channel.broken, "program_gone": True}
  return outcome
