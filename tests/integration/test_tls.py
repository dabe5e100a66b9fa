"""HTTPS end to end on both fronts that serve it (granian, the default, and gunicorn): a
self-signed certificate made in the test, one gateway process, real R, and a graceful drain on
SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from serverproc import free_port, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]

USER, PASSWORD = "tls-user", "tls-Pa55word-for-tests"
SLEEPER_R = "score <- function(model, newdata) { Sys.sleep(newdata$wait[1]); newdata$wait * 0 + 1 }\n"
SLEEPER_JSON = '{"version": "sleeper-1", "schema": {"columns": [{"name": "wait", "type": "numeric"}]}}'


def self_signed(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsServer:
    def __init__(self, work: Path, models: Path, cert: Path, key: Path, *args: str):
        self.port, self.cert = free_port(), str(cert)
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = work / f"tls-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RBRIDGE_")}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rbridge", "serve", "--models", str(models), "--users", str(work / "users.json"),
             "--port", str(self.port), "--certfile", str(cert), "--keyfile", str(key), "--log-format", "json",
             *args], stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=work)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()
            try:
                if requests.get(self.url + "/readyz", verify=self.cert, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"not ready:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
        return self.proc.wait()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("tls")
    models = work / "models"
    models.mkdir()
    expected = float(rscript(f'''
      m <- lm(mpg ~ wt + hp, data = mtcars); saveRDS(m, "{models}/cars.rds")
      saveRDS(structure(list(), class = "sleeper"), "{models}/sleeper.rds")
      cat(sprintf("%.17g", predict(m, data.frame(wt = 2.5, hp = 110))))'''))
    (models / "sleeper.R").write_text(SLEEPER_R)
    (models / "sleeper.json").write_text(SLEEPER_JSON)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBRIDGE_")}
    subprocess.run([sys.executable, "-m", "rbridge", "user", "add", USER, "--users", str(work / "users.json"),
                    "--password-stdin"], input=PASSWORD + "\n", text=True, check=True, env=env,
                   capture_output=True)
    cert, key = self_signed(work)
    return work, models, cert, key, expected


FRONTS = pytest.mark.parametrize("front", ["granian", "gunicorn"])


@FRONTS
def test_https_end_to_end(setup, front):
    work, models, cert, key, expected = setup
    server = TlsServer(work, models, cert, key, "--workers", "1", "--max-body", "65536", "--http-server", front)
    try:
        token = requests.post(server.url + "/login", json={"username": USER, "password": PASSWORD},
                              verify=server.cert, timeout=30).json()["access_token"]
        r = requests.post(server.url + "/models/cars/predict", json={"data": [{"wt": 2.5, "hp": 110}]},
                          headers={"Authorization": f"Bearer {token}"}, verify=server.cert, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0] == pytest.approx(expected, rel=1e-12)
        assert r.headers["Server"] == "rbridge"                          # no granian or gunicorn banner
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        basic = requests.post(server.url + "/models/cars/predict", json={"data": [{"wt": 2.5, "hp": 110}]},
                              auth=(USER, PASSWORD), verify=server.cert, timeout=30)
        assert basic.status_code == 200
        assert requests.get(server.url + "/models", verify=server.cert, timeout=10).status_code == 401
        too_big = requests.post(server.url + "/models/cars/predict", data=(b" " * 4096 for _ in range(40)),
                                auth=(USER, PASSWORD), headers={"Content-Type": "application/json"},
                                verify=server.cert, timeout=30)                  # chunked, over --max-body
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
        with pytest.raises(requests.exceptions.SSLError):                # untrusted certificate
            requests.get(server.url + "/healthz", timeout=10)
        with pytest.raises(requests.RequestException):                   # no plain HTTP on the port
            requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10).raise_for_status()
        # exactly one gateway process under the front's supervisor; the R workers are its children
        gateways = psutil.Process(server.proc.pid).children()
        assert len(gateways) == 1
        assert any("rbridge.worker" in " ".join(p.cmdline()) for p in gateways[0].children())
    finally:
        assert server.stop() == 0
    log = server.log_text()
    assert PASSWORD not in log and token not in log
    if front == "gunicorn":
        assert '"logger":"gunicorn.error"' in log                        # gunicorn logs through ours


@FRONTS
def test_sigterm_drains_in_flight_requests_and_readyz_turns_503(setup, front):
    work, models, cert, key, _ = setup
    server = TlsServer(work, models, cert, key, "--workers", "1", "--graceful-timeout", "20", "--http-server", front)
    gateway = psutil.Process(server.proc.pid).children()[0]
    r_workers = [p for p in gateway.children() if "rbridge.worker" in " ".join(p.cmdline())]
    probe = requests.Session()        # (verify per call: REQUESTS_CA_BUNDLE would beat Session.verify)
    assert probe.get(server.url + "/readyz", verify=server.cert, timeout=10).status_code == 200   # kept alive
    result = {}

    def slow():
        result["r"] = requests.post(server.url + "/models/sleeper/predict", json={"data": [{"wait": 3}]},
                                    auth=(USER, PASSWORD), verify=server.cert, timeout=60)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.5)                                 # the request is in R now
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = probe.get(server.url + "/readyz", verify=server.cert, timeout=10)
    assert ready.status_code == 503 and "draining" in ready.json()["reason"]
    t.join(30)
    assert result["r"].status_code == 200, result["r"].text      # finished, not cut off
    assert server.stop() == 0
    assert time.monotonic() - started < 15
    for p in r_workers:
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE


@FRONTS
def test_unreadable_certificate_is_a_config_error(setup, tmp_path, front):
    work, models, _, _, _ = setup
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBRIDGE_")}
    out = subprocess.run([sys.executable, "-m", "rbridge", "serve", "--models", str(models), "--users",
                          str(work / "users.json"), "--port", str(free_port()), "--certfile",
                          str(tmp_path / "bad.pem"), "--keyfile", str(tmp_path / "bad.pem"), "--http-server", front],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "cannot load the TLS certificate" in out.stderr
