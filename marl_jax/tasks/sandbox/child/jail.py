"""Operating-system isolation for sandbox children.

Namespaces (network, mount, pid, IPC), a minimal root filesystem on a private
tmpfs, resource limits, and an unprivileged uid. Each step is attempted and
reported by name, so the trainer can say which mechanisms were in force.
Standard library only (ctypes for the syscalls Python 3.11 lacks).
"""

import ctypes
import os
import resource
import socket

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
# statvfs flag -> mount flag, for the flags a user namespace locks on a mount.
_KEPT_FLAGS = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV),
               (os.ST_NOEXEC, _MS_NOEXEC), (os.ST_NOATIME, _MS_NOATIME),
               (os.ST_NODIRATIME, _MS_NODIRATIME), (os.ST_RELATIME, _MS_RELATIME))
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 24, 38
_CAP_LAST = 63
NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_TOP_LINKS = ("bin", "lib", "lib64", "sbin")


def _check(rc: int, what: str) -> None:
  if rc != 0:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(text):
  return None if text is None else os.fsencode(text)


def mount(source, target, fstype, flags, data=None) -> None:
  _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
         f"mount {target}")


def unshare(flags: int) -> None:
  _check(_libc.unshare(flags), "unshare")


def set_dumpable(flag: bool) -> None:
  """A non-dumpable process cannot be ptraced or have /proc/PID/mem read."""
  _check(_libc.prctl(_PR_SET_DUMPABLE, int(flag), 0, 0, 0), "prctl dumpable")


def set_parent_death_signal(signum: int) -> None:
  _check(_libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl pdeathsig")


def enter_network_namespace() -> bool:
  """Moves the caller into a new network namespace: no interfaces but a
  loopback that is down, so no address, local or remote, is reachable."""
  try:
    unshare(CLONE_NEWNET)
    return True
  except OSError:
    return False


def _write(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)


def enter_user_namespace() -> None:
  """Becomes root of a new user namespace that maps only the caller's ids.

  Unprivileged users may do this where the kernel allows it; inside, the
  caller may create the other namespaces and mount filesystems, with no
  power over anything outside that it did not have already.
  """
  uid, gid = os.getuid(), os.getgid()
  unshare(CLONE_NEWUSER)
  # A non-dumpable process's /proc/self files belong to the global root
  # until its namespace's root is mapped: only a dumpable one may write its
  # maps. It becomes non-dumpable again at once.
  set_dumpable(True)
  try:
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
  finally:
    set_dumpable(False)


def user_namespace_works() -> bool:
  """Whether a user namespace here lets its root create mount, pid, IPC and
  network namespaces and mount a tmpfs (tried in a throwaway child)."""
  pid = os.fork()
  if pid == 0:
    status = 1
    try:
      enter_user_namespace()
      unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID)
      mount(None, "/", None, _MS_REC | _MS_PRIVATE)
      mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m")
      status = 0
    except BaseException:  # pylint: disable=broad-except
      pass
    finally:
      os._exit(status)  # pylint: disable=protected-access
  return os.waitpid(pid, 0)[1] == 0


def drop_capabilities() -> None:
  """Gives up every capability for good (root of a user namespace keeps
  its uid 0 but can no longer chroot out, mount, ptrace or regain them)."""
  _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl no_new_privs")
  for cap in range(_CAP_LAST + 1):
    if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
      break  # past the kernel's last capability
  header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
  data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2
  _check(_libc.capset(header, data), "capset")


def enter_ipc_namespace() -> bool:
  """Moves the caller into a new IPC namespace: SysV shared memory, message
  queues, semaphores and POSIX message queues of its own, none of the
  host's, all destroyed with the namespace's last process."""
  try:
    unshare(CLONE_NEWIPC)
    return True
  except OSError:
    return False


def enter_mount_namespace() -> bool:
  """Gives the caller private copies of all mounts (changes stay inside)."""
  try:
    unshare(CLONE_NEWNS)
    mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    return True
  except OSError:
    return False


def _bind(source: str, target: str, readonly: bool = True) -> None:
  mount(source, target, None, _MS_BIND | _MS_REC)
  if readonly:
    # In a user namespace the source mount's nosuid/nodev/noexec/atime flags
    # are locked: a remount that drops any of them is refused, so keep them.
    held = os.statvfs(target).f_flag
    kept = 0
    for st_flag, ms_flag in _KEPT_FLAGS:
      if held & st_flag:
        kept |= ms_flag
    mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID
          | _MS_NODEV | kept)


def build_root(extra_dirs) -> str:
  """Builds a minimal root skeleton on a small tmpfs; returns its path.

  Call once, in a private mount namespace. It holds /usr, the interpreter's
  prefix (read-only binds), /etc/ld.so.cache, four device nodes, and mount
  points for /proc, /tmp and /sandbox; nothing else of the host is visible.
  """
  base = "/tmp"  # Hidden from the host: this mount lives in our namespace.
  mount("tmpfs", base, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
  root = base + "/root"
  os.mkdir(root, 0o755)
  bound = []
  for path in ("/usr",) + tuple(extra_dirs):
    path = os.path.realpath(path)
    if not os.path.isdir(path) or any(
        path == b or path.startswith(b + "/") for b in bound):
      continue
    os.makedirs(root + path, 0o755, exist_ok=True)
    _bind(path, root + path)
    bound.append(path)
  for name in _TOP_LINKS:
    host = "/" + name
    if os.path.islink(host):
      os.symlink(os.readlink(host), root + host)
    elif os.path.isdir(host):
      os.mkdir(root + host, 0o755)
      _bind(host, root + host)
  os.makedirs(root + "/etc", 0o755)
  if os.path.exists("/etc/ld.so.cache"):
    open(root + "/etc/ld.so.cache", "wb").close()
    _bind("/etc/ld.so.cache", root + "/etc/ld.so.cache")
  os.mkdir(root + "/dev", 0o755)
  for dev in _DEVICES:
    if os.path.exists(dev):
      open(root + dev, "wb").close()
      _bind(dev, root + dev, readonly=False)
  for mount_point in ("/proc", "/tmp", "/sandbox"):
    os.mkdir(root + mount_point, 0o755)
  os.chmod(root, 0o755)
  mount(None, base, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
        "size=1m,mode=755")
  return root


def enter_fresh_root(root: str, tmpfs_mb: int, owner: int) -> str:
  """Chroots into `root` with fresh, empty /tmp and /sandbox filesystems.

  Call in a new mount namespace per run; returns the working directory,
  /sandbox, which belongs to uid `owner` and nobody else.
  """
  flags = _MS_NOSUID | _MS_NODEV
  mount("tmpfs", root + "/tmp", "tmpfs", flags, f"size={int(tmpfs_mb)}m,mode=1777")
  mount("tmpfs", root + "/sandbox", "tmpfs", flags,
        f"size={int(tmpfs_mb)}m,mode=700,uid={int(owner)},gid={int(owner)}")
  os.chroot(root)
  os.chdir("/")
  return "/sandbox"


def mount_proc() -> None:
  """Mounts a /proc that shows only the caller's pid namespace."""
  mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)


def _mapped(map_path: str, ident: int) -> bool:
  try:
    with open(map_path) as f:
      for line in f:
        inside, _, count = (int(x) for x in line.split())
        if inside <= ident < inside + count:
          return True
  except (OSError, ValueError):
    return ident == NOBODY
  return False


def usable_ids(wanted) -> list:
  """The wanted uids if this user namespace maps them, else `nobody`."""
  if all(_mapped("/proc/self/uid_map", i) and _mapped("/proc/self/gid_map", i)
         for i in wanted):
    return list(wanted)
  return [NOBODY] * len(wanted)


def drop_privileges(uid: int) -> None:
  """Irrevocably becomes uid:gid `uid`, with no supplementary groups."""
  os.setgroups([])
  os.setresgid(uid, uid, uid)
  os.setresuid(uid, uid, uid)
  if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
    raise OSError(f"could not become uid {uid}")


def apply_limits(cpu_s: int, memory_bytes: int, processes: int,
                 file_bytes: int, open_files: int = 256) -> None:
  """Hard resource limits; `processes` = 0 leaves RLIMIT_NPROC alone."""
  limits = [(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
            (resource.RLIMIT_AS, (memory_bytes, memory_bytes)),
            (resource.RLIMIT_FSIZE, (file_bytes, file_bytes)),
            (resource.RLIMIT_NOFILE, (open_files, open_files)),
            (resource.RLIMIT_CORE, (0, 0))]
  if processes:
    limits.append((resource.RLIMIT_NPROC, (processes, processes)))
  for which, value in limits:
    resource.setrlimit(which, value)


class _BlockedSocket:

  def __init__(self, *args, **kwargs):
    raise PermissionError("network access is disabled in the sandbox")


def block_sockets() -> None:
  """Weak fallback when no network namespace exists: refuses socket objects.

  Code that calls the socket syscall through ctypes still gets through; this
  only stops ordinary library use. The report names it `socket-stub`.
  """
  import _socket  # pylint: disable=g-import-not-at-top
  for module in (socket, _socket):
    for name in ("socket", "SocketType", "socketpair", "fromfd",
                 "create_connection", "create_server"):
      if hasattr(module, name):
        setattr(module, name, _BlockedSocket)


def close_all_but(keep, devnull: int) -> None:
  """Points stdio at /dev/null and closes every other descriptor not kept."""
  for fd in (0, 1, 2):
    if fd not in keep:
      os.dup2(devnull, fd)
  top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
  top = 65536 if top == resource.RLIM_INFINITY else top
  low = 3
  for fd in sorted(k for k in keep if k >= 3):
    os.closerange(low, fd)
    low = fd + 1
  os.closerange(low, top)
