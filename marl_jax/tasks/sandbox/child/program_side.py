"""The untrusted side of a sandbox run: loads the program and serves requests.

This process holds only the program text and the inputs the tests choose to
send; the tests, their expected values and the run's nonce live in other
processes. Whatever the program does here (exit, patch builtins, return
objects with a rigged `__eq__`, print fake verdicts) can only change the
plain data it answers with.

Requests (from the tests process): `lookup` names in the program's module,
`call` or `getattr` on a referenced object, `run` the program as a script
with a given stdin (a fresh forked process per run).

Replies: `{"value": data}`, `{"raise": [type name, message], "fatal": bool}`
(fatal: a BaseException that is not an Exception, such as SystemExit, which
no test may catch as an ordinary error), `{"too_large": bytes}` or
`{"unsendable": why}` (the answer cannot cross the boundary: the run fails).
"""

import builtins
import io
import json
import os
import sys
import traceback

try:
  from . import wire
except ImportError:  # Loaded as a top-level module by supervisor.py.
  import wire

_STDERR_TAIL = 2000


def _describe(exc: BaseException) -> str:
  """`Type: message` (with the line, for syntax errors)."""
  lines = traceback.format_exception_only(type(exc), exc)
  return "".join(lines).strip()[-_STDERR_TAIL:]


def _message(exc: BaseException) -> str:
  try:
    return str(exc)[-_STDERR_TAIL:]
  except Exception:  # pylint: disable=broad-except
    return "<unprintable>"


class _Objects:
  """Objects the tests process refers to by number."""

  def __init__(self):
    self._by_ref, self._ref_of = [], {}

  def ref(self, obj) -> int:
    key = id(obj)
    if key not in self._ref_of:
      self._ref_of[key] = len(self._by_ref)
      self._by_ref.append(obj)
    return self._ref_of[key]

  def get(self, ref: int):
    if not 0 <= ref < len(self._by_ref):
      raise wire.ProtocolError(f"unknown object reference {ref}")
    return self._by_ref[ref]


def _exit_code(exc: SystemExit) -> int:
  if exc.code is None:
    return 0
  if isinstance(exc.code, int):
    return exc.code & 0xFF
  print(exc.code, file=sys.stderr)
  return 1


def _script_child(code, in_path: str, out_path: str, err_path: str) -> None:
  """Runs in a forked child: the program as __main__ on real fds 0, 1, 2."""
  status = 1
  try:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, path, mode in ((0, in_path, os.O_RDONLY), (1, out_path, flags),
                           (2, err_path, flags)):
      new = os.open(path, mode, 0o600)
      os.dup2(new, fd)
      os.close(new)
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), "utf-8")
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), "utf-8")
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), "utf-8")
    status = 0
    try:
      exec(code, {"__name__": "__main__", "__builtins__": builtins})  # pylint: disable=exec-used
    except SystemExit as e:
      status = _exit_code(e)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      status = 1
    sys.stdout.flush()
    sys.stderr.flush()
  finally:
    os._exit(status)


def _run_script(code, stdin: str, max_output: int) -> dict:
  in_path, out_path, err_path = ".stdin", ".stdout", ".stderr"
  with open(in_path, "w", encoding="utf-8", errors="surrogatepass") as f:
    f.write(stdin)
  pid = os.fork()
  if pid == 0:
    _script_child(code, in_path, out_path, err_path)
  _, status = os.waitpid(pid, 0)
  with open(out_path, "rb") as f:
    out = f.read(max_output + 1)
  with open(err_path, "rb") as f:
    f.seek(max(0, os.fstat(f.fileno()).st_size - _STDERR_TAIL))
    err = f.read()
  if len(out) > max_output:
    return {"too_large": f"its stdout exceeds the {max_output}-byte limit "
                         "(Limits.max_output_bytes)"}
  return {"stdout": out.decode("utf-8", "replace"),
          "exit": os.waitstatus_to_exitcode(status),
          "stderr": err.decode("utf-8", "replace")}


def _raised(exc: BaseException) -> dict:
  name = type(exc).__name__
  if isinstance(exc, SystemExit):
    return {"raise": [name, f"exited with code {_exit_code(exc)}"], "fatal": True}
  return {"raise": [name, _message(exc)], "fatal": not isinstance(exc, Exception)}


class _Server:
  """Answers the tests process, one request at a time."""

  def __init__(self, namespace, code, max_output: int):
    self.namespace, self.code, self.max_output = namespace, code, max_output
    self.objects = _Objects()

  def _encode(self, value):
    return wire.encode(value, self.objects.ref)

  def _decode(self, data):
    return wire.decode(data, self.objects.get)

  def _value(self, value) -> dict:
    # A value that cannot be turned into data (nested too deeply, too big
    # for memory) is the program's answer failing, not an error the tests
    # could catch and excuse.
    try:
      return {"value": self._encode(value)}
    except BaseException as e:  # pylint: disable=broad-except
      return {"unsendable": f"its value cannot be sent ({type(e).__name__}: "
                            f"{_message(e)})"}

  def answer(self, request: dict) -> dict:
    op = request.get("op")
    try:
      if op == "run":
        return _run_script(self.code, request["stdin"], self.max_output)
      if op == "lookup":
        found = {n: self._encode(self.namespace[n])
                 for n in request["names"] if n in self.namespace}
        return {"names": found}
      target = self.objects.get(request["ref"])
      if op == "getattr":
        value = getattr(target, request["name"])
      elif op == "call":
        args = self._decode(request["args"])
        kwargs = self._decode(request["kwargs"])
        value = target(*args, **kwargs)
      else:
        return {"raise": ["ProtocolError", f"unknown request {op!r}"]}
    except BaseException as e:  # pylint: disable=broad-except
      return _raised(e)
    return self._value(value)


def _reply_bytes(reply: dict) -> bytes:
  """The reply as one frame's payload; an oversized one becomes `too_large`."""
  if wire.exceeds(reply, wire.MAX_REPLY_BYTES):
    reply = {"too_large": f"its answer is over the {wire.MAX_REPLY_BYTES}-byte "
                          "limit as data"}
  try:
    payload = json.dumps(reply).encode("utf-8")
  except BaseException as e:  # pylint: disable=broad-except
    payload = json.dumps({"unsendable": f"its answer cannot be serialised "
                                        f"({type(e).__name__})"}).encode("utf-8")
  if len(payload) > wire.MAX_REPLY_BYTES:
    payload = json.dumps({"too_large": f"its answer is {len(payload)} bytes as "
                                       f"data, over the {wire.MAX_REPLY_BYTES}"
                                       "-byte limit"}).encode("utf-8")
  return payload


def main(prog_r: int, req_r: int, resp_w: int, started_w: int,
         max_output: int) -> None:
  """Receives the program, loads it, then serves requests until EOF.

  One byte on `started_w` tells the supervisor that the sandbox is set up
  and the program's own code is about to run: from then on, however this
  process ends (os._exit(70) included), it is the program's doing.
  """
  message = wire.recv_json(prog_r)
  os.close(prog_r)
  source, mode = message["program"], message["mode"]
  namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
  os.write(started_w, b"1")
  os.close(started_w)
  code = None
  try:
    code = compile(source, "<program>", "exec")
    if mode == "module":
      exec(code, namespace)  # pylint: disable=exec-used
    ready = {"ready": True}
  except SystemExit as e:
    ready = {"ready": False,
             "detail": f"program exited with code {_exit_code(e)} while loading"}
  except BaseException as e:  # pylint: disable=broad-except
    ready = {"ready": False, "detail": _describe(e)}
  wire.send_json(resp_w, ready)
  if not ready["ready"]:
    return
  server = _Server(namespace, code, max_output)
  while True:
    try:
      request = wire.recv_json(req_r)
    except EOFError:
      return
    wire.write_frame(resp_w, _reply_bytes(server.answer(request)))
