"""Run untrusted generated Python code in an isolated, resource-limited process.

HumanEval (Chen et al. 2021, "Evaluating Large Language Models Trained on Code") scores a model
by *executing* its completions against unit tests, so model output runs as a program. The paper
ran it in a gVisor container; here the same guarantees come from stock Linux mechanisms:

* a separate process in its own session, killed as a whole process group at the end;
* a new PID namespace (``unshare --pid --fork --mount-proc``): the bootstrap is PID 1 there, so
  when it exits the kernel kills every process the code left behind (fork storms included), and
  the evaluator's PIDs are invisible to the code;
* a new network namespace (``unshare --net``): only a loopback device that is down, so no
  connection can leave, not even to 127.0.0.1 of the host;
* a new mount namespace with a read-only view of every mount except a throw-away working
  directory (``tempfile``), which is also ``$HOME`` and ``$TMPDIR``;
* as root: the code runs under a fresh unprivileged uid (a different one per run), which makes
  ``RLIMIT_NPROC`` a per-run process cap and file permissions a second wall around the host;
* ``resource`` limits: address space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), processes
  (``RLIMIT_NPROC``), file size (``RLIMIT_FSIZE``), no core dumps; a wall-clock deadline; stdin
  is ``/dev/null``; stdout and stderr are capped.

Where the machine cannot offer a mechanism (no ``unshare``, not root, no namespaces) the sandbox
degrades and warns; :func:`isolation_report` says what is active, so a missing layer is never
silent. This module imports only the standard library: it is also the bootstrap program that
runs inside the namespaces (see ``_boot`` and the ``__main__`` block).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import math
import os
import re
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

SandboxStatus = str  # "passed" | "failed" | "timeout" | "error"

_UID_BASE = 200_000  # fresh uids are drawn from [_UID_BASE, _UID_BASE + 2**20): no passwd entry needed
_UID_SPAN = 2**20
_PROGRAM = "main.py"
_PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    ``status`` is "passed" (exit code 0 within the limits), "failed" (non-zero exit, an uncaught
    exception, a signal, a refused resource), "timeout" (wall-clock deadline or CPU limit hit) or
    "error" (the sandbox itself could not start the code; not the code's fault).
    """

    status: SandboxStatus
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class IsolationReport:
    """Which isolation layers :func:`run_sandboxed` uses on this machine (probed once)."""

    unshare: bool  # the util-linux ``unshare`` binary runs
    pid_namespace: bool  # leftovers die with the namespace; host PIDs invisible
    network_namespace: bool  # no network, loopback included
    read_only_view: bool  # every mount read-only except the working directory
    unprivileged_user: bool  # code runs under a fresh uid (needs root)
    process_limit: bool  # RLIMIT_NPROC caps the code's processes (only with a fresh uid)
    resource_limits: bool = True  # RLIMIT_AS / RLIMIT_CPU / RLIMIT_FSIZE (always)
    interpreter: str = sys.executable  # the Python that runs the code
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fully_isolated(self) -> bool:
        return all((self.pid_namespace, self.network_namespace, self.read_only_view,
                    self.unprivileged_user, self.process_limit))


def run_sandboxed(
    code: str,
    *,
    timeout_s: float = 10,
    memory_mb: int = 1024,
    cpu_s: float | None = None,
    network: bool = False,
    max_processes: int = 32,
    max_output_bytes: int = 64 * 1024,
    max_file_mb: int = 64,
    stdin: str = "",
) -> SandboxResult:
    """Run ``code`` as ``python -I main.py`` in a throw-away directory under every available limit.

    ``cpu_s`` (per process) defaults to ``timeout_s``. ``network=True`` keeps the host network
    (no network namespace). ``stdin`` is what the code reads on its standard input (then EOF).
    Never raises for anything the code does; bad arguments raise ValueError.
    """
    if not isinstance(code, str):
        raise ValueError(f"code must be a str of Python source, got {type(code).__name__}")
    if not isinstance(stdin, str) or len(stdin.encode()) > 4096:
        raise ValueError("stdin must be a str of at most 4096 bytes (it is written before the code starts)")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    if cpu_s is not None and not cpu_s > 0:
        raise ValueError(f"cpu_s must be > 0 seconds or None (= timeout_s), got {cpu_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb={memory_mb} is too small to start Python; use at least 64")
    if max_processes < 1 or max_output_bytes < 0 or max_file_mb < 1:
        raise ValueError("max_processes and max_file_mb must be >= 1 and max_output_bytes >= 0, got "
                         f"{max_processes}, {max_file_mb}, {max_output_bytes}")
    report = isolation_report()
    for message in report.warnings:
        warnings.warn(f"sandbox degraded: {message}", RuntimeWarning, stacklevel=2)
    limits = {
        "memory_bytes": int(memory_mb) * 2**20,
        "cpu_s": math.ceil(cpu_s if cpu_s is not None else timeout_s),
        "max_processes": int(max_processes),
        "max_file_bytes": int(max_file_mb) * 2**20,
    }
    return _run(code, report, limits, timeout_s, network, max_output_bytes, stdin)


def isolation_report() -> IsolationReport:
    """Which isolation layers work on this machine, probed once per process (thread-safe).

    Every combination, strongest first, is probed by running a real program through the full
    path, so a layer is reported only if it works end to end here.
    """
    with _REPORT_LOCK:
        return _probe_isolation()


_REPORT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _probe_isolation() -> IsolationReport:
    notes: list[str] = []
    is_root = os.geteuid() == 0
    has_unshare = shutil.which("unshare") is not None and _command_works(["unshare", "--fork", "true"])
    if not has_unshare:
        notes.append("`unshare` (util-linux) missing or not permitted: no PID, network or mount "
                     "namespace; leftovers are killed through the process group only")
    pid_ns = has_unshare and _command_works(_unshare_prefix(pid=True, net=False, as_root=is_root) + ["true"])
    net_ns = has_unshare and _command_works(_unshare_prefix(pid=False, net=True, as_root=is_root) + ["true"])
    if has_unshare and not pid_ns:
        notes.append("no PID namespace: processes that escape the process group may outlive the run")
    if has_unshare and not net_ns:
        notes.append("no network namespace: sandboxed code can reach the network")
    if not is_root:
        notes.append("not root: no fresh uid, so RLIMIT_NPROC cannot cap a fork storm (the PID "
                     "namespace, if any, still removes it at the end)")
    base = IsolationReport(unshare=has_unshare, pid_namespace=pid_ns, network_namespace=net_ns,
                           read_only_view=False, unprivileged_user=False, process_limit=False)
    wanted = f"{sys.version_info[0]} {sys.version_info[1]}"
    failures = []
    for read_only in ([True, False] if pid_ns else [False]):
        for fresh_uid in ([True, False] if is_root else [False]):
            for interpreter in (_interpreters() if fresh_uid else [sys.executable]):
                trial = dataclasses.replace(base, read_only_view=read_only, interpreter=interpreter,
                                            unprivileged_user=fresh_uid, process_limit=fresh_uid)
                probe = _run("import sys; print(*sys.version_info[:2])", trial, _PROBE_LIMITS,
                             _PROBE_TIMEOUT_S, network=False, max_output_bytes=1024)
                if not probe.passed:
                    failures.append(f"{interpreter} (read-only view {read_only}, fresh uid "
                                    f"{fresh_uid}): {probe.stderr.strip()[-200:]}")
                    continue
                if pid_ns and not read_only:
                    notes.append("read-only view of the file system failed; writes outside the "
                                 "working directory are limited by file permissions only")
                if is_root and not fresh_uid:
                    notes.append("cannot run code under a fresh uid: no process cap, and the code "
                                 "has root's file permissions" + ("" if pid_ns else
                                 " and can signal the evaluator"))
                if probe.stdout.strip() != wanted:
                    notes.append(f"sandboxed code runs under {interpreter} (Python "
                                 f"{probe.stdout.strip()}), not the evaluator's Python {wanted}")
                return dataclasses.replace(trial, warnings=tuple(notes))
    notes.append("no configuration could start a program: " + " | ".join(failures))
    return dataclasses.replace(base, warnings=tuple(notes))


def _interpreters() -> list[str]:
    """Interpreters to try for an unprivileged uid: ours first (it may sit in a private home
    directory, e.g. pyenv under /root), then the system's."""
    found = [sys.executable]
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        for folder in ("/usr/bin", "/usr/local/bin", "/bin"):
            path = os.path.join(folder, name)
            if os.access(path, os.X_OK) and os.path.realpath(path) not in map(os.path.realpath, found):
                found.append(path)
    return found


_PROBE_LIMITS = {"memory_bytes": 1024 * 2**20, "cpu_s": 10, "max_processes": 8,
                 "max_file_bytes": 2**20}


def _command_works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=_PROBE_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unshare_prefix(*, pid: bool, net: bool, as_root: bool) -> list[str]:
    cmd = ["unshare"]
    if not as_root:  # an unprivileged user namespace gives the capabilities for the others
        cmd += ["--user", "--map-root-user"]
    if pid:  # --mount-proc implies a mount namespace with private propagation
        cmd += ["--pid", "--fork", "--mount-proc", "--kill-child"]
    if net:
        cmd += ["--net"]
    return cmd + ["--"]


def _run(code: str, report: IsolationReport, limits: dict, timeout_s: float, network: bool,
         max_output_bytes: int, stdin: str = "") -> SandboxResult:
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="sandbox-")
    status_r, status_w = os.pipe()
    try:
        program = os.path.join(workdir, _PROGRAM)
        with open(program, "w", encoding="utf-8") as handle:
            handle.write(code)
        uid = None
        if report.unprivileged_user:
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
            os.chmod(program, 0o444)
        spec = {"workdir": workdir, "uid": uid, "python": report.interpreter, "status_fd": status_w,
                "read_only_view": report.read_only_view, "nproc": report.process_limit, **limits}
        prefix: list[str] = []
        if report.pid_namespace or (report.network_namespace and not network):
            prefix = _unshare_prefix(pid=report.pid_namespace,
                                     net=report.network_namespace and not network,
                                     as_root=os.geteuid() == 0)
        cmd = prefix + [sys.executable, "-I", "-B", os.path.abspath(__file__), json.dumps(spec)]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                                    env=_child_env(workdir), start_new_session=True, pass_fds=(status_w,))
        except OSError as exc:
            return SandboxResult("error", None, "", f"sandbox could not start: {exc}",
                                 time.monotonic() - start)
        if stdin:  # a few bytes: the pipe's buffer holds them, so this never blocks
            try:
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
            except BrokenPipeError:  # the code ended without reading; close() closed the pipe anyway
                pass
        os.close(status_w)
        status_w = -1
        streams, timed_out = _collect(proc, status_r, start + timeout_s, max_output_bytes)
        stdout, stdout_cut = _decode(*streams["stdout"])
        stderr, stderr_cut = _decode(*streams["stderr"])
        state = _parse_status(streams["status"][0])
        returncode = state.get("returncode")
        if timed_out:
            status = "timeout"
        elif "setup_error" in state or "started" not in state or returncode is None:
            status = "error"
            stderr += f"\n[sandbox] {state.get('setup_error', 'the bootstrap did not report')}" \
                      f" (bootstrap exit {proc.returncode})"
        elif returncode == 0:
            status = "passed"
        elif returncode == -signal.SIGXCPU:
            status = "timeout"
        else:
            status = "failed"
        return SandboxResult(status, returncode, stdout, stderr, time.monotonic() - start,
                             stdout_cut, stderr_cut)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _parse_status(data: bytes) -> dict:
    """Merge the bootstrap's JSON status lines; a line cut off by a kill is ignored."""
    state: dict = {}
    for line in data.decode(errors="replace").splitlines():
        try:
            state.update(json.loads(line))
        except ValueError:
            continue
    return state


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _collect(proc: subprocess.Popen, status_r: int, deadline: float, cap: int):
    """Read stdout, stderr and the bootstrap's status pipe until all close or the deadline passes.

    Output beyond ``cap`` bytes per stream is read and dropped, so the code never blocks on a full
    pipe. When the top process ends, its process group is killed before it is reaped (the group
    id cannot be reused meanwhile), then the pipes get a short grace period to drain.
    """
    selector = selectors.DefaultSelector()
    buffers = {"stdout": [bytearray(), 0], "stderr": [bytearray(), 0], "status": [bytearray(), 0]}
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    selector.register(status_r, selectors.EVENT_READ, "status")
    timed_out = False
    finished_at = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if finished_at is None and now >= deadline:
                timed_out = True
                break
            if finished_at is not None and now >= finished_at + 1.0:
                break
            if finished_at is None and _has_exited(proc.pid):
                _kill_group(proc.pid)
                finished_at = now
            for key, _ in selector.select(timeout=0.05):
                name = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[name]
                limit = cap if name != "status" else 65536
                room = max(0, limit - len(buffer[0]))
                buffer[0] += chunk[:room]
                buffer[1] += len(chunk) - min(room, len(chunk))
    finally:
        selector.close()
        _kill_group(proc.pid)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return {name: (bytes(data), dropped) for name, (data, dropped) in buffers.items()}, timed_out


def _has_exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _decode(data: bytes, dropped: int) -> tuple[str, bool]:
    text = data.decode("utf-8", errors="replace")
    if dropped:
        text += f"\n[sandbox] output truncated: {dropped} more bytes dropped"
    return text, bool(dropped)


# --------------------------------------------------------------------------------------------
# Bootstrap: runs as ``python -I -B sandbox.py SPEC`` inside the namespaces (PID 1 there).
# --------------------------------------------------------------------------------------------

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 1024, 2048, 4096
_MS_REC, _MS_RELATIME, _MS_STRICTATIME = 16384, 1 << 21, 1 << 24
_MOUNT_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC,
                "noatime": _MS_NOATIME, "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME,
                "strictatime": _MS_STRICTATIME}


def _mount(source: str | None, target: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    encoded = source.encode() if source is not None else None
    if libc.mount(encoded, target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount({source!r}, {target!r}): {os.strerror(errno)}")


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, per-mount flags to preserve) for every mount, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # "\040"
            flags = 0
            for option in fields[5].split(","):
                flags |= _MOUNT_FLAGS.get(option, 0)
            points.append((point, flags))
    return points


def _read_only_view(writable: str) -> None:
    """Remount every mount read-only (this mount namespace only), except ``writable``."""
    _mount(writable, writable, _MS_BIND | _MS_REC)
    for point, flags in _mount_points():
        if point == writable:
            continue
        _mount(None, point, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | flags)


def _limit_resources(spec: dict) -> None:
    cpu = int(spec["cpu_s"])
    resource.setrlimit(resource.RLIMIT_AS, (spec["memory_bytes"], spec["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["max_file_bytes"], spec["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if spec["nproc"]:
        resource.setrlimit(resource.RLIMIT_NPROC, (spec["max_processes"], spec["max_processes"]))
    os.nice(10)  # a runaway sample yields the CPU to the evaluator


def _boot(spec: dict) -> int:
    status = os.fdopen(spec["status_fd"], "w", buffering=1)

    def report(**entry) -> None:
        status.write(json.dumps(entry) + "\n")

    workdir = spec["workdir"]
    try:
        if spec["read_only_view"]:
            _read_only_view(workdir)
    except OSError as exc:
        report(setup_error=f"read-only view: {exc}")
        return 125
    exec_r, exec_w = os.pipe()  # close-on-exec: EOF without data means the exec succeeded
    pid = os.fork()
    if pid == 0:
        try:
            os.close(exec_r)
            status.close()
            os.chdir(workdir)
            _limit_resources(spec)
            if spec["uid"] is not None:
                os.setgroups([])
                os.setgid(spec["uid"])
                os.setuid(spec["uid"])
            python = spec["python"]
            os.execve(python, [python, "-I", "-B", _PROGRAM], dict(os.environ))
        except BaseException as exc:  # noqa: BLE001 - everything must reach the evaluator
            os.write(exec_w, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(125)
    os.close(exec_w)
    failure = b""
    while chunk := os.read(exec_r, 4096):
        failure += chunk
    os.close(exec_r)
    if failure:
        os.waitpid(pid, 0)
        report(setup_error=f"starting the program: {failure.decode(errors='replace')}")
        return 125
    report(started=True)
    _, wait_status = os.waitpid(pid, 0)
    report(returncode=os.waitstatus_to_exitcode(wait_status))
    return 0


if __name__ == "__main__":
    sys.exit(_boot(json.loads(sys.argv[1])))
