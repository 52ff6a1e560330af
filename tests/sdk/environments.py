"""Each broker's own Python SDK in a virtual environment of its own, to drive the fakes.

The SDKs are test tools only (``app/`` never imports them) and their pins clash with each
other and with ours, so each gets its own environment, built from
``tests/sdk/<name>/requirements.txt`` and cached outside the checkout (CI clones afresh
every run) under ``$BROKERAGE_SDK_VENV_DIR`` or ``~/.cache/brokerage-gateway/sdk-venvs``,
keyed by a hash of the requirements and the Python version: a changed pin builds a new one.
``scripts/test`` builds them all before pytest runs (``scripts/sdk-venvs``).

A conformance test starts a fake in-process (real HTTP on localhost), then runs a script
under the SDK's interpreter (``run_sdk_script``) that makes the SDK's calls against the
fake and prints one JSON object on its last line of output: what each call returned, or the
error it raised. The test asserts on that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SDK_ROOT = Path(__file__).resolve().parent


def cache_root() -> Path:
    configured = os.environ.get("BROKERAGE_SDK_VENV_DIR")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "brokerage-gateway" / "sdk-venvs"


def sdk_names() -> list[str]:
    return sorted(p.parent.name for p in SDK_ROOT.glob("*/requirements.txt"))


def _venv_dir(name: str) -> Path:
    requirements = (SDK_ROOT / name / "requirements.txt").read_bytes()
    digest = hashlib.sha256(requirements + sys.version.encode()).hexdigest()[:12]
    return cache_root() / f"{name}-{digest}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sdk_python(name: str) -> Path:
    """The interpreter of ``name``'s environment, built first if it is not cached.

    Raises ``subprocess.CalledProcessError`` when the environment cannot be built (the
    package index unreachable, a pin that does not resolve): the conformance test fails,
    it is never skipped.
    """
    venv = _venv_dir(name)
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if ready.exists():
        return python
    with _locked(venv.with_suffix(".lock")):
        if ready.exists():
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603 - our own interpreter and requirements file
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(SDK_ROOT / name / "requirements.txt"),
            ],
            check=True,
        )
        ready.touch()
    return python


def run_sdk_script(
    name: str, script: str, env: Mapping[str, str], *, timeout: float = 120
) -> dict[str, Any]:
    """Run ``tests/sdk/<name>/<script>`` under the SDK's interpreter; return the JSON object
    it printed last. ``env`` is added to a minimal environment (never the test process's
    secrets)."""
    python = sdk_python(name)
    completed = subprocess.run(  # noqa: S603 - the SDK environment's interpreter
        [str(python), str(SDK_ROOT / name / script)],
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(cache_root())),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or not lines:
        raise AssertionError(
            f"{name}/{script} exited {completed.returncode}\n"
            f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    """Build every SDK environment (``scripts/sdk-venvs``)."""
    for name in sdk_names():
        print(f"sdk environment {name}: {sdk_python(name).parent.parent}")  # noqa: T201


if __name__ == "__main__":
    main()
