#!/usr/bin/env python3
"""R Bridge against plumber: one command, three servers, the same model and payload, interleaved.

    .venv/bin/python bench/run.py            # the full matrix (about 25 minutes on 2 cores)
    .venv/bin/python bench/run.py --smoke    # the whole harness end to end in about 10 seconds (CI)

For every model it starts, on 127.0.0.1 and free ports chosen now:
  rbridge           `rbridge serve --models <dir> --workers 2`: the default front, granian (auth: a bearer
                    token from /login, an API key, or HTTP Basic)
  rbridge-waitress  the same with --http-server waitress (the front before granian), as a peer
  rbridge-https     the default front over TLS (a self-signed certificate made here), for the https scenario
  plumber-1         bench/plumber/plumber.R in one R process (Debian's r-cran-plumber)
  plumber-nginx     the same API in N=2 R processes behind nginx (bench/nginx.conf.template)
checks that every server's predictions equal R's own predict() for each payload (computed by
bench/train_models.R), then loads each with wrk (bench/wrk_post.lua), bounded in time, repeating the rounds
(A, B, C, A, B, C, ...) and reporting medians of requests/s, p50 and p99 and ratios against both plumbers and the waitress front,
and for rbridge servers the gateway's own CPU time per request (its processes' user + system time over
the run, R workers left out, divided by the requests answered).
It also measures the R-only floor (bench/floor.R). Results: a table on stdout, JSON in bench/results/<timestamp>.json
and a markdown table in bench/results/latest.md. See bench/README.md.
"""
from __future__ import annotations

import argparse
import atexit
import base64
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SERVERS = ("rbridge", "rbridge-waitress", "rbridge-https", "plumber-1", "plumber-nginx")
DEFAULT_SERVERS = ("rbridge", "rbridge-waitress", "plumber-1", "plumber-nginx")   # rbridge-https: when asked
MODEL_NAMES = {"lm": "bench_lm", "rf": "bench_rf", "ranger": "bench_ranger"}
REL_TOL = 1e-9


class BenchError(Exception):
    """A failure that makes the run meaningless: reported and the process exits non-zero."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Child processes: every one in its own session, all of them (and their descendants) killed on exit.
# --------------------------------------------------------------------------------------------------------------
class Children:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, Path | None]] = []
        self.lock = threading.Lock()

    def start(self, name: str, argv: list[str], log_path: Path | None, env: dict | None = None,
              cwd: Path | None = None, stdin_data: bytes | None = None) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                                 start_new_session=True)
        except FileNotFoundError as e:
            raise BenchError(f"{name}: cannot run {argv[0]!r}: {e}") from None
        finally:
            if log_path:
                out.close()
        if stdin_data is not None:
            p.stdin.write(stdin_data)
            p.stdin.close()
        with self.lock:
            self.procs.append((name, p, log_path))
        return p

    @staticmethod
    def _tree(pid: int) -> list[int]:
        try:
            import psutil
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except Exception:
            return []

    def stop(self, p: subprocess.Popen, grace: float = 5.0) -> None:
        self.stop_many([p], grace)

    def stop_many(self, procs: list[subprocess.Popen], grace: float = 5.0) -> None:
        """SIGTERM every process's session at once, wait up to `grace` seconds in all, then SIGKILL what is left
        (and any descendant that left the session)."""
        descendants: list[int] = []
        for p in procs:
            if p.poll() is None:
                descendants += self._tree(p.pid)
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    try:
                        p.terminate()
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)     # anything left in its session
            except (ProcessLookupError, PermissionError):
                pass
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop_all(self) -> None:
        with self.lock:
            procs, self.procs = self.procs, []
        try:
            self.stop_many([p for _, p, _ in procs], grace=5.0)
        except Exception:
            pass

    def forget(self, p: subprocess.Popen) -> None:
        with self.lock:
            self.procs = [t for t in self.procs if t[1] is not p]


CHILDREN = Children()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def tail(path: Path | None, n: int = 40) -> str:
    if not path or not path.exists():
        return "(no log)"
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return "\n".join("    | " + ln for ln in lines) or "    | (empty log)"


_used_ports: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise BenchError("no free port on 127.0.0.1")


_NO_VERIFY = ssl._create_unverified_context()      # rbridge-https's certificate is self-signed


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_NO_VERIFY) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def run_checked(argv: list[str], what: str, timeout: float, **kw) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(argv, capture_output=True, timeout=timeout, **kw)
    except FileNotFoundError as e:
        raise BenchError(f"{what}: cannot run {argv[0]!r}: {e}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: did not finish in {timeout:.0f}s") from None
    if cp.returncode != 0:
        out = (cp.stdout + cp.stderr).decode(errors="replace").strip().splitlines()[-30:]
        raise BenchError(f"{what} failed (exit {cp.returncode}):\n" + "\n".join("    | " + ln for ln in out))
    return cp


# --------------------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    url: str                       # predict URL
    ready_url: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    auth: str = ""                 # Authorization header value for wrk and the checks
    started: float = 0.0
    ready_s: float | None = None
    extra_ready: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)
    user: str = ""                 # rbridge only: the bench user, for /login or HTTP Basic
    password: str = ""
    port: int = 0
    api_key_file: Path | None = None

    def is_rbridge(self) -> bool:
        return self.name.startswith("rbridge")

    def gateway_cpu_seconds(self) -> float:
        """User + system CPU of the server's own processes (main and gateway), R workers left out."""
        total = 0.0
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                for proc in [root] + root.children(recursive=True):
                    if any("rbridge.worker" in part for part in proc.cmdline()):
                        continue
                    t = proc.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def failed(self) -> str | None:
        for p, lg in zip(self.procs, self.logs):
            if p.poll() is not None:
                return f"{self.name} exited with code {p.returncode}; log {lg}:\n{tail(lg)}"
        return None

    def stop(self) -> None:
        CHILDREN.stop_many(self.procs)
        for p in self.procs:
            CHILDREN.forget(p)


def rbridge_argv() -> list[str]:
    exe = Path(sys.executable).parent / "rbridge"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("rbridge")
    return [found] if found else [sys.executable, "-m", "rbridge"]


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBRIDGE_")}
    env.update(extra)
    return env


def start_rbridge(models_dir: Path, model: str, tmp: Path, workers: int, name: str = "rbridge") -> Server:
    """`name`: rbridge (granian), rbridge-waitress, or rbridge-https (granian with TLS)."""
    user, password = "bench", secrets.token_urlsafe(18)
    users = tmp / "users.json"
    if not users.exists():
        run_checked(rbridge_argv() + ["user", "add", user, "--role", "scorer", "--users", str(users),
                                      "--password-stdin"],
                    "rbridge user add", timeout=60, input=(password + "\n").encode(), env=clean_env(), cwd=REPO)
        (tmp / "bench-password").write_text(password)
    password = (tmp / "bench-password").read_text()
    port = free_port()
    key = tmp / "signing.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32))
        key.chmod(0o600)
    argv = rbridge_argv() + ["serve", "--models", str(models_dir), "--workers", str(workers), "--host", "127.0.0.1",
                             "--port", str(port), "--users", str(users), "--token-ttl", "86400",
                             "--signing-key-file", str(key), "--log-format", "text"]
    scheme = "http"
    if name == "rbridge-waitress":
        argv += ["--http-server", "waitress"]
    elif name == "rbridge-https":
        scheme = "https"
        argv += ["--certfile", str(self_signed(tmp, "cert.pem")), "--keyfile", str(tmp / "key.pem")]
    lg = tmp / f"{name}-{model}.log"
    s = Server(name, f"{scheme}://127.0.0.1:{port}/models/{MODEL_NAMES[model]}/predict",
               f"{scheme}://127.0.0.1:{port}/readyz", logs=[lg])
    s.started = time.monotonic()
    s.procs.append(CHILDREN.start(name, argv, lg, env=clean_env(PYTHONUNBUFFERED="1"), cwd=REPO))
    s.user, s.password, s.port = user, password, port
    s.api_key_file = tmp / "bench-api-key"
    return s


def self_signed(tmp: Path, name: str) -> Path:
    cert = tmp / name
    if not cert.exists():
        run_checked(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                     "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp / "key.pem"),
                     "-out", str(cert)], "openssl req", timeout=60)
    return cert


def rbridge_auth(s: Server, mode: str) -> str:
    if mode == "basic":
        return "Basic " + base64.b64encode(f"{s.user}:{s.password}".encode()).decode()
    if mode == "apikey":
        if not s.api_key_file.exists():
            cp = run_checked(rbridge_argv() + ["key", "create", s.user, "--name", "bench", "--users",
                                               str(s.api_key_file.parent / "users.json")],
                             "rbridge key create", timeout=60, env=clean_env(), cwd=REPO)
            s.api_key_file.write_text(cp.stdout.decode().strip())
        return "Bearer " + s.api_key_file.read_text()
    scheme = s.url.split(":", 1)[0]
    code, body = http("POST", f"{scheme}://127.0.0.1:{s.port}/login",
                      json.dumps({"username": s.user, "password": s.password}).encode(),
                      {"Content-Type": "application/json"}, timeout=30)
    if code != 200:
        raise BenchError(f"rbridge /login answered {code}: {body[:300]!r}")
    return "Bearer " + json.loads(body)["access_token"]


def start_plumber(model_path: Path, tmp: Path, tag: str) -> tuple[subprocess.Popen, Path, int]:
    port = free_port()
    lg = tmp / f"{tag}.log"
    p = CHILDREN.start(tag, ["Rscript", str(BENCH / "plumber" / "run.R"), str(port)], lg,
                       env=clean_env(BENCH_MODEL=str(model_path)), cwd=BENCH / "plumber")
    return p, lg, port


def start_plumber_servers(model: str, model_path: Path, tmp: Path, nprocs: int,
                          upstream_keepalive: int, which: list[str]) -> list[Server]:
    out = []
    if "plumber-1" in which:
        p, lg, port = start_plumber(model_path, tmp, f"plumber-1-{model}")
        s = Server("plumber-1", f"http://127.0.0.1:{port}/predict", f"http://127.0.0.1:{port}/healthz",
                   procs=[p], logs=[lg])
        s.started = time.monotonic()
        out.append(s)
    if "plumber-nginx" in which:
        started = time.monotonic()
        backends = [start_plumber(model_path, tmp, f"plumber-n{i + 1}-{model}") for i in range(nprocs)]
        prefix = tmp / f"nginx-{model}"
        prefix.mkdir()
        prefix.chmod(0o755)          # nginx's workers (user nobody when run as root) create temp dirs here
        port = free_port()
        conf = (BENCH / "nginx.conf.template").read_text()
        if upstream_keepalive > 0:
            upstream = f"keepalive {upstream_keepalive};"
            conn = '""'
        else:
            upstream = "# no upstream keepalive (see bench/README.md: plumber stalls ~40 ms on reused connections)"
            conn = "close"
        fill = {
            "{{PREFIX}}": str(prefix),
            "{{PORT}}": str(port),
            "{{USER}}": "user nobody nogroup;" if os.geteuid() == 0 else "",
            "{{SERVERS}}": "\n".join(f"        server 127.0.0.1:{b[2]};" for b in backends),
            "keepalive {{UPSTREAM_KEEPALIVE}};": upstream,
            'proxy_set_header Connection "";': f"proxy_set_header Connection {conn};",
        }
        for k, v in fill.items():
            if k not in conf:
                raise BenchError(f"bench/nginx.conf.template: placeholder {k} missing")
            conf = conf.replace(k, v)
        left = re.findall(r"\{\{[A-Z_]+\}\}", conf)
        if left:
            raise BenchError(f"bench/nginx.conf.template: unfilled placeholder {left[0]}")
        (prefix / "nginx.conf").write_text(conf)
        nlog = prefix / "stdout.log"
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx")
        np_ = CHILDREN.start("nginx", [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                        "-e", str(prefix / "error.log")], nlog)
        s = Server("plumber-nginx", f"http://127.0.0.1:{port}/predict", f"http://127.0.0.1:{port}/healthz",
                   procs=[b[0] for b in backends] + [np_], logs=[b[1] for b in backends] + [prefix / "error.log"])
        s.started = started
        s.extra_ready = [(f"http://127.0.0.1:{b[2]}/healthz", b[0], b[1]) for b in backends]
        out.append(s)
    return out


def wait_ready(servers: list[Server], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        for s in list(pending):
            err = s.failed()
            if err:
                raise BenchError(f"{s.name} failed to start: {err}")
            urls = [u for u, _, _ in s.extra_ready] + [s.ready_url]
            ok = True
            for u in urls:
                try:
                    code, _ = http("GET", u, timeout=2)
                except OSError:
                    code = 0
                if code != 200:
                    ok = False
                    break
            if ok:
                s.ready_s = time.monotonic() - s.started
                log(f"{s.name} ready in {s.ready_s:.2f}s")
                pending.remove(s)
        if pending and time.monotonic() > deadline:
            s = pending[0]
            logs = "\n".join(f"  {lg}:\n{tail(lg, 25)}" for lg in s.logs)
            raise BenchError(f"{s.name} not ready after {timeout:g} s ({s.ready_url}); log tail:\n{logs}")
        if pending:
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------------------------
def same_prediction(got, want) -> bool:
    if isinstance(want, str) or want is None:
        return got == want
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return False
        return math.isclose(float(got), float(want), rel_tol=REL_TOL, abs_tol=1e-12)
    return got == want


def check_predictions(s: Server, payload: Path, expected: list) -> None:
    headers = {"Content-Type": "application/json"}
    if s.auth:
        headers["Authorization"] = s.auth
    try:
        code, body = http("POST", s.url, payload.read_bytes(), headers, timeout=300)
    except OSError as e:
        raise BenchError(f"{s.name}: POST {s.url} with {payload.name} failed: {e}") from None
    if code != 200:
        raise BenchError(f"{s.name}: POST {s.url} with {payload.name} answered {code}: {body[:500]!r}")
    try:
        got = json.loads(body)["predictions"]
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"{s.name}: {payload.name}: no 'predictions' in the answer: {body[:300]!r}") from None
    if not isinstance(got, list) or len(got) != len(expected):
        raise BenchError(f"{s.name}: {payload.name}: expected {len(expected)} predictions, got "
                         f"{len(got) if isinstance(got, list) else type(got).__name__}: {str(got)[:200]}")
    bad = [i for i, (g, w) in enumerate(zip(got, expected)) if not same_prediction(g, w)]
    if bad:
        i = bad[0]
        raise BenchError(f"{s.name}: {payload.name}: {len(bad)} of {len(expected)} predictions differ from R's "
                         f"predict(); first at row {i + 1}: got {got[i]!r}, R gives {expected[i]!r}")


# --------------------------------------------------------------------------------------------------------------
# Load (wrk)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    model: str
    rows: int
    concurrency: int
    keepalive: bool
    duration: float
    auth: str | None = None      # rbridge's auth for this scenario (None: the run's --auth)
    note: str = ""
    only: tuple = ()             # the servers that run it (empty: every server but rbridge-https)

    def runs_on(self, server: str) -> bool:
        return server in self.only if self.only else server != "rbridge-https"

    @property
    def payload(self) -> str:
        return f"{self.model}_{self.rows}"


def run_wrk(url: str, body: Path, auth: str, sc: Scenario) -> dict:
    argv = ["wrk", "-t1", f"-c{sc.concurrency}", f"-d{sc.duration:g}s", "--timeout", "60s",
            "-s", str(BENCH / "wrk_post.lua")]
    if not sc.keepalive:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    env = dict(os.environ, BENCH_BODY_FILE=str(body), BENCH_AUTH=auth)
    try:
        cp = subprocess.run(argv, capture_output=True, timeout=sc.duration + 90, env=env,
                            start_new_session=True)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk on {url} did not finish") from None
    except FileNotFoundError:
        raise BenchError("wrk is not installed (apt-get install wrk)") from None
    out = cp.stdout.decode(errors="replace")
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
    if cp.returncode != 0 or not m:
        raise BenchError(f"wrk failed on {url} (exit {cp.returncode}):\n{out}\n{cp.stderr.decode(errors='replace')}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    lat = r["latency_us"]
    errors = sum(r["errors"].values())
    return {
        "requests": r["requests"],
        "seconds": round(secs, 3),
        "rps": r["requests"] / secs if secs > 0 else 0.0,
        "p50_ms": lat["p50"] / 1000 if r["requests"] else None,
        "p90_ms": lat["p90"] / 1000 if r["requests"] else None,
        "p99_ms": lat["p99"] / 1000 if r["requests"] else None,
        "max_ms": lat["max"] / 1000 if r["requests"] else None,
        "errors": r["errors"],
        "error_count": errors,
    }


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------------------------
def scenarios_full(d: float) -> list[Scenario]:
    out = []
    for model in ("lm", "rf"):
        for rows in (1, 100):
            for c in (1, 8, 32):
                for ka in (True, False):
                    out.append(Scenario(f"{model} {rows}row c{c} {'keepalive' if ka else 'close'}",
                                        model, rows, c, ka, d))
    rb = ("rbridge", "rbridge-waitress")
    out.append(Scenario("lm 1row c32 keepalive basic-auth", "lm", 1, 32, True, d, auth="basic", only=rb,
                        note="rbridge with HTTP Basic on every request"))
    out.append(Scenario("lm 1row c32 keepalive api-key", "lm", 1, 32, True, d, auth="apikey", only=rb,
                        note="rbridge with an API key on every request"))
    out.append(Scenario("lm 1row c32 keepalive https", "lm", 1, 32, True, d, only=("rbridge-https",),
                        note="the default front over TLS (compare with lm 1row c32 keepalive on rbridge)"))
    out.append(Scenario("lm 1000row c8 keepalive", "lm", 1000, 8, True, d))
    out.append(Scenario("ranger 1row c8 keepalive", "ranger", 1, 8, True, max(4 * d, 2.0),
                        note="500 trees, 50k x 20 training rows"))
    return out


def scenarios_smoke() -> list[Scenario]:
    return [Scenario("lm 1row c8 keepalive", "lm", 1, 8, True, 1.0)]


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    for tool, argv in (("wrk", ["wrk", "--version"]), ("nginx", ["nginx", "-v"])):
        try:
            cp = subprocess.run(argv, capture_output=True, timeout=10)
            first = (cp.stdout + cp.stderr).decode(errors="replace").strip().splitlines()
            info[tool] = first[0] if first else "?"
        except (OSError, subprocess.TimeoutExpired):
            info[tool] = "missing"
    try:
        cp = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            timeout=10)
        info["commit"] = cp.stdout.decode().strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    try:
        from importlib.metadata import version
        info["rbridge"] = version("rbridge")
    except Exception:
        info["rbridge"] = None
    return info


def r_versions() -> dict:
    cp = run_checked(["Rscript", "-e", 'cat(jsonlite::toJSON(list(R = R.version.string, plumber = '
                      'as.character(packageVersion("plumber")), jsonlite = as.character(packageVersion("jsonlite")), '
                      'randomForest = as.character(packageVersion("randomForest")), '
                      'ranger = as.character(packageVersion("ranger"))), auto_unbox = TRUE))'],
                     "R versions", timeout=60)
    return json.loads(cp.stdout)


def prepare_models(work: Path, models: list[str]) -> None:
    log(f"training / checking the bench models ({', '.join(models)}) in {work / 'models'}"
        + (" (ranger: about 2 minutes the first time)" if "ranger" in models
           and not (work / "models" / "bench_ranger.rds").exists() else ""))
    run_checked(["Rscript", str(BENCH / "train_models.R"), str(work)] + models, "bench/train_models.R",
                timeout=1800)


def run_floor(work: Path, items: list[str], budget: float) -> dict:
    argv = ["Rscript", str(BENCH / "floor.R"), f"{budget:g}"]
    for tag in items:
        model = tag.split("_")[0]
        argv.append(f"{tag}:{work / 'models' / (MODEL_NAMES[model] + '.rds')}:{work / 'payloads' / (tag + '.json')}")
    cp = run_checked(argv, "bench/floor.R", timeout=600)
    return json.loads(cp.stdout)


def serve_dir(work: Path, model: str) -> Path:
    """A models folder holding only this model (hard links, or copies, of bench/work/models/...)."""
    d = work / "serve" / model
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    name = MODEL_NAMES[model]
    for ext in (".rds", ".json"):
        src = work / "models" / (name + ext)
        if src.exists():
            try:
                os.link(src, d / src.name)
            except OSError:
                shutil.copy2(src, d / src.name)
    return d


def fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarise(sc_results: list[dict], servers: list[str]) -> None:
    for r in sc_results:
        med = {}
        for s in servers:
            runs = r["runs"].get(s, [])
            if not runs:
                continue
            med[s] = {
                "rps": median_or_none([x["rps"] for x in runs]),
                "p50_ms": median_or_none([x["p50_ms"] for x in runs]),
                "p99_ms": median_or_none([x["p99_ms"] for x in runs]),
                "errors": sum(x["error_count"] for x in runs),
                "requests": sum(x["requests"] for x in runs),
                "reps": len(runs),
                "gateway_cpu_us": median_or_none([x.get("gateway_cpu_us") for x in runs]),
            }
        r["median"] = med
        rb = med.get("rbridge", med.get("rbridge-https", {}))
        r["ratios"] = {
            "rps_vs_plumber_1": ratio(rb.get("rps"), med.get("plumber-1", {}).get("rps")),
            "rps_vs_plumber_nginx": ratio(rb.get("rps"), med.get("plumber-nginx", {}).get("rps")),
            "p99_vs_plumber_nginx": ratio(rb.get("p99_ms"), med.get("plumber-nginx", {}).get("p99_ms")),
            "rps_vs_waitress": ratio(rb.get("rps"), med.get("rbridge-waitress", {}).get("rps")),
        }


def goals(sc_results: list[dict]) -> list[dict]:
    by = {r["name"]: r for r in sc_results}
    out = []

    def med(name, server, key):
        return by.get(name, {}).get("median", {}).get(server, {}).get(key)

    for m, want in (("lm", 4), ("rf", 15)):
        n = f"{m} 1row c32 keepalive"
        if n in by:
            q = by[n]["ratios"]["rps_vs_plumber_nginx"]
            p_rb, p_ng = med(n, "rbridge", "p99_ms"), med(n, "plumber-nginx", "p99_ms")
            out.append({"goal": f"{n}: >= {want}x plumber-nginx requests/s, lower p99",
                        "value": f"{fmt(q, 2)}x; p99 {fmt(p_rb)} vs {fmt(p_ng)} ms",
                        "met": None if q is None or p_rb is None or p_ng is None else bool(q >= want and p_rb < p_ng)})
    n = "lm 1row c32 keepalive"
    if n in by:
        q = by[n]["ratios"]["rps_vs_waitress"]
        out.append({"goal": f"{n}: >= 2.5x the waitress front's requests/s", "value": f"{fmt(q, 2)}x",
                    "met": None if q is None else bool(q >= 2.5)})
        cpu = med(n, "rbridge", "gateway_cpu_us")
        out.append({"goal": f"{n}: gateway CPU per request under 150 us", "value": f"{fmt(cpu, 1)} us",
                    "met": None if cpu is None else bool(cpu < 150)})
        base = med(n, "rbridge", "rps")
        for other, key, within in (("lm 1row c32 keepalive https", "rbridge-https", 0.25),
                                   ("lm 1row c32 keepalive basic-auth", "rbridge", 0.10),
                                   ("lm 1row c32 keepalive api-key", "rbridge", 0.10)):
            got = med(other, key, "rps")
            q = ratio(got, base)
            if other in by:
                out.append({"goal": f"{other}: within {int(within * 100)}% of {n} (bearer, HTTP)",
                            "value": f"{fmt(got)} vs {fmt(base)} req/s ({fmt(q, 2)}x)",
                            "met": None if q is None else bool(q >= 1 - within)})
    for r in sc_results:
        if r["concurrency"] == 1 and r["floor_ms"] is not None and "rbridge" in r["median"]:
            p50 = r["median"]["rbridge"]["p50_ms"]
            gap = None if p50 is None else p50 - r["floor_ms"]
            out.append({"goal": f"{r['name']}: rbridge p50 within 0.5 ms of the R-only floor",
                        "value": f"p50 {fmt(p50, 2)} ms, floor {fmt(r['floor_ms'], 2)} ms, gap {fmt(gap, 2)} ms",
                        "met": None if gap is None else bool(gap <= 0.5)})
    n = "lm 1000row c8 keepalive"
    if n in by:
        q = by[n]["ratios"]["rps_vs_plumber_1"]
        out.append({"goal": f"{n}: >= 2x plumber-1 requests/s", "value": f"{fmt(q, 2)}x",
                    "met": None if q is None else bool(q >= 2)})
    n = "ranger 1row c8 keepalive"
    if n in by:
        q = by[n]["ratios"]["rps_vs_plumber_nginx"]
        out.append({"goal": f"{n}: >= 4.5x plumber-nginx requests/s", "value": f"{fmt(q, 2)}x",
                    "met": None if q is None else bool(q >= 4.5)})
    return out


def table_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    head = ["scenario", "floor ms"]
    servers = res["servers"]
    for s in servers:
        head += [f"{s} req/s", f"{s} p50 ms", f"{s} p99 ms"]
    if "rbridge" in servers:
        if "plumber-1" in servers:
            head.append("x plumber-1")
        if "plumber-nginx" in servers:
            head.append("x plumber-nginx")
        if "rbridge-waitress" in servers:
            head.append("x waitress")
        head.append("gateway us/req")
    rows = []
    for r in res["scenarios"]:
        row = [r["name"], fmt(r["floor_ms"], 2)]
        for s in servers:
            m = r["median"].get(s)
            if m is None:
                row += ["-", "-", "-"]
                continue
            flag = "!" if m["errors"] else ""
            row += [fmt(m["rps"]) + flag, fmt(m["p50_ms"], 2), fmt(m["p99_ms"], 2)]
        if "rbridge" in servers:
            if "plumber-1" in servers:
                row.append(fmt(r["ratios"]["rps_vs_plumber_1"], 2))
            if "plumber-nginx" in servers:
                row.append(fmt(r["ratios"]["rps_vs_plumber_nginx"], 2))
            if "rbridge-waitress" in servers:
                row.append(fmt(r["ratios"]["rps_vs_waitress"], 2))
            rb = r["median"].get("rbridge") or r["median"].get("rbridge-https") or {}
            row.append(fmt(rb.get("gateway_cpu_us"), 0))
        rows.append(row)
    return head, rows


def print_table(res: dict) -> None:
    head, rows = table_rows(res)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if res.get("goals"):
        print()
        for g in res["goals"]:
            mark = {True: "met", False: "MISSED", None: "n/a"}[g["met"]]
            print(f"  [{mark:6}] {g['goal']}: {g['value']}")
    print()


def markdown(res: dict) -> str:
    m = res["machine"]
    rv = res.get("r_versions", {})
    head, rows = table_rows(res)
    out = [f"# R Bridge vs plumber: {'smoke run' if res['smoke'] else 'benchmark'} of {res['started_at']}", ""]
    out.append(f"Machine: {m.get('cpu')}, {m.get('cpus_usable')} usable cores, {m.get('mem_gb')} GB, Linux "
               f"{m.get('kernel')}; load average {m.get('load_avg_start')} at start, {m.get('load_avg_end')} at end. "
               f"{rv.get('R', 'R ?')}, plumber {rv.get('plumber', '?')}, jsonlite {rv.get('jsonlite', '?')}, "
               f"{m.get('nginx')}, {m.get('wrk', '').split(' Copyright')[0]}; rbridge {m.get('rbridge')} at commit "
               f"{m.get('commit')}.")
    out.append("")
    cfg = res["config"]
    out.append(f"Command: `{res['command']}`. Each cell is the median of {cfg['reps']} interleaved runs of "
               f"{cfg['duration_s']:g} s (ranger: {4 * cfg['duration_s']:g} s) with wrk, one thread, on loopback. "
               f"rbridge: {cfg['rbridge_workers']} workers, auth {cfg['auth']}; plumber-nginx: "
               f"{cfg['plumber_procs']} plumber processes behind nginx (upstream keepalive "
               f"{cfg['nginx_upstream_keepalive'] or 'off'}). Floor: the same request parsed, predicted and "
               f"serialised inside one R process (median). `x plumber-1`, `x plumber-nginx` and `x waitress`: "
               f"rbridge's requests/s (granian front) divided by theirs. `gateway us/req`: CPU time of rbridge's "
               f"own processes (not its R workers) per request. `!`: some requests failed.")
    out.append("")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    if res.get("goals"):
        out += ["", "Goals (the performance issue):", ""]
        for g in res["goals"]:
            mark = {True: "met", False: "**missed**", None: "n/a"}[g["met"]]
            out.append(f"- {mark}: {g['goal']}: {g['value']}")
    if res.get("restarts"):
        out += ["", "Restarted during the run (a server died; its runs were redone): " + "; ".join(
            f"{x['server']} ({x['model']}): {x['why']}" for x in res["restarts"])]
    st = res.get("startup", {})
    if st:
        out += ["", "Start to ready (s): " + ", ".join(
            f"{model}: " + ", ".join(f"{k} {fmt(v, 2)}" for k, v in d.items()) for model, d in st.items())]
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------
# The Open Inference Protocol against the native API: one rbridge, the same rows, interleaved
# --------------------------------------------------------------------------------------------------------------
def v2_body(s: Server, rows: list) -> bytes:
    """The rows as a V2 inference request, one tensor per input, typed as GET /v2/models/<name> says."""
    code, meta = http("GET", f"http://127.0.0.1:{s.port}/v2/models/{MODEL_NAMES['lm']}",
                      headers={"Authorization": s.auth}, timeout=30)
    if code != 200:
        raise BenchError(f"rbridge GET /v2/models/{MODEL_NAMES['lm']} answered {code}: {meta[:300]!r}")
    inputs = [{"name": i["name"], "datatype": i["datatype"], "shape": [len(rows)],
               "data": [r[i["name"]] for r in rows]} for i in json.loads(meta)["inputs"]]
    return json.dumps({"inputs": inputs}).encode()


def run_v2(args, work: Path, tmp: Path, duration: float, reps: int) -> dict:
    """lm, 1 row, c=32, keep-alive: POST /models/<name>/predict and POST /v2/models/<name>/infer on the same
    server, both checked against R's predict() first, then loaded in turn `reps` times; medians and V2/native."""
    prepare_models(work, ["lm"])
    s = start_rbridge(serve_dir(work, "lm"), "lm", tmp, args.rbridge_workers)
    try:
        wait_ready([s], args.startup_timeout)
        s.auth = rbridge_auth(s, args.auth)
        native_body = work / "payloads" / "lm_1.json"
        expected = json.loads((work / "payloads" / "lm_1.expected.json").read_text())
        check_predictions(s, native_body, expected)
        body = tmp / "lm_1.v2.json"
        body.write_bytes(v2_body(s, json.loads(native_body.read_text())["data"]))
        v2_url = f"http://127.0.0.1:{s.port}/v2/models/{MODEL_NAMES['lm']}/infer"
        code, answer = http("POST", v2_url, body.read_bytes(), {"Authorization": s.auth}, timeout=60)
        got = json.loads(answer)["outputs"][0]["data"] if code == 200 else None
        if got is None or len(got) != len(expected) or not all(map(same_prediction, got, expected)):
            raise BenchError(f"rbridge /v2 infer answered {code} {answer[:300]!r}; R gives {expected}")
        log("lm_1: native and /v2 predictions equal R's predict()")
        sc = Scenario("lm 1row c32 keepalive: native vs v2", "lm", 1, 32, True, duration)
        if not args.smoke:
            run_wrk(s.url, native_body, s.auth, Scenario("warm-up", "lm", 1, 8, True, 2.0))
        runs = {"native": [], "v2": []}
        for rep in range(reps):
            for kind, url, payload in (("native", s.url, native_body), ("v2", v2_url, body)):
                x = run_wrk(url, payload, s.auth, sc)
                runs[kind].append(x)
                log(f"rep {rep + 1}/{reps} {kind:6} {x['rps']:9.1f} req/s  p50 {fmt(x['p50_ms'], 2):>8} ms  "
                    f"p99 {fmt(x['p99_ms'], 2):>8} ms" + (f"  ERRORS {x['errors']}" if x["error_count"] else ""))
            if s.failed():
                raise BenchError(s.failed())
    finally:
        s.stop()
    med = {k: {m: median_or_none([r[m] for r in v]) for m in ("rps", "p50_ms", "p99_ms")} |
           {"errors": sum(r["error_count"] for r in v), "requests": sum(r["requests"] for r in v)}
           for k, v in runs.items()}
    out = {"scenario": sc.name, "duration_s": duration, "reps": reps, "median": med, "runs": runs,
           "ratios": {"rps_v2_vs_native": ratio(med["v2"]["rps"], med["native"]["rps"]),
                      "p50_v2_vs_native": ratio(med["v2"]["p50_ms"], med["native"]["p50_ms"])}}
    print(f"\n{sc.name} ({reps} x {duration:g} s each, interleaved)")
    for k in ("native", "v2"):
        print(f"  {k:6} {fmt(med[k]['rps']):>8} req/s  p50 {fmt(med[k]['p50_ms'], 2):>6} ms  "
              f"p99 {fmt(med[k]['p99_ms'], 2):>6} ms  errors {med[k]['errors']}")
    print(f"  V2 / native: requests/s {fmt(out['ratios']['rps_v2_vs_native'], 3)}, "
          f"p50 {fmt(out['ratios']['p50_v2_vs_native'], 3)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="one scenario, one short run per server (about 10 s)")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/<timestamp>.json)")
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 5; smoke 1)")
    ap.add_argument("--reps", type=int, help="interleaved repetitions (default 3; smoke 1)")
    ap.add_argument("--only", help="regular expression: run only the scenarios whose name matches")
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                    help="comma list out of " + ", ".join(SERVERS) + " (default: all but rbridge-https, which "
                         "starts when a scenario needs it)")
    ap.add_argument("--auth", choices=("bearer", "basic", "apikey"), default="bearer",
                    help="rbridge auth (default bearer)")
    ap.add_argument("--rbridge-workers", type=int, default=2)
    ap.add_argument("--plumber-procs", type=int, default=2, help="plumber processes behind nginx (default 2)")
    ap.add_argument("--nginx-upstream-keepalive", type=int, default=0, metavar="N",
                    help="idle keepalive connections from nginx to plumber; 0 (default) opens one per request, "
                         "which is faster with plumber (see bench/README.md)")
    ap.add_argument("--startup-timeout", type=float, default=240.0)
    ap.add_argument("--work", type=Path, default=BENCH / "work", help="models and payloads (default bench/work)")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temp dir with server logs")
    ap.add_argument("--v2", action="store_true", help="only the Open Inference Protocol scenario: /v2 infer against "
                    "the native route on one rbridge, lm 1 row, c=32 (JSON in --out)")
    args = ap.parse_args(argv)
    if args.v2:
        return main_v2(args)

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or set(servers) - set(SERVERS):
        ap.error(f"--servers: choose from {', '.join(SERVERS)}")
    servers = [s for s in SERVERS if s in servers]
    duration = args.duration or (1.0 if args.smoke else 5.0)
    reps = args.reps or (1 if args.smoke else 3)
    scenarios = scenarios_smoke() if args.smoke else scenarios_full(duration)
    if args.duration and args.smoke:
        for sc in scenarios:
            sc.duration = duration
    if args.only:
        scenarios = [sc for sc in scenarios if re.search(args.only, sc.name)]
        if not scenarios:
            ap.error(f"--only {args.only!r} matches no scenario")
    if "rbridge-https" not in servers and any("rbridge-https" in sc.only for sc in scenarios) \
            and "rbridge" in servers:
        servers.insert(servers.index("rbridge") + 1, "rbridge-https")
    for tool in ("wrk", "Rscript") + (("nginx",) if "plumber-nginx" in servers else ()):
        if not shutil.which(tool) and not (tool == "nginx" and Path("/usr/sbin/nginx").exists()):
            print(f"error: {tool} is not installed", file=sys.stderr)
            return 2

    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(CHILDREN.stop_all)

    t_start = time.monotonic()
    started_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="rbridge-bench-"))
    tmp.chmod(0o755)
    ok = False
    res: dict = {
        "smoke": args.smoke, "started_at": started_at, "command": " ".join(["bench/run.py"] + (argv or sys.argv[1:])),
        "servers": servers,
        "config": {"duration_s": duration, "reps": reps, "auth": args.auth, "rbridge_workers": args.rbridge_workers,
                   "plumber_procs": args.plumber_procs, "nginx_upstream_keepalive": args.nginx_upstream_keepalive,
                   "wrk_threads": 1, "rel_tol": REL_TOL},
        "machine": machine_info(), "startup": {}, "correctness": {}, "scenarios": [],
    }
    try:
        models = [m for m in ("lm", "rf", "ranger") if any(sc.model == m for sc in scenarios)]
        work = args.work.resolve()
        prepare_models(work, models)
        payloads = sorted({sc.payload for sc in scenarios})
        sc_results = [{"name": sc.name, "model": sc.model, "rows": sc.rows, "concurrency": sc.concurrency,
                       "keepalive": sc.keepalive, "duration_s": sc.duration, "auth": sc.auth or args.auth,
                       "note": sc.note, "floor_ms": None, "runs": {s: [] for s in servers}} for sc in scenarios]

        # The R-only floor: in the full run once per repetition, between the load runs of each model (so it sees
        # the same machine as they do); in the smoke run once, during the servers' start-up.
        floor_runs: dict[str, list[dict]] = {}
        floor_box: dict = {}

        def add_floor(v: dict) -> None:
            for tag, f in v.items():
                floor_runs.setdefault(tag, []).append(f)

        def smoke_floor_job():
            try:
                floor_box["v"] = run_floor(work, payloads, 0.3)
                floor_box["r"] = r_versions()
            except Exception as e:          # reported by the main thread (signals are not caught here)
                floor_box["e"] = e

        floor_thread = threading.Thread(target=smoke_floor_job, daemon=True)
        if args.smoke:
            floor_thread.start()
        else:
            res["r_versions"] = r_versions()

        res["restarts"] = []
        for model in models:
            model_scen = [(sc, r) for sc, r in zip(scenarios, sc_results) if sc.model == model]
            model_path = work / "models" / (MODEL_NAMES[model] + ".rds")
            model_payloads = sorted({sc.payload for sc, _ in model_scen})
            sdir = serve_dir(work, model)

            def launch(name: str) -> list[Server]:
                if name.startswith("rbridge"):
                    return [start_rbridge(sdir, model, tmp, args.rbridge_workers, name)]
                return start_plumber_servers(model, model_path, tmp, args.plumber_procs,
                                             args.nginx_upstream_keepalive, [name])

            def check_all(group: list[Server]) -> None:
                """Correctness, before any timing: every payload, every server, against R's predict()."""
                for s in group:
                    if s.is_rbridge():
                        s.auth = rbridge_auth(s, args.auth)
                for payload in model_payloads:
                    body = work / "payloads" / f"{payload}.json"
                    expected = json.loads((work / "payloads" / f"{payload}.expected.json").read_text())
                    for s in group:
                        check_predictions(s, body, expected)
                    res["correctness"].setdefault(payload, {}).update(
                        {s.name: "equal to R's predict()" for s in group})
                    log(f"{payload}: {', '.join(s.name for s in group)}: all {len(expected)} predictions "
                        f"equal R's predict()")

            def revive(i: int, why: str) -> None:
                """A server died between or during runs (on a shared machine, something may kill it): in the
                full run, restart it (twice at most per model) and check it again; in the smoke run, fail."""
                s = live[i]
                if args.smoke or sum(1 for x in res["restarts"] if x["model"] == model and x["server"] == s.name) >= 2:
                    raise BenchError(f"{s.name} died during the run: {why}")
                log(f"WARNING: {s.name} died ({why.splitlines()[0]}); restarting it. Log tail:\n{tail(s.logs[0], 12)}")
                res["restarts"].append({"model": model, "server": s.name, "why": why.splitlines()[0],
                                        "log": [str(x) for x in s.logs]})
                s.stop()
                (fresh,) = launch(s.name)
                live[i] = fresh
                wait_ready([fresh], args.startup_timeout)
                check_all([fresh])

            needed = [n for n in servers if any(sc.runs_on(n) for sc, _ in model_scen)]
            log(f"model {MODEL_NAMES[model]}: starting {', '.join(needed)}")
            live: list[Server] = []
            try:
                for name in needed:
                    live += launch(name)
                wait_ready(live, args.startup_timeout)
                res["startup"][model] = {s.name: round(s.ready_s, 3) for s in live}
                check_all(live)
                if not args.smoke:   # warm-up: connections, caches, R's byte compiler
                    sc0 = model_scen[0][0]
                    warm = Scenario("warm-up", model, sc0.rows, 8, True, 2.0 if model != "ranger" else 4.0)
                    for s in live:
                        run_wrk(s.url, work / "payloads" / f"{sc0.payload}.json", s.auth, warm)
                for rep in range(reps):
                    if not args.smoke:
                        add_floor(run_floor(work, model_payloads, 1.5))
                        log(f"rep {rep + 1}/{reps} R-only floor: " + ", ".join(
                            f"{t} {floor_runs[t][-1]['median_ms']:.2f} ms" for t in model_payloads))
                    for sc, r in model_scen:
                        for i in range(len(live)):
                            if not sc.runs_on(live[i].name):
                                continue
                            while True:
                                err = live[i].failed()
                                if err:
                                    revive(i, err)
                                s = live[i]
                                auth = rbridge_auth(s, sc.auth or args.auth) if s.is_rbridge() else s.auth
                                cpu0 = s.gateway_cpu_seconds() if s.is_rbridge() else None
                                x = run_wrk(s.url, work / "payloads" / f"{sc.payload}.json", auth, sc)
                                if s.failed():
                                    continue          # died under load: that run does not count, redo it
                                if cpu0 is not None and x["requests"]:
                                    x["gateway_cpu_us"] = (s.gateway_cpu_seconds() - cpu0) / x["requests"] * 1e6
                                break
                            r["runs"][s.name].append(x)
                            log(f"rep {rep + 1}/{reps} {sc.name:34} {s.name:16} {x['rps']:9.1f} req/s  "
                                f"p50 {fmt(x['p50_ms'], 2):>8} ms  p99 {fmt(x['p99_ms'], 2):>8} ms"
                                + (f"  gateway {x['gateway_cpu_us']:.0f} us/req" if "gateway_cpu_us" in x else "")
                                + (f"  ERRORS {x['errors']}" if x["error_count"] else ""))
            finally:
                CHILDREN.stop_many([p for s in live for p in s.procs])
                for s in live:
                    s.stop()

        if args.smoke:
            floor_thread.join(120)
            if "e" in floor_box:
                raise floor_box["e"]
            if "v" not in floor_box:
                raise BenchError("the R-only floor did not finish")
            res["r_versions"] = floor_box["r"]
            add_floor(floor_box["v"])
        res["floor"] = {tag: {"median_ms": statistics.median(f["median_ms"] for f in fs), "runs": fs}
                        for tag, fs in floor_runs.items()}
        for r in sc_results:
            f = res["floor"].get(f"{r['model']}_{r['rows']}")
            r["floor_ms"] = f["median_ms"] if f else None
        summarise(sc_results, servers)
        res["scenarios"] = sc_results
        res["goals"] = goals(sc_results) if "rbridge" in servers else []
        res["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        res["elapsed_s"] = round(time.monotonic() - t_start, 1)

        failed_runs = [(r["name"], s, m["errors"]) for r in sc_results for s, m in r["median"].items() if m["errors"]]
        res["ok"] = not failed_runs
        out = args.out or (BENCH / "results" / ("smoke-latest.json" if args.smoke else f"{stamp}.json"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        md = markdown(res)
        out.with_suffix(".md").write_text(md)
        if not args.smoke and not args.only and set(DEFAULT_SERVERS) <= set(servers):
            (BENCH / "results").mkdir(exist_ok=True)
            (BENCH / "results" / "latest.md").write_text(md)
        print()
        print_table(res)
        print(f"results: {out} (and {out.with_suffix('.md')}); {res['elapsed_s']} s")
        if failed_runs:
            for name, s, n in failed_runs:
                print(f"error: {s} had {n} failed requests in '{name}'", file=sys.stderr)
            return 1
        ok = True
        return 0
    except BenchError as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench interrupted: stopping the servers", file=sys.stderr)
        return 130
    finally:
        CHILDREN.stop_all()
        if ok and not args.keep_temp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"server logs kept in {tmp}", file=sys.stderr)


def main_v2(args) -> int:
    duration, reps = args.duration or (1.0 if args.smoke else 5.0), args.reps or (1 if args.smoke else 5)
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(CHILDREN.stop_all)
    tmp = Path(tempfile.mkdtemp(prefix="rbridge-bench-v2-"))
    try:
        res = {"smoke": args.smoke, "machine": machine_info(), **run_v2(args, args.work.resolve(), tmp, duration, reps)}
        out = args.out or BENCH / "results" / f"v2-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"results: {out}")
        return 1 if any(m["errors"] for m in res["median"].values()) else 0
    except BenchError as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        return 1
    finally:
        CHILDREN.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
