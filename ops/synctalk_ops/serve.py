"""Run the real ``tritonserver`` (bundled in the ``nvidia-pytriton`` wheel) on a rendered repository.

    python -m synctalk_ops.serve --repository build/repository/cpu

Binds 127.0.0.1 only. Clients call the edge (Envoy, ``synctalk_ops.edge``) on HTTP 8000 and gRPC 8001;
Triton itself listens behind it on 8100 and 8101 (the replica's own ports: model control, with the
API key), metrics on 8002; ``--no-edge`` puts Triton on 8000/8001 itself. Ready when both say so
(``/v2/health/ready`` through the edge); Ctrl-C or SIGTERM stops both, the edge first. Model
control, shared memory, logging and trace are restricted to callers that send this checkout's API
key (``synctalk_ops.api_key``: ``build/secrets/api_key``, or ``SYNCTALK_API_KEY``) on the replica's own
port (the edge never routes them); inference, health, metadata, configs and statistics are open.
``TritonServer`` is the same launcher as a context manager, used by the tests and the demo.
``synctalk-serve`` runs Triton as a scheduling group of its own with a larger share of the cores
than the host's other processes (``--group-nice``, ``synctalk_ops.cpu_share``), so that clients
on the same host cannot take the cores it serves them with.

Supervision (``--supervise``, ``synctalk_ops.stub_supervisor``): a model whose backend stub died
is reloaded, through the repository API on loopback, which needs ``--model-control-mode=explicit``
(all models are loaded at start, as with ``none``). What a server killed outright leaves (its
stubs, its shared memory) is cleared by ``synctalk_ops.process_tree`` and ``synctalk_ops.shm_cleanup``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from synctalk_build import monotonic_waits, paths
from synctalk_build.gpu_memory import PYTHON_SHM_DEFAULT_BYTES, PYTHON_SHM_GROWTH_BYTES
from synctalk_client.credentials import api_key_from_environment
from synctalk_common import contract
from synctalk_ops import api_key, cpu_share
from synctalk_ops.edge import DRAIN_S, Edge, Replica
from synctalk_ops.launched import Launched, PortConflict, answers, check_ports
from synctalk_ops.process_tree import orphaned_stubs
from synctalk_ops.shm_cleanup import SHM_DIR, remove_orphaned_gates, remove_orphaned_shm_regions, shm_regions
from synctalk_ops.stub_supervisor import StubSupervisor
from synctalk_preprocessing import admission

# Python-backend shared memory per stub, both profiles (synctalk_build.gpu_memory: why 16 MB)
SHM_DEFAULT_BYTES = PYTHON_SHM_DEFAULT_BYTES
SHM_GROWTH_BYTES = PYTHON_SHM_GROWTH_BYTES
# glibc returns large blocks (frames of 6 MB, batches of 50-200 MB) to the OS on free and faults
# them in again on the next request; keep them in the heap instead (served memory stays flat)
# up to 64 MB (an 8-frame batch of 1080p frames is 50 MB); larger blocks, such as onnxruntime's
# activations for 32-frame batches, still go back to the OS, so the heap cannot bloat with them
# with the edge in front (make serve): Triton itself on these loopback ports, clients on 8000/8001
REPLICA_HTTP_PORT = 8100
REPLICA_GRPC_PORT = 8101
EDGE_ADMIN_PORT = 9901
# numpy's OpenBLAS in the Python steps: one thread. Its idle workers spin after every call, and
# a step's matrices are small (the mel filter bank of 40 ms of audio): with a thread a core, the
# audio front end's stub alone burnt 0.2-0.8 of a core while a real-time stream ran (tiny models,
# 640x360, 2 cores: the server 1.64-1.85 CPU-s a second, 0.95 with one thread, same delays).
# Parallel work comes from Triton's instances and requests. The image sets the same (Dockerfile).
OPENBLAS_THREADS = "1"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(256 * 1024 * 1024)}


def apply_malloc_settings() -> None:
    """MALLOC_ENV for the calling process (glibc mallopt), so in-process baselines allocate as
    the served models do."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]))
    libc.mallopt(m_trim_threshold, int(MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]))


def pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def backend_directory(target: Path = paths.BUILD / "triton-backends") -> Path:
    """A backend directory with the Python backend, the stub for this interpreter's version and
    the project's Python-based backends (``backends/<name>/model.py``, which Triton runs with the
    Python backend for a config saying ``backend: "<name>"``)."""
    source = pytriton_root() / "tritonserver"
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    python_backend = source / "backends" / "python"
    files = {python_dir / f.name: f for f in (python_backend / "libtriton_python.so", stub)}
    files[python_dir / "triton_python_backend_utils.py"] = python_backend / "triton_python_backend_utils.py"
    for name in paths.python_based_backends():
        files[target / name / "model.py"] = paths.BACKENDS / name / "model.py"
    for dst, src in files.items():
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return target


def server_environment() -> dict:
    """LD_LIBRARY_PATH: the interpreter's libpython first (server and stub must agree), then the
    wheel's bundled libraries. LD_PRELOAD: synctalk_build.monotonic_waits. PATH: this venv's bin first, so
    the stub's python3 sees our packages."""
    env = dict(os.environ)
    libs = [
        sysconfig.get_config_var("LIBDIR") or os.path.join(sys.base_prefix, "lib"),
        str(pytriton_root().parent / "nvidia_pytriton.libs"),
    ]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    env.setdefault("OPENBLAS_NUM_THREADS", OPENBLAS_THREADS)
    # no __pycache__ written into the repository by the stubs: Triton takes a model directory that
    # changed for a changed model and reloaded input_validator at every avatar load
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in MALLOC_ENV.items():
        env.setdefault(key, value)
    # the Python backend's waits on its stubs timed on the monotonic clock: a step of the wall
    # clock would otherwise fail the requests in flight and crash the server (synctalk_build.monotonic_waits)
    return monotonic_waits.preloaded(env)


INSTALL_KEY = "install"  # TritonServer's default api_key: this checkout's (synctalk_ops.api_key)


class TritonServer(Launched):
    """A tritonserver process on loopback, started and stopped by this object.

    ``api_key``: the key of its restricted APIs (``contract.RESTRICTED_APIS``); by default the
    environment's (``SYNCTALK_API_KEY``/``_FILE``), else this checkout's, created on first use;
    None leaves them open (no launcher of the project does). Starting it exports
    ``SYNCTALK_API_KEY_FILE`` in this process where no key is set there, so the clients this
    process makes (tests, benchmarks, the demo) carry the key."""

    name = "tritonserver"
    ready_timeout_s = 180.0  # every model loads before Triton listens

    def __init__(
        self,
        repository: Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        model_control_mode: str = "none",
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        supervise: bool = False,
        api_key: str | None = INSTALL_KEY,
        models: Sequence[str] | None = None,
        group_nice: int | None = None,
    ):
        self.repository = Path(repository).resolve()
        # explicit model control: the models loaded at start (None: all of the repository; a
        # replica of a cluster loads the shared steps and the avatars placed on it)
        self.models = None if models is None else sorted(models)
        self.api_key = (checkout_api_key() if api_key == INSTALL_KEY else api_key) or None
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.supervise = supervise
        self.model_control_mode = "explicit" if supervise else model_control_mode
        self.supervisor: StubSupervisor | None = None
        self.log_path = log_path
        self.extra_args = list(extra_args)
        # None: the server shares its caller's scheduling group (the tests, the demo); a value: a
        # group of its own, with that nice value (synctalk_ops.cpu_share)
        self.group_nice = group_nice
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        return [
            str(binary),
            f"--model-repository={self.repository}",
            # the CPU profile's generators take turns (ops/synctalk_build/render_model.py, CPU_GENERATOR_RESOURCE)
            "--rate-limit=execution_count",
            f"--backend-directory={backend_directory()}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--model-control-mode={self.model_control_mode}",
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
            "--exit-on-error=true",
            # Every configuration the repository renders is complete: without this, the Python
            # backend starts one more stub per model (and per avatar loaded) only to ask it to
            # complete its configuration, which doubled the CPU profile's start (tiny models
            # 9.0 s -> 3.9 s, full 10.2 s -> 6.2 s on 2 cores)
            "--disable-auto-complete-config",
            # Strict readiness reports the whole server not ready while any model is LOADING or
            # UNLOADING (core server.cc IsReady): with live model changes (explicit control), an
            # avatar being added or removed would take the server out of a load balancer. Each
            # model's readiness stays at /v2/models/<name>/ready.
            f"--strict-readiness={'false' if self.model_control_mode == 'explicit' else 'true'}",
            "--log-verbose=0",
            *(
                ([f"--load-model={m}" for m in self.models] if self.models is not None else ["--load-model=*"])
                if self.model_control_mode == "explicit"
                else []
            ),
            *(api_key.server_args(self.api_key) if self.api_key else []),
            *self.extra_args,
        ]

    def port_roles(self, name: str = "Triton") -> dict[str, int]:
        """Its ports by what listens there (``launched.check_ports``)."""
        return {
            f"{name}'s HTTP port": self.http_port,
            f"{name}'s gRPC port": self.grpc_port,
            f"{name}'s metrics port": self.metrics_port,
        }

    def start(self) -> TritonServer:
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository {self.repository} not found (run `make render`)")
        check_ports(self.port_roles(), self.host)  # at once, not after every model has loaded
        remove_orphaned_shm_regions()  # what an earlier server killed outright left behind
        remove_orphaned_gates()
        if self.api_key and api_key_from_environment() is None:  # this process's clients carry it
            os.environ[contract.API_KEY_FILE_ENV] = str(api_key.key_file_of(self.api_key))
        self._spawn(self.command(), env=server_environment(), start_new_session=self.group_nice is not None)
        if self.group_nice is not None and (refused := cpu_share.set_group_nice(self.process.pid, self.group_nice)):
            print(f"tritonserver: {refused}", file=sys.stderr, flush=True)
        return self

    def is_ready(self) -> bool:
        return answers(f"{self.http_url}/v2/health/ready")

    def _on_ready(self) -> None:
        if self.supervise and self.supervisor is None:
            self.supervisor = StubSupervisor(self)
            self.supervisor.start()

    def _log_hint(self) -> str:
        """The server's error lines (which name the failing model) and the end of its log."""
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        errors = [
            line
            for line in lines
            if line.startswith("E") and "CudaDriverHelper" not in line and "CUDA driver" not in line
        ]
        return f"; log {self.log_path}:\n" + "\n".join(errors[-20:] + ["..."] + lines[-10:])

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.supervisor is not None:
            self.supervisor.stop()  # the server is stopped below whatever happens here
        if self.process.poll() is None:
            regions = shm_regions(self.process.pid)
            self._terminate(timeout)  # tritonserver unloads its models and exits
            for region in regions:  # what a killed server or stub could not remove
                Path(region).unlink(missing_ok=True)
        self._kill_orphaned_stubs()
        admission.gate_path(self.process.pid).unlink(missing_ok=True)  # the door's table (a few KB)
        remove_orphaned_shm_regions()
        remove_orphaned_gates()
        if self.supervisor is not None:
            self.supervisor.join(timeout=10)
        self._close_log()
        return self.process.returncode

    def _kill_orphaned_stubs(self) -> None:
        """The stubs the server left when it died (SIGKILL, the OOM killer) or was stopped while it
        still loaded its models (a replica started again, stopped with its cluster: seen living on,
        0.5 GB): killed, and their shared memory removed."""
        import psutil

        for stub in orphaned_stubs(self.process.pid):
            try:
                region = SHM_DIR / stub.cmdline()[2]
                stub.kill()
                stub.wait(10)
                region.unlink(missing_ok=True)
            except (OSError, IndexError, psutil.Error):
                continue

    def restart(self) -> TritonServer:
        """The server started again, on its ports with its models (``self.models``, which its
        owner may have changed), after its process exited by itself: the stubs the dead one left
        killed and their shared memory removed, its log continued, a new stub supervisor once it
        is ready (``wait_ready``). Triton listens only once its models are loaded, so a load
        balancer sends it nothing before."""
        if self.process is None or self.process.poll() is None:
            raise RuntimeError("restart is for a server whose process has exited")
        self.stop()
        self.supervisor = None
        self.log_mode = "ab"
        return self.start()

    def kill(self) -> None:
        """The server lost at once, as when its host or pod goes: SIGKILL to it and every backend
        stub at the same moment (a stub whose server was killed alone was seen to live on, holding
        its memory), then their shared memory removed."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return
        regions = shm_regions(self.process.pid)
        try:
            server = psutil.Process(self.process.pid)
            family = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        self.process.wait()
        psutil.wait_procs(family[1:], timeout=10)
        for region in regions:
            Path(region).unlink(missing_ok=True)


def checkout_api_key() -> str:
    """The environment's key, else this checkout's (created once)."""
    return api_key_from_environment() or api_key.install_key()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=paths.RENDERED / "cpu")
    parser.add_argument(
        "--http-port", type=int, default=8000, help="where clients call (the edge's, or Triton's with --no-edge)"
    )
    parser.add_argument(
        "--grpc-port", type=int, default=8001, help="where clients call (the edge's, or Triton's with --no-edge)"
    )
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--edge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Envoy in front of Triton (synctalk_ops.edge): clients call it; Triton listens on the replica ports",
    )
    parser.add_argument("--replica-http-port", type=int, default=REPLICA_HTTP_PORT)
    parser.add_argument("--replica-grpc-port", type=int, default=REPLICA_GRPC_PORT)
    parser.add_argument("--admin-port", type=int, default=EDGE_ADMIN_PORT, help="the edge's admin (loopback)")
    parser.add_argument("--model-control-mode", choices=("none", "explicit", "poll"), default="none")
    parser.add_argument(
        "--supervise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reload a model whose backend stub died (uses explicit model control on loopback)",
    )
    parser.add_argument(
        "--group-nice",
        type=int,
        default=cpu_share.SERVER_NICE,
        help="the server's scheduling group's nice value: its share of the cores against the host's "
        "other processes (synctalk_ops.cpu_share)",
    )
    args = parser.parse_args(argv)
    roles = (
        {
            "the edge's HTTP port (--http-port)": args.http_port,
            "the edge's gRPC port (--grpc-port)": args.grpc_port,
            "the edge's admin port (--admin-port)": args.admin_port,
            "Triton's HTTP port (--replica-http-port)": args.replica_http_port,
            "Triton's gRPC port (--replica-grpc-port)": args.replica_grpc_port,
        }
        if args.edge
        else {"Triton's HTTP port (--http-port)": args.http_port, "Triton's gRPC port (--grpc-port)": args.grpc_port}
    )
    try:
        check_ports({**roles, "Triton's metrics port (--metrics-port)": args.metrics_port})
    except PortConflict as exc:
        parser.exit(2, f"error: {exc}\n")
    server = TritonServer(
        args.repository,
        args.replica_http_port if args.edge else args.http_port,
        args.replica_grpc_port if args.edge else args.grpc_port,
        args.metrics_port,
        model_control_mode=args.model_control_mode,
        supervise=args.supervise,
        group_nice=args.group_nice,
    )
    front = None
    if args.edge:
        front = Edge(
            [Replica.of(server)],
            args.grpc_port,
            args.http_port,
            args.admin_port,
            log_path=paths.BUILD / "logs" / "edge.log",
        )
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if front is not None:
        front.start()
    announced = False

    def running() -> bool:
        return server.process.poll() is None and (front is None or front.process.poll() is None)

    while not stopping and running():
        if not announced and server.is_ready() and (front is None or front.is_ready()):
            server.wait_ready(timeout=5)  # starts the supervisor
            door = front or server
            print(f"tritonserver ready: gRPC {door.grpc_url}, HTTP {door.http_url}", flush=True)
            if front is not None:
                print(
                    f"  through the edge (Envoy; its admin on {front.admin_url}, its log {front.log_path}); "
                    f"the replica itself: gRPC {server.grpc_url}, HTTP {server.http_url}",
                    flush=True,
                )
            if server.api_key:
                print(
                    "model control and shared memory need the API key"
                    + (f" and the replica's own port ({server.grpc_url})" if front else "")
                    + f": export {contract.API_KEY_FILE_ENV}={os.environ[contract.API_KEY_FILE_ENV]} (the project's "
                    "tools read it from there)",
                    flush=True,
                )
            announced = True
        time.sleep(0.25)
    # the edge first: it takes no new request and lets those it holds finish (DRAIN_S at most),
    # then the server stops
    edge_code = front.stop(drain_s=DRAIN_S) if front is not None else 0
    if server.process.poll() is not None:
        server.stop()
        return server.process.returncode or 1
    code = server.stop() or 0
    if not stopping:  # the edge exited by itself
        return edge_code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
