"""Attacks that carry data from one run to the next (leftover files, SysV and
POSIX IPC, a daemon): the first run is handed a secret as an argument and
stashes it; the second run's tests pass only if it can fetch that secret.

The second run must never pass, and nothing of either run may remain on
the host (no process, no SysV IPC object, the host's IPC keys unchanged).
Last, a program that tries to leave its chroot (directly, or from a user
namespace of its own) must not read a host file any user may read.

As root, or without root where user namespaces work, these all run; where
a mechanism they need is missing, they are skipped with what is missing.
"""

import os
import secrets
import shutil
import tempfile
import textwrap

import pytest

from marl_jax.tasks.sandbox import runner as sandbox
from tests.tasks.sandbox import attacking

TIMEOUT_S = 2.0
_KEY = 0x4D41524C  # "MARL": the SysV key every run of these programs agrees on

_SYSV = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
KEY, CREATE = {_KEY}, 0o1666  # IPC_CREAT | rw for all

def _check(result, what):
    if result == -1:
        raise OSError(ctypes.get_errno(), what)
    return result
"""

CHANNELS = {
    "file_in_tmp": """
        def stash(v):
            with open("/tmp/.marl-stash", "w") as f:
                f.write(str(v))
        def fetch():
            with open("/tmp/.marl-stash") as f:
                return int(f.read())
    """,
    "file_in_working_dir": """
        def stash(v):
            with open(".marl-stash", "w") as f:
                f.write(str(v))
        def fetch():
            with open(".marl-stash") as f:
                return int(f.read())
    """,
    "posix_shared_memory": """
        import _posixshmem, mmap, os
        def stash(v):
            fd = _posixshmem.shm_open("/marl-stash", os.O_CREAT | os.O_RDWR, 0o666)
            os.write(fd, str(v).encode().ljust(16))
        def fetch():
            fd = _posixshmem.shm_open("/marl-stash", os.O_RDONLY, 0o666)
            return int(os.read(fd, 16))
    """,
    "sysv_shared_memory": _SYSV + """
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
def _segment():
    return libc.shmat(_check(libc.shmget(KEY, 4096, CREATE), "shmget"), None, 0)
def stash(v):
    ctypes.memmove(_segment(), str(v).encode() + b"\\0", len(str(v)) + 1)
def fetch():
    return int(ctypes.string_at(_segment()))
""",
    "sysv_message_queue": _SYSV + """
class _Message(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 64)]
def stash(v):
    queue = _check(libc.msgget(KEY, CREATE), "msgget")
    message = _Message(1, str(v).encode())
    _check(libc.msgsnd(queue, ctypes.byref(message), 64, 0o4000), "msgsnd")
def fetch():
    queue = _check(libc.msgget(KEY, CREATE), "msgget")
    message = _Message()
    _check(libc.msgrcv(queue, ctypes.byref(message), 64, 0, 0o4000), "msgrcv")
    return int(message.mtext)
""",
    "sysv_semaphore": _SYSV + """
SETVAL, GETVAL = 16, 12
def stash(v):
    sem = _check(libc.semget(KEY, 1, CREATE), "semget")
    _check(libc.semctl(sem, 0, SETVAL, ctypes.c_int(v)), "semctl")
def fetch():
    sem = _check(libc.semget(KEY, 1, CREATE), "semget")
    return _check(libc.semctl(sem, 0, GETVAL), "semctl")
""",
    "posix_message_queue": """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        NAME = b"/marl-stash"
        def _open():
            queue = libc.mq_open(NAME, os.O_CREAT | os.O_RDWR | os.O_NONBLOCK,
                                 0o666, None)
            if queue == -1:
                raise OSError(ctypes.get_errno(), "mq_open")
            return queue
        def stash(v):
            data = str(v).encode()
            if libc.mq_send(_open(), data, len(data), 0) == -1:
                raise OSError(ctypes.get_errno(), "mq_send")
        def fetch():
            buffer = ctypes.create_string_buffer(1 << 16)
            size = libc.mq_receive(_open(), buffer, 1 << 16, None)
            if size == -1:
                raise OSError(ctypes.get_errno(), "mq_receive")
            return int(buffer.raw[:size])
    """,
    "daemon_on_abstract_socket": """
        import ctypes, os, signal, socket, time
        ADDRESS = "\\0marl-stash"
        def stash(v):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    ctypes.CDLL(None).prctl(1, 0)  # no parent-death signal
                    for sig in (signal.SIGHUP, signal.SIGTERM):
                        signal.signal(sig, signal.SIG_IGN)
                    server = socket.socket(socket.AF_UNIX)
                    server.bind(ADDRESS)
                    server.listen(8)
                    while True:
                        connection, _ = server.accept()
                        connection.sendall(str(v).encode())
                        connection.close()
                os._exit(0)
            time.sleep(0.2)
        def fetch():
            client = socket.socket(socket.AF_UNIX)
            client.connect(ADDRESS)
            return int(client.recv(64))
    """,
}


def _isolation() -> tuple:
  return sandbox.isolation()


def _skip_reason(channel: str):
  mechanisms = _isolation()
  if channel.startswith(("sysv", "posix_message")) and "ipcns" not in mechanisms:
    return ("no IPC namespace here (needs root or unprivileged user "
            f"namespaces); isolation in force: {mechanisms}")
  if "chroot" not in mechanisms:
    return ("no private root filesystem here (needs root or unprivileged "
            f"user namespaces); isolation in force: {mechanisms}")
  return None


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_nothing_carries_over_to_the_next_run(channel, monkeypatch):
  reason = _skip_reason(channel)
  if reason:
    pytest.skip(reason)
  keys_before = attacking.sysv_keys()
  program = textwrap.dedent(CHANNELS[channel])
  secret = 1000 + secrets.randbelow(30000)
  with attacking.recording_uids(monkeypatch) as uids:
    sandbox.run_tests(program, f"stash({secret})\n", TIMEOUT_S)
    # Proof that the channel works within a run: the same run fetches it.
    within = sandbox.run_tests(program, f"stash({secret})\nassert fetch() == {secret}\n",
                               TIMEOUT_S)
    later = sandbox.run_tests(program, f"assert fetch() == {secret}\n", TIMEOUT_S)
  assert not later.passed, f"the secret crossed from one run to the next: {later}"
  assert later.status == "failed", later
  assert within.passed or channel.startswith("posix_shared"), within
  assert not attacking.processes_of(uids), "sandbox processes outlived their run"
  assert not attacking.sysv_objects_of(uids), "SysV IPC objects outlived their run"
  assert attacking.sysv_keys() == keys_before, "the host's SysV IPC objects changed"
  assert not attacking.files_of(uids), "files of the runs were left on the host"


ESCAPE = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    def f(path):
        libc.unshare(0x10000000)  # a user namespace of its own: caps again?
        try:  # the classic chroot escape (needs CAP_SYS_CHROOT)
            os.makedirs("/tmp/out", exist_ok=True)
            os.chroot("/tmp/out")
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
        except OSError:
            pass
        for candidate in (path, "/proc/1/root" + path, "/proc/self/root" + path):
            try:
                with open(candidate) as f:
                    return f.read()
            except OSError:
                continue
        return None
"""


def test_the_host_filesystem_stays_out_of_reach():
  """A file any user may read, outside the sandbox's root: a program that
  breaks out of its chroot (or regains the capabilities to) would read it."""
  if not os.path.isdir("/var/tmp"):
    pytest.skip("no /var/tmp to hold a host file outside /tmp")
  if "chroot" not in _isolation():
    pytest.skip(f"no chroot here: the host's files are visible by design "
                f"(isolation in force: {_isolation()})")
  secret = secrets.token_hex(8)
  folder = tempfile.mkdtemp(prefix="marl-host-", dir="/var/tmp")
  try:
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "secret.txt")
    with open(path, "w") as f:
      f.write(secret)
    os.chmod(path, 0o644)
    verdict = sandbox.run_tests(textwrap.dedent(ESCAPE),
                                f"assert f({path!r}) == {secret!r}\n", TIMEOUT_S)
    assert not verdict.passed, f"the program read a host file: {verdict}"
    assert verdict.status == "failed", verdict
  finally:
    shutil.rmtree(folder, ignore_errors=True)
