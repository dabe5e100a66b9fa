"""Hardening against a real server with real R (issue 12): hostile input, credentials and logs.

Each test here was seen failing on the code before its fix. One server for most of the module
(cars: lm with a factor, chaos: a script model with a character column, names: a script model
without a schema that answers the column names R received), with --trusted-proxies 127.0.0.1 so
each test speaks from its own X-Forwarded-For address and one test's throttle does not lock out
the next.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serverproc import ADMIN, SCORER, Server, copy_models, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]

NAMES_R = r'''
# No schema: R sees the request's own columns. Answers them, joined, once per row.
score <- function(model, newdata) {
  if (!is.null(newdata$mode) && newdata$mode[1] == "stderr") {
    system("echo 'Traceback (most recent call last):' 1>&2; echo '  a line written by native code' 1>&2")
  }
  rep(paste(names(newdata), collapse = "|"), nrow(newdata))
}
'''
_addresses = (f"198.51.100.{i}" for i in itertools.count(1))


@pytest.fixture(scope="module")
def models(small_models, tmp_path_factory):
    d = copy_models(small_models, tmp_path_factory.mktemp("hardening-models"), ["cars", "chaos"])
    rscript(f'saveRDS(structure(list(), class = "colnames"), "{d}/names.rds")')
    (d / "names.R").write_text(NAMES_R)
    return d


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    with Server(models, tmp_path_factory.mktemp("hardening"), "--workers", "2", "--timeout", "20",
                "--trusted-proxies", "127.0.0.1") as s:
        yield s


def call(s: Server, method: str, path: str, headers: dict | None = None, ip: str | None = None, **kw):
    headers = {"X-Forwarded-For": ip or next(_addresses), **(headers or {})}
    return requests.request(method, s.url + path, headers=headers, timeout=60, **kw)


def code(r: requests.Response) -> str:
    return r.json()["error"]["code"]


def worker_pids(s: Server) -> list:
    """The workers' pids, once every worker has started (a changed list means one died)."""
    deadline = time.monotonic() + 60
    while True:
        pids = [w["pid"] for w in s.get("/status").json()["workers"]]
        if None not in pids or time.monotonic() > deadline:
            return sorted(pids, key=str)
        time.sleep(0.2)


def csv_post(s: Server, model: str, body: bytes, charset: str | None):
    ctype = "text/csv" + (f"; charset={charset}" if charset else "")
    return s.post(f"/models/{model}/predict", data=body, headers={"Content-Type": ctype})


# -- 2: charsets and strings that R cannot take ------------------------------------------------
def test_only_utf8_utf16_latin1_charsets_and_no_worker_dies(server):
    pids = worker_pids(server)
    # unicode_escape and utf-7 decode to lone surrogates, which R's strings cannot hold
    for charset, body in (("unicode_escape", b"mode,x\n\\ud800,1\n"), ("utf-7", b"mode,x\n+2AA-,1\n"),
                          ("rot13", b"mode,x\nbx,1\n"), ("zlib", b"mode,x\nok,1\n"), ("nonsense", b"x\n1\n")):
        r = csv_post(server, "chaos", body, charset)
        assert r.status_code == 400, (charset, r.status_code, r.text)
        assert code(r) == "unsupported_charset" and "UTF-8" in r.json()["error"]["message"]
    for charset, body in (("utf-8", "mode,x\ncafé,1\n".encode()), ("UTF-16", "mode,x\ncafé,1\n".encode("utf-16")),
                          ("latin-1", "mode,x\ncafé,1\n".encode("latin-1")), ("ISO-8859-1", b"mode,x\ncaf\xe9,1\n"),
                          (None, b"\xef\xbb\xbfmode,x\ncaf\xc3\xa9,1\n")):
        r = csv_post(server, "chaos", body, charset)
        assert r.status_code == 200 and r.json()["predictions"] == [2], (charset, r.text)
    # JSON's \ud800 escapes: orjson refuses lone surrogates (400), before any worker sees them
    for text in ('{"data": [{"mode": "\\ud800", "x": 1}]}', '{"data": [{"\\udc00": "a", "x": 1}]}'):
        r = server.post("/models/names/predict", data=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and code(r) == "bad_request", r.text
    assert requests.get(server.url + "/readyz").status_code == 200
    assert worker_pids(server) == pids


# -- 4: columns ---------------------------------------------------------------------------------
def test_too_many_columns_is_413_before_r(server):
    pids = worker_pids(server)
    wide = {f"c{i}": 1.0 for i in range(1001)}
    started = time.monotonic()
    for body in ({"data": [wide]}, {"data": [{"x": 1}, wide]}, {"columns": {k: [v] for k, v in wide.items()}}):
        r = server.post("/models/names/predict", body)
        assert r.status_code == 413 and code(r) == "too_many_columns", r.text[:300]
        assert "1000" in r.json()["error"]["message"] and "--max-columns" in r.json()["error"]["message"]
    r = csv_post(server, "names", (",".join(wide) + "\n" + ",".join("1" for _ in wide) + "\n").encode(), None)
    assert r.status_code == 413 and code(r) == "too_many_columns"
    assert time.monotonic() - started < 10
    fine = server.post("/models/names/predict", {"data": [{f"c{i}": 1.0 for i in range(1000)}]})
    assert fine.status_code == 200 and fine.json()["predictions"][0].count("|") == 999, fine.text[:300]
    assert worker_pids(server) == pids


# -- 5: NUL ---------------------------------------------------------------------------------------
def test_nul_in_a_string_or_column_name_is_422(server):
    r = server.post("/models/names/predict", {"data": [{"a": 1, "a\u0000": 2}]})
    assert r.status_code == 422 and code(r) == "nul_character", r.text
    assert r.json()["error"]["column"] == "a\u0000"
    for model, row in (("chaos", {"mode": "fail\u0000ok", "x": 1}), ("names", {"a": "x\u0000y"})):
        r = server.post(f"/models/{model}/predict", {"data": [row]})
        assert r.status_code == 422 and code(r) == "nul_character", r.text
        assert r.json()["error"]["row"] == 0
    r = csv_post(server, "chaos", b"mode,x\nfail\x00ok,1\n", None)
    assert r.status_code == 422 and code(r) == "nul_character"
    assert server.post("/models/names/predict", {"data": [{"a": "x y"}]}).json()["predictions"] == ["a"]


# -- 7: sign-in bodies ------------------------------------------------------------------------------
def test_sign_in_bodies_are_capped_before_parsing(server):
    big = json.dumps({"username": "x" * (1 << 20), "password": "y"}).encode()
    for path in ("/login", "/login/refresh", "/logout"):
        r = call(server, "POST", path, {"Content-Type": "application/json"}, data=big)
        assert r.status_code == 413 and code(r) == "too_large", (path, r.text)
        assert "4096" in r.json()["error"]["message"]

        def chunks():                                      # chunked: no Content-Length to go by
            for _ in range(64):
                yield b" " * 1024
        r = call(server, "POST", path, {"Content-Type": "application/json"}, data=chunks())
        assert r.status_code == 413, (path, r.status_code)
    ok = call(server, "POST", "/login", json={"username": SCORER[0], "password": SCORER[1]})
    assert ok.status_code == 200


# -- 8: concurrent guesses ------------------------------------------------------------------------
def test_concurrent_guesses_are_counted_when_they_start(server, tmp_path):
    name = "guessed"
    users_file = server.users
    from rbridge.gateway import users
    users.set_user(users_file, name, "guessed-Pa55word-right", role="scorer")

    def guess(i):
        return call(server, "POST", "/login", json={"username": name, "password": f"wrong-guess-{i}"}).status_code

    with ThreadPoolExecutor(60) as ex:
        statuses = list(ex.map(guess, range(59)))
    assert statuses.count(401) <= 5, statuses            # at most the per-user limit was hashed
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 54
    right = call(server, "POST", "/login", json={"username": name, "password": "guessed-Pa55word-right"})
    assert right.status_code == 429
    failed = [json.loads(line) for line in server.log_text().splitlines()
              if '"event":"auth_failed"' in line and f'"user":"{name}"' in line]
    assert len(failed) <= 5


# -- 9: malformed credentials -----------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_any_malformed_credential_is_401(server):
    nested = b64(b"[" * 5000 + b"]" * 5000)
    deep_kid = b64(b'{"kid": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    tokens = [f"{nested}.e30.c2ln", f"{deep_kid}.e30.c2ln", f"{b64(b'{}')}.{nested}.c2ln", "a.b", "....",
              f"{b64(b'nul')}.e30.x", f"{b64(bytes([0xff, 0xfe]))}.e30.x", "é.é.é", b64(b'"kid"') + ".e30.x"]
    for token in tokens:
        r = call(server, "GET", "/models", {"Authorization": f"Bearer {token}".encode("latin-1")})
        assert r.status_code == 401, (token[:40], r.status_code, r.text)
    for header in ({"Authorization": b"Basic \xff\xfe"}, {"Authorization": "Basic " + b64(b"\xff:\xfe")},
                   {"Authorization": "Basic " + "=" * 9}, {"X-API-Key": b"rbk_\xff\xfe"}, {"Authorization": "Bearer"}):
        r = call(server, "GET", "/models", header)
        assert r.status_code == 401, (header, r.status_code, r.text)
    assert "RecursionError" not in server.log_text()


# -- 10: refresh token reuse ------------------------------------------------------------------------
def test_reused_refresh_token_revokes_its_whole_family(server):
    ip = next(_addresses)
    first = call(server, "POST", "/login", ip=ip, json={"username": SCORER[0], "password": SCORER[1]}).json()
    second = call(server, "POST", "/login/refresh", ip=ip, json={"refresh_token": first["refresh_token"]}).json()
    other = call(server, "POST", "/login", ip=ip, json={"username": SCORER[0], "password": SCORER[1]}).json()
    bearer = lambda t: {"Authorization": f"Bearer {t}"}           # noqa: E731
    assert call(server, "GET", "/models", bearer(second["access_token"])).status_code == 200
    reuse = call(server, "POST", "/login/refresh", ip=ip, json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and code(reuse) == "token_revoked"
    for token in (first["access_token"], second["access_token"]):      # the family of that sign-in
        r = call(server, "GET", "/models", bearer(token))
        assert r.status_code == 401 and code(r) == "token_revoked"
    r = call(server, "POST", "/login/refresh", ip=ip, json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401 and code(r) == "token_revoked"
    assert call(server, "GET", "/models", bearer(other["access_token"])).status_code == 200   # another sign-in
    assert call(server, "POST", "/login/refresh", ip=ip, json={"refresh_token": other["refresh_token"]}).status_code == 200


# -- 16: the users file -----------------------------------------------------------------------------
def test_users_file_validated_as_a_whole_and_unknown_roles_refused(models, tmp_path):
    with Server(models, tmp_path, "--workers", "1", "--trusted-proxies", "127.0.0.1") as s:
        good = json.loads(s.users.read_text())
        assert s.get("/models", auth=SCORER).status_code == 200
        broken = json.loads(s.users.read_text())
        broken["users"][SCORER[0]]["keys"] = 5
        s.users.write_text(json.dumps(broken))
        for auth in (SCORER, ADMIN):                       # the last good file keeps serving
            assert s.get("/models", auth=auth).status_code == 200
        assert "users file" in s.log_text() and "keys" in s.log_text()

        rooted = dict(good)
        rooted["users"] = {**good["users"], SCORER[0]: {**good["users"][SCORER[0]], "role": "root"}}
        s.users.write_text(json.dumps(rooted))
        r = s.get("/models", auth=SCORER)
        assert r.status_code == 403 and "root" in r.json()["error"]["message"]
        r = call(s, "POST", "/login", json={"username": SCORER[0], "password": SCORER[1]})
        assert r.status_code == 403
        assert s.get("/models", auth=ADMIN).status_code == 200

        s.users.unlink()                                     # gone: the last good file still serves
        ip = next(_addresses)
        for _ in range(8):
            assert call(s, "POST", "/login", ip=ip, json={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 200
        s.users.write_text(json.dumps(good))                 # and nobody was locked out meanwhile
        assert call(s, "POST", "/login", ip=ip, json={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 200


# -- 11 and 12: what the open probe says; the log cannot be forged ---------------------------------
def test_readyz_is_generic_and_text_log_escapes_control_characters(models, tmp_path):
    d = copy_models(models, tmp_path / "m", ["cars", "names"])
    (d / "broken.rds").write_bytes(b"not an rds file")
    with Server(d, tmp_path, "--workers", "1", "--log-format", "text", wait_ready=False) as s:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(m["state"] == "loading" for m in s.get("/models").json()["models"]):
            time.sleep(0.2)
        ready = requests.get(s.url + "/readyz")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "reason": "model(s) failed to load"}
        assert "broken" not in ready.text and "rds" not in ready.text
        assert "broken" in s.get("/status").json()["ready"]["reason"]
        assert {m["name"]: m["state"] for m in s.get("/models").json()["models"]}["broken"] == "failed"

        forged = "12:00:00 INFO  POST /login 200 user=admin"
        requests.get(s.url + "/nothing%0a" + forged.replace(" ", "%20") + "%0d%1b[2J")
        time.sleep(0.5)
        lines = s.log_text().splitlines()
        assert not any(line.startswith(forged) for line in lines)
        assert any("/nothing\\n12:00:00" in line and "\\x1b[2J" in line for line in lines)


def test_worker_stderr_reaches_the_json_log_as_records(server):
    r = server.post("/models/names/predict", {"data": [{"mode": "stderr"}]})
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while "a line written by native code" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    wrapped = [json.loads(line) for line in lines if "a line written by native code" in line]
    assert wrapped and wrapped[0]["logger"] == "bridge.worker" and "worker" in wrapped[0]
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, not_json[:5]


def test_a_worker_answers_a_string_r_cannot_take_and_lives(models):
    """The gateway lets no lone surrogate through, but if one reached a worker (a Part built by
    hand here, over a real worker's socket), R's conversion failure is that request's error."""
    import socket
    import subprocess
    import sys

    from rbridge.pool import protocol
    from rbridge.schema import Schema

    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "rbridge.worker", "--fd", str(theirs.fileno()), "--slot", "9",
                             "--log-format", "json"], pass_fds=[theirs.fileno()], stderr=subprocess.DEVNULL)
    theirs.close()
    try:
        spec = protocol.ModelSpec("names", str(models / "names.rds"), str(models / "names.R"), "v", "0" * 64, {}, None)
        protocol.send(ours, protocol.Load([spec]))
        assert protocol.recv(ours).models[0].ok
        bad = protocol.Part("bad", 1, {"a\ud800": ("character", ["x"]), "b": ("character", ["\udcff"])})
        good_columns, n = Schema(None).encode({"data": [{"a": "x"}]}, 10)
        protocol.send(ours, protocol.Score(1, "names", [bad]))
        answer = protocol.recv(ours)
        assert answer.outputs[0]["status"] == 422 and answer.outputs[0]["error"]["code"] == "unconvertible_input"
        protocol.send(ours, protocol.Score(2, "names", [protocol.Part("good", n, good_columns)]))
        assert list(protocol.recv(ours).outputs[0].values[0]) == ["a"]
        # merged with a batch-mate of the same columns: only the bad part fails
        mate = protocol.Part("mate", 1, {"a": ("character", ["\udcff"])})
        protocol.send(ours, protocol.Score(3, "names", [mate, protocol.Part("good", n, good_columns)]))
        outputs = protocol.recv(ours).outputs
        assert outputs[0]["error"]["code"] == "unconvertible_input" and list(outputs[1].values[0]) == ["a"]
        assert proc.poll() is None
    finally:
        ours.close()
        proc.wait(10)
