"""Start a real `rbridge serve` for tests: free port, users file, log captured to a file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from rbridge.gateway import users

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("admin", "admin-password-for-tests")
SCORER = ("scorer", "scorer-password-for-tests")
PUBLISHER = ("publisher", "publisher-password-for-tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_users(path: Path) -> Path:
    users.set_user(path, *ADMIN, role="admin")
    users.set_user(path, *SCORER, role="scorer")
    users.set_user(path, *PUBLISHER, role="publisher")
    return path


def serve_command(python: str, models: Path, users_file: Path, port: int, *args: str) -> list:
    return [python, "-m", "rbridge", "serve", "--models", str(models), "--users", str(users_file),
            "--port", str(port), "--log-format", "json", *args]


def server_env(extra: dict | None = None) -> dict:
    """This environment without RBRIDGE_* settings (and without PYTHONPATH), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBRIDGE_") and k != "PYTHONPATH"}
    env.update(extra or {})
    return env


def serve_until_exit(models: Path, workdir: Path, *args: str, env: dict | None = None,
                     python: str = sys.executable, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `rbridge serve` that is expected to stop by itself (it fails at boot): exit code and
    output. A server still running after `timeout` seconds is a test failure."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = serve_command(python, models, make_users(workdir / "users.json"), free_port(), *args)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=server_env(env),
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"rbridge serve still running after {timeout} s:\n{exc.stdout}{exc.stderr}")


class Server:
    """A running server; `url`, `log_text()`, `get/post` with admin or scorer credentials."""

    def __init__(self, models: Path, workdir: Path, *args: str, env: dict | None = None,
                 wait_ready: bool = True, timeout: float = 90, python: str = sys.executable,
                 wrap: tuple = ()):
        """`wrap`: a command the server runs under (e.g. setpriv dropping root's file access)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = self.workdir / "users.json"
        if not self.users.exists():
            make_users(self.users)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"server-{self.port}.log"
        cmd = [*wrap, *serve_command(python, models, self.users, self.port, *args)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env=server_env(env))
        self.session = requests.Session()
        self.session.auth = ADMIN
        self.wait("/healthz", timeout)
        if wait_ready:
            self.wait("/readyz", timeout)

    def wait(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{path} not 200 after {timeout} s:\n{self.log_text()[-3000:]}")

    def post(self, path: str, json=None, auth=ADMIN, **kw):
        return self.session.post(self.url + path, json=json, auth=auth, timeout=kw.pop("timeout", 60), **kw)

    def get(self, path: str, auth=ADMIN, **kw):
        return self.session.get(self.url + path, auth=auth, timeout=kw.pop("timeout", 60), **kw)

    def predict(self, model: str, rows: list, **kw):
        return self.post(f"/models/{model}/predict", {"data": rows}, **kw)

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def rscript(code: str, timeout: float = 120) -> str:
    out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"Rscript failed:\n{out.stderr[-3000:]}")
    return out.stdout


def copy_models(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        for ext in (".rds", ".R", ".json"):
            if (src / f"{name}{ext}").exists():
                shutil.copy(src / f"{name}{ext}", dst / f"{name}{ext}")
    return dst


def predict_cars(model_path) -> float:
    """R's own predict() of a cars model (mpg ~ wt [+ hp] + cyl) for the tests' row {wt 2.5, hp 110, cyl 6}."""
    return float(rscript(f'm <- readRDS("{model_path}"); cat(sprintf("%.17g", predict(m, data.frame('
                         'wt = 2.5, hp = 110, cyl = factor("6", levels = c("4", "6", "8"))))))'))
