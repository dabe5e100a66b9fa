"""Security against a real server with real R: sign-in, tokens, keys, roles, throttling, limits.

One server for the module (`rbridge serve` as a subprocess, log captured to a file), with users
and keys made by the `rbridge` CLI, a signing-key file holding a new and an old key, and
--trusted-proxies 127.0.0.1, so each test speaks from its own X-Forwarded-For address and the
per-address throttle of one test does not lock out the next. Every secret used is recorded;
the last test reads the whole log and finds none of them.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import time

import jwt
import pytest
import requests

from rbridge.gateway import users
from serverproc import Server, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]

PASSWORDS = {"root": "root-Pa55word-for-sec", "sam": "sam-Pa55word-for-sec",
             "victim": "victim-Pa55word-for-sec", "changer": "changer-Pa55word-for-sec",
             "gone": "gone-Pa55word-for-sec"}
ROLES = {"root": "admin"}
ROW = {"wt": 2.5, "hp": 110}
SECRETS: set[str] = set(PASSWORDS.values())
_addresses = (f"203.0.113.{i}" for i in itertools.count(1))


def keep(secret: str) -> str:
    SECRETS.add(secret)
    return secret


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RBRIDGE_")}
    return subprocess.run([sys.executable, "-m", "rbridge", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)


def basic(name: str, password: str | None = None) -> dict:
    token = base64.b64encode(f"{name}:{password or PASSWORDS[name]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Client:
    """Plain requests (no session credentials), each test from its own client address."""

    def __init__(self, url: str):
        self.url, self.ip = url, next(_addresses)

    def __call__(self, method: str, path: str, headers: dict | None = None, **kw) -> requests.Response:
        headers = {"X-Forwarded-For": self.ip, **(headers or {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def login(self, name: str, password: str | None = None) -> requests.Response:
        return self("POST", "/login", json={"username": name, "password": password or PASSWORDS[name]})

    def predict(self, headers: dict, rows=None) -> requests.Response:
        return self("POST", "/models/cars/predict", headers, json={"data": rows or [ROW]})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("security")
    models = work / "models"
    models.mkdir()
    rscript(f'saveRDS(lm(mpg ~ wt + hp, data = mtcars), "{models}/cars.rds")')
    users_file = work / "users.json"
    for name, password in PASSWORDS.items():
        out = cli("user", "add", name, "--role", ROLES.get(name, "scorer"), "--users", str(users_file),
                  "--password-stdin", stdin=password + "\n")
        assert out.returncode == 0, out.stderr
    new_key, old_key = keep(secrets.token_urlsafe(48)), keep(secrets.token_urlsafe(48))
    key_file = work / "signing.key"
    key_file.write_text(f"{new_key}\n{old_key}\n")
    server = Server(models, work, "--workers", "1", "--signing-key-file", str(key_file), "--token-ttl", "60",
                    "--trusted-proxies", "127.0.0.1", "--max-body", "65536", "--max-rows", "100",
                    "--cors-origins", "https://app.example")
    try:
        yield {"server": server, "users": users_file, "keys": (new_key.encode(), old_key.encode())}
    finally:
        server.stop()


@pytest.fixture()
def c(env) -> Client:
    return Client(env["server"].url)


def error(r: requests.Response) -> str:
    return r.json()["error"]["code"]


def fingerprint(users_file, name: str) -> str:
    return users.fingerprint(users.read_file(users_file)["users"][name])


def forge(key: bytes, sub: str, fp: str, **claims) -> str:
    now = int(time.time())
    body = {"iss": "rbridge", "aud": "rbridge", "sub": sub, "role": "scorer", "fp": fp, "iat": now,
            "exp": now + 60, "jti": secrets.token_urlsafe(8), **claims}
    return keep(jwt.encode(body, key, algorithm="HS256", headers={"kid": hashlib.sha256(key).hexdigest()[:8]}))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- who may call -----------------------------------------------------------------------------
def test_no_credentials(c):
    assert c("GET", "/healthz").status_code == 200 and c("GET", "/readyz").status_code == 200
    for method, path in (("GET", "/models"), ("POST", "/models/cars/predict"), ("GET", "/status"),
                         ("GET", "/metrics"), ("GET", "/models/cars")):
        r = c(method, path, json={"data": [ROW]} if method == "POST" else None)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert error(r) == "unauthorized"


def test_wrong_password_and_unknown_user_look_the_same(c):
    wrong = c.login("sam", keep("not-sams-password"))
    unknown = c.login("nobody-at-all", keep("whatever-password"))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() and error(wrong) == "bad_credentials"
    basic_wrong = c.predict(basic("sam", "not-sams-password"))
    basic_unknown = c.predict(basic("nobody-at-all", "whatever-password"))
    assert basic_wrong.status_code == basic_unknown.status_code == 401
    assert basic_wrong.json() == basic_unknown.json()
    # a password typed into the user field is not logged either (the log test checks)
    assert c.login(keep("sam-Pa55word-typed-as-name"), "x" * 10).status_code == 401


def test_login_refresh_logout(c):
    r = c.login("sam")
    assert r.status_code == 200
    pair = r.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 60
    access, refresh = keep(pair["access_token"]), keep(pair["refresh_token"])
    assert c.predict(bearer(access)).status_code == 200
    assert c.predict(bearer(refresh)).status_code == 401              # not an access token

    r = c("POST", "/login/refresh", json={"refresh_token": refresh})
    assert r.status_code == 200
    access2, refresh2 = keep(r.json()["access_token"]), keep(r.json()["refresh_token"])
    assert c.predict(bearer(access2)).status_code == 200
    again = c("POST", "/login/refresh", json={"refresh_token": refresh})   # rotated: used once
    assert again.status_code == 401 and error(again) == "token_revoked"

    assert c("POST", "/logout", json={"refresh_token": refresh2}).status_code == 200
    after = c("POST", "/login/refresh", json={"refresh_token": refresh2})
    assert after.status_code == 401 and error(after) == "token_revoked"
    assert c("POST", "/login/refresh", json={}).status_code == 400


def test_expired_token(c, env):
    now = int(time.time())
    token = forge(env["keys"][0], "sam", fingerprint(env["users"], "sam"), iat=now - 600, exp=now - 300)
    r = c.predict(bearer(token))
    assert r.status_code == 401 and error(r) == "token_expired"


def test_token_signed_with_another_key(c, env):
    fp = fingerprint(env["users"], "sam")
    stranger = keep(secrets.token_urlsafe(48)).encode()
    r = c.predict(bearer(forge(stranger, "sam", fp)))
    assert r.status_code == 401 and error(r) == "invalid_token"
    # the right kid but another key's signature
    good = jwt.get_unverified_header(forge(env["keys"][0], "sam", fp))["kid"]
    wrong = keep(jwt.encode({"iss": "rbridge", "aud": "rbridge", "sub": "sam", "fp": fp, "iat": int(time.time()),
                             "exp": int(time.time()) + 60, "jti": "j"}, stranger, headers={"kid": good}))
    assert c.predict(bearer(wrong)).status_code == 401


def test_previous_signing_key_still_verifies(c, env):
    fp = fingerprint(env["users"], "sam")
    assert c.predict(bearer(forge(env["keys"][1], "sam", fp))).status_code == 200   # second line: rotation
    assert c.predict(bearer(forge(env["keys"][0], "sam", fp))).status_code == 200


def test_tampered_token(c):
    access = keep(c.login("sam").json()["access_token"])
    head, body, sig = access.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["role"], claims["sub"] = "admin", "root"
    body2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for token in (f"{head}.{body2}.{sig}", access[:-3] + ("AAA" if not access.endswith("AAA") else "BBB")):
        r = c("GET", "/status", bearer(keep(token)))
        assert r.status_code == 401 and error(r) == "invalid_token"


def test_scorer_cannot_call_admin_endpoints(c):
    for path in ("/status", "/metrics"):
        r = c("GET", path, basic("sam"))
        assert r.status_code == 403 and error(r) == "forbidden", path
        assert c("GET", path, basic("root")).status_code == 200
    token = keep(c.login("sam").json()["access_token"])
    assert c("GET", "/status", bearer(token)).status_code == 403


def test_status_shows_no_secret(c, env):
    text = c("GET", "/status", basic("root")).text
    for secret in (*PASSWORDS.values(), *(k.decode() for k in env["keys"])):
        assert secret not in text


# -- API keys ---------------------------------------------------------------------------------
def test_api_keys_rotate_and_revoke_without_restart(c, env):
    path = str(env["users"])
    first = cli("key", "create", "sam", "--name", "first", "--users", path)
    second = cli("key", "create", "sam", "--name", "second", "--users", path)
    assert first.returncode == second.returncode == 0, first.stderr
    key1, key2 = keep(first.stdout.strip()), keep(second.stdout.strip())
    assert key1.startswith("rbk_") and len(key1) > 40
    third = cli("key", "create", "sam", "--users", path)
    assert third.returncode != 0 and "revoke one" in third.stderr
    listed = cli("key", "list", "sam", "--users", path).stdout
    assert key1 not in listed and key2 not in listed and listed.count("sam") == 2
    key1_id = next(line.split("\t")[1] for line in listed.splitlines() if line.endswith("first"))

    assert c.predict(bearer(key1)).status_code == 200
    assert c.predict({"X-API-Key": key2}).status_code == 200
    assert c("GET", "/status", {"X-API-Key": key2}).status_code == 403        # a scorer's key

    assert cli("key", "revoke", "sam", key1_id, "--users", path).returncode == 0
    r = c.predict(bearer(key1))                                                 # the next request
    assert r.status_code == 401 and error(r) == "invalid_key"
    assert c.predict({"X-API-Key": key1}).status_code == 401
    assert c.predict({"X-API-Key": key2}).status_code == 200
    wrong = keep("rbk_" + secrets.token_urlsafe(32))
    assert c.predict({"X-API-Key": wrong}).status_code == 401


def test_repassworded_or_removed_user_tokens_rejected_on_next_request(c, env):
    path = str(env["users"])
    tokens = {name: keep(c.login(name).json()["access_token"]) for name in ("changer", "gone")}
    refresh = keep(c.login("changer").json()["refresh_token"])
    for token in tokens.values():
        assert c.predict(bearer(token)).status_code == 200
    new_password = keep("changer-New-Pa55word")
    assert cli("user", "passwd", "changer", "--users", path, "--password-stdin",
               stdin=new_password + "\n").returncode == 0
    assert cli("user", "remove", "gone", "--users", path).returncode == 0
    for token in tokens.values():
        r = c.predict(bearer(token))
        assert r.status_code == 401 and error(r) == "token_revoked"
    assert c("POST", "/login/refresh", json={"refresh_token": refresh}).status_code == 401
    assert c.predict(basic("changer", new_password)).status_code == 200
    assert c.predict(basic("changer")).status_code == 401                     # the old password


# -- brute force ------------------------------------------------------------------------------
def test_throttling_per_user(env):
    guesser, owner = Client(env["server"].url), Client(env["server"].url)
    for i in range(5):
        assert guesser.login("victim", keep(f"guess-number-{i}")).status_code == 401
    r = owner.login("victim")                        # right password, other address: still locked
    assert r.status_code == 429 and error(r) == "too_many_attempts"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert owner.predict(basic("victim")).status_code == 429
    assert owner.login("sam").status_code == 200     # other users are not affected


def test_throttling_per_address(env):
    sprayer, other = Client(env["server"].url), Client(env["server"].url)
    for i in range(20):
        assert sprayer.login(f"spray-{i}", keep(f"spray-guess-{i}")).status_code == 401
    r = sprayer.login("sam")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert other.login("sam").status_code == 200
    # a client that is not a trusted proxy cannot pick its address: X-Forwarded-For is ignored
    # (here the peer is 127.0.0.1, which is trusted; unit tests cover the untrusted case)
    log = env["server"].log_text()
    assert '"event":"auth_locked"' in log and sprayer.ip in log


# -- limits and headers -----------------------------------------------------------------------
def test_oversized_body_and_rows(c):
    big = {"data": [ROW] * 3000}                                  # > 64 KiB
    r = c("POST", "/models/cars/predict", {**basic("sam"), "Content-Type": "application/json"},
          data=json.dumps(big))
    assert r.status_code == 413 and error(r) == "too_large"

    def chunks(n):                                                # no Content-Length: chunked
        for _ in range(n):
            yield b" " * 4096

    for n in (20, 1000):       # a little over: the app's JSON 413; far over: refused unread
        r = c("POST", "/models/cars/predict", {**basic("sam"), "Content-Type": "application/json"},
              data=chunks(n))
        assert r.status_code == 413
    assert error(c("POST", "/models/cars/predict", {**basic("sam"), "Content-Type": "application/json"},
                   data=chunks(20))) == "too_large"
    r = c.predict(basic("sam"), rows=[ROW] * 101)
    assert r.status_code == 413 and error(r) == "too_many_rows"
    deep = {"data": [{"wt": [[[[[1]]]]], "hp": 1}]}
    r = c.predict(basic("sam"), rows=deep["data"])
    assert r.status_code == 400 and error(r) == "too_deep"


def raw_status(url: str, head: str, body: bytes = b"") -> int:
    """Send a hand-made request (a lying Content-Length); the status of the first answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = s.recv(4096)
    return int(answer.split(b" ", 2)[1])


def test_lying_content_length(c):
    auth = basic("sam")["Authorization"]
    body = json.dumps({"data": [ROW]}).encode()
    head = (f"POST /models/cars/predict HTTP/1.1\nHost: x\nAuthorization: {auth}\n"
            f"Content-Type: application/json\nConnection: close\n")
    assert raw_status(c.url, head + "Content-Length: 1000000000\n") == 413       # refused unread
    assert raw_status(c.url, head + "Content-Length: 5\n", body) == 400          # cut short: not JSON
    assert c.predict(basic("sam")).status_code == 200                            # and still serving


def test_only_data_reaches_r(c):
    r = c.predict(basic("sam"), rows=[{"wt": "system('touch /tmp/pwned')", "hp": 1}])
    assert r.status_code == 422
    for name in ("..%2F..%2Fetc%2Fpasswd", "cars.rds", "%2E%2E", "cars%00"):
        assert c("POST", f"/models/{name}/predict", basic("sam"), json={"data": [ROW]}).status_code in (404, 405)


def test_headers_and_cors(c):
    r = c("GET", "/healthz", {"Origin": "https://evil.example"})
    assert r.headers["Server"] == "rbridge"                        # no product version
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Origin" not in r.headers
    r = c("GET", "/healthz", {"Origin": "https://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    pre = c("OPTIONS", "/models/cars/predict", {"Origin": "https://app.example",
                                                "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
    denied = c("OPTIONS", "/models/cars/predict", {"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert denied.status_code == 403 and "Access-Control-Allow-Origin" not in denied.headers


# -- last: the log holds none of the secrets --------------------------------------------------
def test_zz_no_secret_in_the_log(c, env):
    c("POST", "/login", data=b'{"username": "sam", "password": "' + keep("broken-json-Pa55").encode() + b'"')
    c("GET", "/models", {"Authorization": "Digest " + keep("digest-secret-value")})
    log = env["server"].log_text()
    assert '"event":"auth_failed"' in log
    leaked = sorted(s for s in SECRETS if s in log)
    assert not leaked, f"secrets in the log: {leaked}"
    for record in users.read_file(env["users"])["users"].values():
        assert record["hash"] not in log
