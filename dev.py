#!/usr/bin/env python3
"""One entry point for people and CI, needing only Python >= 3.11.

    python3 dev.py demo [pomelo demo flags]   install what is missing, start the demo tenant
    python3 dev.py test [pytest args]         install what is missing, run the whole test suite
    python3 dev.py lint                       ruff, mypy, import-linter, schema drift check

Installs into ./.venv and re-installs only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".pomelo-installed"
#: Debian packages the test suite drives as real peers: command → package.
SYSTEM_TOOLS = {
    "sipp": "sip-tester",
    "baresip": "baresip-core",
    "espeak-ng": "espeak-ng",
    "chromium": "chromium",
}


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):
        print("Pomelo needs Python 3.11 or newer", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_installed()
    return COMMANDS[argv[0]](argv[1:])


def ensure_installed() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing Pomelo and its dependencies into .venv …", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-q", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def ensure_system_tools() -> None:
    """Install the real protocol peers the suite uses (SIPp, …) when apt can: tests that need a
    missing one are skipped with a reason, so say loudly what is missing otherwise."""
    missing = sorted({pkg for cmd, pkg in SYSTEM_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    can_apt = shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    if can_apt:
        print(f"installing {', '.join(missing)} with apt-get …", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False, env=env)
    still = sorted({pkg for cmd, pkg in SYSTEM_TOOLS.items() if shutil.which(cmd) is None})
    if still:
        print(
            f"WARNING: missing {', '.join(still)} (install with apt); the tests needing them "
            "will be skipped",
            file=sys.stderr,
            flush=True,
        )


def demo(args: list[str]) -> int:
    return run([str(BIN / "pomelo"), "demo", *args])


def test(args: list[str]) -> int:
    ensure_system_tools()
    code = run([str(BIN / "python"), "-m", "pytest", *args])
    return 1 if code == 5 else code  # "no tests collected" is a failure, not a pass


def lint(_args: list[str]) -> int:
    steps = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
        [str(BIN / "lint-imports")],
    ]
    failed = [Path(step[0]).name for step in steps if run(step) != 0]
    if failed:
        print(f"lint failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run(cmd: list[str]) -> int:
    try:
        return subprocess.run(cmd, cwd=ROOT, check=False).returncode
    except KeyboardInterrupt:
        return 130


COMMANDS = {"demo": demo, "test": test, "lint": lint}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
