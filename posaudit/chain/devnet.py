"""A local anvil devnet: started on loopback on a free port, stopped cleanly.

The platform binary from ``node_modules/@foundry-rs/anvil-linux-*`` is run directly,
because killing the npm wrapper leaves the real node running.

A devnet with a state file can be stopped or killed and started again on the same
port: it comes back with the state last written to the file, as a node restarted
after a failure does.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from posaudit.exceptions import DevnetError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def anvil_binary() -> Path:
    """Locate the anvil platform binary: ``$POSAUDIT_ANVIL`` or ``node_modules``.

    Raises:
        DevnetError: No binary found; ``make setup`` installs it.
    """
    arch = _ARCH.get(platform.machine(), platform.machine())
    default = PROJECT_ROOT / f"node_modules/@foundry-rs/anvil-linux-{arch}/bin/anvil"
    binary = Path(os.environ.get("POSAUDIT_ANVIL", default))
    if not binary.is_file():
        raise DevnetError(
            f"anvil not found at {binary}; run `make setup` or set POSAUDIT_ANVIL."
        )

    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Devnet:
    """An anvil process owned by this object.

    Args:
        port: Port to listen on; a free one when omitted.
        block_time: Seconds between mined blocks; automine when omitted.
        accounts: Number of funded, unlocked dev accounts.
        state: File to load state from and dump it to on exit (``--state``).
        state_interval: Whole seconds between two dumps of the state to ``state``
            while the node runs (``--state-interval``, at least 1); a node killed
            with SIGKILL comes back with the last of them. Only on exit when
            omitted.
        startup_timeout: Seconds to wait for the node to answer.

    Raises:
        ValueError: ``state_interval`` is given without ``state``, or is below 1.
    """

    def __init__(
        self,
        port: int | None = None,
        block_time: float | None = None,
        accounts: int = 10,
        state: Path | None = None,
        state_interval: int | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if state_interval is not None and state is None:
            raise ValueError(
                f"state_interval is {state_interval} s but no state file is given;"
                " pass state as well."
            )

        if state_interval is not None and state_interval < 1:
            raise ValueError(f"state_interval is {state_interval} s; want 1 or more.")

        self.port = port or free_port()
        self.block_time = block_time
        self.accounts = accounts
        self.state = state
        self.state_interval = state_interval
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        """HTTP JSON-RPC endpoint of the node."""
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = [
            str(anvil_binary()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--accounts",
            str(self.accounts),
            "--silent",
        ]
        if self.block_time is not None:
            command += ["--block-time", str(self.block_time)]

        if self.state is not None:
            command += ["--state", str(self.state)]

        if self.state_interval is not None:
            command += ["--state-interval", str(self.state_interval)]

        return command

    def start(self) -> str:
        """Start anvil and wait until it answers ``eth_chainId``.

        After :meth:`stop` or :meth:`kill` it starts again on the same port, from
        what the state file holds (a fresh chain without one).

        Returns:
            The RPC URL.

        Raises:
            DevnetError: anvil exited or did not answer in time.
        """
        if self._process is not None:
            return self.rpc_url

        # Another node on the port would answer the readiness probe in our place.
        if _listening(self.port):
            raise DevnetError(f"Port {self.port} on 127.0.0.1 is already in use.")

        self._process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stream = self._process.stderr
                stderr = stream.read().decode(errors="replace") if stream else ""
                self._process = None
                raise DevnetError(f"anvil exited at start-up: {stderr.strip()[-500:]}")

            if self._answers():
                log.info("devnet started", extra={"rpc_url": self.rpc_url})
                return self.rpc_url

            time.sleep(0.05)

        self.stop()
        raise DevnetError(
            f"anvil did not answer on {self.rpc_url} within {self.startup_timeout} s."
        )

    def _answers(self) -> bool:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).encode()
        request = urllib.request.Request(
            self.rpc_url, body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as reply:
                return "result" in json.load(reply)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil with SIGTERM (so it dumps ``state``), SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return

        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

        if process.stderr is not None:
            process.stderr.close()

        log.info("devnet stopped", extra={"rpc_url": self.rpc_url})

    def kill(self) -> None:
        """Kill anvil with SIGKILL, as a crash would: what it mined since its last
        state dump is lost."""
        process, self._process = self._process, None
        if process is None:
            return

        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()

        log.info("devnet killed", extra={"rpc_url": self.rpc_url})

    def restart(self, crash: bool = False) -> str:
        """Stop anvil and start it again on the same port, from its state file.

        Args:
            crash: Kill it with SIGKILL (it comes back with its last periodic dump)
                rather than stop it with SIGTERM (it dumps its whole state first).

        Returns:
            The RPC URL, unchanged.

        Raises:
            DevnetError: anvil did not start again.
        """
        if crash:
            self.kill()
        else:
            self.stop()

        return self.start()

    def __enter__(self) -> Devnet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
