"""The trusted side of a sandbox run: executes the tests against the program.

The program lives in another process (see program_side.py). The names the
tests take from it (see names.py) become `RemoteRef`s; calling one sends
the arguments over a pipe and rebuilds the answer as this process's own
plain builtin objects. Comparisons, assertions and exceptions therefore all
happen here, out of the program's reach. A pass is reported only when the
test code ran to its end with the program still answering.

An exception the program raises in a call is raised here as the builtin
type of that name, except that:
- StopIteration and StopAsyncIteration become RuntimeError (as PEP 479 does
  in generators): raised through `map`, `zip` or `iter(f, sentinel)` they
  would otherwise end the tests' loop early, and `all(map(f, xs))` pass;
- a BaseException that is not an Exception (SystemExit, KeyboardInterrupt,
  GeneratorExit, ...) ends the run as a failure that no `except` in the
  tests can excuse.
"""

import ast
import builtins
import signal

try:
  from . import compare
  from . import names as tests_names
  from . import wire
except ImportError:  # Loaded as top-level modules by supervisor.py.
  import compare
  import names as tests_names
  import wire

_DETAIL_CHARS = 600
_EXCEPTIONS = {name: obj for name, obj in vars(builtins).items()
               if isinstance(obj, type) and issubclass(obj, Exception)}
_ITERATION_ENDS = ("StopIteration", "StopAsyncIteration")
outputs_match = compare.outputs_match  # The stdin/stdout judge (compare.py).


class ProgramGone(BaseException):
  """The program process stopped answering (exited, crashed, or lied).

  A BaseException, so that `except Exception` in test code cannot swallow it.
  """


class UnsupportedValue(BaseException):
  """The tests tried to send the program a value the wire cannot carry."""


class ProgramRaised(Exception):
  """The program raised an exception that is not a builtin exception type."""


class Channel:
  """Request/response pipe pair to the program process.

  `broken` says why the run has failed for good (test code that swallows
  the exception still cannot pass); `gone` is True when the program process
  itself stopped answering (the supervisor then reads its exit status).
  """

  def __init__(self, req_w: int, resp_r: int):
    self._req_w, self._resp_r = req_w, resp_r
    self.broken, self.gone = "", False

  def fail(self, why: str, gone: bool = False):
    """Breaks the channel for good; returns the exception to raise."""
    self.broken, self.gone = why, gone
    return ProgramGone(why)

  def _receive(self, what: str) -> dict:
    # Any failure here (EOF, garbage, a reply too big or deep to decode,
    # MemoryError) is the program's doing.
    try:
      reply = wire.recv_json(self._resp_r, wire.MAX_REPLY_BYTES)
    except wire.FrameTooLarge as e:
      raise self.fail(f"output too large: the program sent {e.size} bytes, "
                      f"over the {e.limit}-byte limit") from None
    except Exception as e:  # pylint: disable=broad-except
      raise self.fail(f"program process {what} ({type(e).__name__}: {e})",
                      gone=isinstance(e, (EOFError, OSError))) from None
    if type(reply) is not dict:
      raise self.fail("program sent a malformed reply (not an object)")
    if type(reply.get("too_large")) is str:
      raise self.fail(f"output too large: {reply['too_large']}")
    if type(reply.get("unsendable")) is str:
      raise self.fail(f"the program's answer failed: {reply['unsendable']}")
    return reply

  def request(self, message: dict) -> dict:
    if self.broken:
      raise ProgramGone(self.broken)
    try:
      wire.send_json(self._req_w, message)
    except OSError as e:
      raise self.fail(f"program process stopped reading ({e})", gone=True) from None
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
      raise self.fail(f"program sent a malformed value ({type(e).__name__}: "
                      f"{e})") from None

  def result(self, reply: dict):
    if "value" in reply:
      return self._decode(reply["value"])
    raised = reply.get("raise")
    if not (type(raised) is list and len(raised) == 2
            and all(type(x) is str for x in raised)):
      raise self.fail("program sent a malformed reply")
    name, message = raised
    if reply.get("fatal") is True:
      raise self.fail(f"program raised {name} ({message}) during a call; a "
                      "BaseException that is not an Exception fails the run")
    if name in _ITERATION_ENDS:
      raise RuntimeError(f"program raised {name}" + (f": {message}" if message else ""))
    cls = _EXCEPTIONS.get(name)
    try:
      exc = cls(message) if cls else None
    except TypeError:
      exc = None
    raise exc if exc is not None else ProgramRaised(f"{name}: {message}")

  def lookup(self, names) -> dict:
    reply = self.request({"op": "lookup", "names": list(names)})
    found = reply.get("names")
    if type(found) is not dict:
      raise self.fail("program sent a malformed lookup reply")
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


def _run_module(tests: str, entry_points, channel: Channel) -> dict:
  try:
    tree = ast.parse(tests, "<tests>")
    code = compile(tree, "<tests>", "exec")
  except SyntaxError as e:
    return {"status": "error",
            "detail": f"tests do not compile: line {e.lineno}: {e.msg}"}
  from_program, modules = tests_names.plan(tree, entry_points)
  namespace = {"__name__": "__tests__", "__builtins__": builtins}
  namespace.update(channel.lookup(from_program))
  namespace.update(tests_names.trusted_modules(modules))
  try:
    exec(code, namespace)  # pylint: disable=exec-used
  except UnsupportedValue as e:
    return {"status": "error", "detail": str(e)}
  except ProgramGone as e:
    return {"status": "failed", "detail": str(e)}
  except BaseException as e:  # pylint: disable=broad-except
    return {"status": "failed", "detail": _describe_failure(e, tests)}
  return {"status": "passed", "detail": "tests ran to completion"}


def _exit_failure(i: int, code: int, err: str) -> dict:
  """The verdict for a script run that did not exit with 0."""
  if code == -signal.SIGXCPU:
    return {"status": "timeout", "detail": f"case {i}: CPU time limit"}
  if code == -signal.SIGXFSZ:
    what = "output too large (the file size limit, Limits.file_size_mb)"
  elif code < 0:
    what = f"program was killed by signal {-code}"
  else:
    what = f"program exited with code {code}"
  tail = err[-300:].strip()
  return {"status": "failed",
          "detail": f"case {i}: {what}" + (f": {tail}" if tail else "")}


def _run_script(cases, channel: Channel) -> dict:
  for i, (stdin, expected) in enumerate(cases):
    reply = channel.request({"op": "run", "stdin": stdin})
    if "raise" in reply:
      return {"status": "failed",
              "detail": f"case {i}: could not run the program: {reply['raise']}"}
    out, code, err = reply.get("stdout"), reply.get("exit"), reply.get("stderr")
    if type(out) is not str or type(code) is not int or type(err) is not str:
      raise channel.fail("program sent a malformed run reply")
    if code != 0:
      return _exit_failure(i, code, err)
    wrong = compare.first_difference(out, expected)
    if wrong is not None:
      return {"status": "failed", "detail": f"case {i}: wrong output at {wrong}"}
  return {"status": "passed", "detail": f"all {len(cases)} cases matched"}


def run(task: dict, channel: Channel) -> dict:
  """Waits for the program to load, then runs the tests or the I/O cases.

  The result's `program_gone` tells the supervisor that the program process
  stopped answering, so that its exit status names the verdict.
  """
  try:
    ready = channel.ready()
    if type(ready) is not dict or ready.get("ready") is not True:
      detail = ready.get("detail") if type(ready) is dict else None
      return {"status": "failed",
              "detail": f"program failed to load: {str(detail)[-_DETAIL_CHARS:]}"}
    if task["mode"] == "script":
      outcome = _run_script(task["cases"], channel)
    else:
      outcome = _run_module(task["tests"], task.get("entry_points") or (), channel)
  except ProgramGone as e:
    outcome = {"status": "failed", "detail": str(e)}
  if channel.broken:
    outcome = {"status": "failed", "detail": channel.broken}
  if channel.gone:
    outcome["program_gone"] = True
  return outcome
