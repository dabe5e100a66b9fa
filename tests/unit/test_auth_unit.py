"""Security pieces without R or a server: throttle, client address, API keys, tokens, redaction."""

from __future__ import annotations

import base64
import json
import os
import stat
import statistics
import threading
import time

import jwt
import pytest

from rbridge.gateway import keys

from rbridge.gateway import users
from rbridge.gateway.auth import AUDIENCE, REFRESH_AUDIENCE, Authenticator, key_id, redact
from rbridge.errors import Unauthorized
from rbridge.gateway.throttle import Throttle, TooManyAttempts, client_address, parse_networks

SIGNING = b"s" * 40
OLD_SIGNING = b"o" * 40


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# -- throttle ---------------------------------------------------------------------------------
def test_throttle_locks_a_user_after_five_failures_then_doubles():
    clock = Clock()
    t = Throttle(clock=clock)
    attempt = t.keys("alice", "10.0.0.1")
    for _ in range(4):
        t.check(attempt)
        assert t.failure(attempt) == []
    assert t.failure(attempt) == [("user:alice", 60.0)]
    with pytest.raises(TooManyAttempts) as err:
        t.check(attempt)
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "60"
    t.check(t.keys("bob", "10.0.0.1"))          # other users from the same address still may try
    clock.now += 61
    t.check(attempt)
    for _ in range(5):
        t.failure(attempt)
    with pytest.raises(TooManyAttempts) as err:
        t.check(attempt)
    assert err.value.headers["Retry-After"] == "120"     # exponential


def test_throttle_window_and_success():
    clock = Clock()
    t = Throttle(clock=clock)
    attempt = t.keys("alice", None)
    for _ in range(4):
        t.failure(attempt)
    clock.now += 61                                      # old failures leave the window
    assert t.failure(attempt) == []
    for _ in range(3):
        t.failure(attempt)
    t.success("alice")
    assert t.failure(attempt) == []                      # count restarted


def test_throttle_per_address_across_users_and_bounded():
    clock = Clock()
    t = Throttle(clock=clock, max_entries=50)
    for i in range(19):
        t.failure(t.keys(f"u{i}", "192.0.2.7"))
    assert t.failure(t.keys("u19", "192.0.2.7")) == [("addr:192.0.2.7", 60.0)]
    with pytest.raises(TooManyAttempts):
        t.check(t.keys("anyone", "192.0.2.7"))
    t.check(t.keys("anyone", "192.0.2.8"))
    for i in range(500):
        t.failure(t.keys(f"spray{i}", None))
    assert len(t) <= 50


def test_client_address_trusts_forwarded_for_only_from_proxies():
    proxies = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    assert client_address("203.0.113.5", "1.2.3.4", proxies) == "203.0.113.5"      # not a proxy
    assert client_address("10.1.2.3", "198.51.100.9", proxies) == "198.51.100.9"
    # the client may prepend anything; the right-most untrusted hop counts
    assert client_address("10.1.2.3", "6.6.6.6, 198.51.100.9, 10.9.9.9", proxies) == "198.51.100.9"
    assert client_address("10.1.2.3", None, proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", "garbage", proxies) == "10.1.2.3"
    assert client_address("127.0.0.1", "1.2.3.4", ()) == "127.0.0.1"                # none trusted
    assert client_address("::ffff:10.0.0.1", "[2001:db8::1]", proxies) == "2001:db8::1"


# -- users file and keys ----------------------------------------------------------------------
@pytest.fixture()
def users_file(tmp_path):
    path = tmp_path / "users.json"
    users.set_user(path, "alice", "alice-password", role="scorer")
    return path


def test_users_file_is_0600_and_written_atomically(users_file):
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    before = users_file.stat().st_ino
    users.set_user(users_file, "bob", "bob-password", role="admin")
    assert users_file.stat().st_ino != before                          # replaced, never rewritten
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert not [p for p in users_file.parent.iterdir() if p.name.startswith(".users.json.") and
                not p.name.endswith(".lock")]
    with pytest.raises(ValueError):
        users.set_user(users_file, "carol", "short")
    with pytest.raises(ValueError):
        users.set_user(users_file, "bad name", "long-enough-password")


def test_key_create_list_revoke(users_file):
    k1, key1 = keys.create_key(users_file, "alice", "laptop")
    k2, key2 = keys.create_key(users_file, "alice")
    assert key1.startswith("rbk_") and len(key1) >= 40 and key1 != key2
    with pytest.raises(ValueError, match="revoke one"):
        keys.create_key(users_file, "alice")
    with pytest.raises(ValueError, match="no user"):
        keys.create_key(users_file, "nobody")
    text = users_file.read_text()
    assert key1 not in text and key2 not in text and keys.digest(key1) in text
    listed = keys.list_keys(users_file)
    assert [(k["id"], k["name"]) for k in listed] == [(k1, "laptop"), (k2, "default")]
    assert all(set(k) == {"user", "id", "name", "created"} for k in listed)

    store = users.UserStore(users_file)
    assert store.by_key(key1)[0].name == "alice" and store.by_key(key1)[1] == k1
    assert store.by_key(key1 + "x") is None and store.by_key("rbk_nothing") is None
    assert keys.revoke_key(users_file, "alice", k1) and not keys.revoke_key(users_file, "alice", k1)
    store.refresh()                                     # the server re-reads on the next request
    assert store.by_key(key1) is None and store.by_key(key2) is not None
    keys.create_key(users_file, "alice")                # room again for a second key


def test_concurrent_edits_lose_nothing(users_file):
    errors = []

    def add(i):
        try:
            keys.create_key(users_file, "alice") if i < 2 else \
                users.remove_user(users_file, "nobody")
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys.list_keys(users_file, "alice")) == 2 and not errors


# -- tokens -----------------------------------------------------------------------------------
@pytest.fixture()
def auth(users_file):
    return Authenticator(users.UserStore(users_file), [SIGNING, OLD_SIGNING], 60, 600)


def forge(key: bytes, **claims) -> str:
    now = int(time.time())
    body = {"iss": "rbridge", "aud": AUDIENCE, "sub": "alice", "role": "scorer", "iat": now,
            "exp": now + 60, "jti": "x"}
    body.update(claims)
    return jwt.encode(body, key, algorithm="HS256", headers={"kid": key_id(key)})


def test_token_checks(auth, users_file):
    pair = auth.issue(auth.store.get("alice"))
    assert set(pair) >= {"access_token", "token_type", "expires_in", "refresh_token"}
    assert auth.verify_token(pair["access_token"]).name == "alice"
    fp = auth.store.get("alice").fingerprint

    def code(token):
        with pytest.raises(Unauthorized) as err:
            auth.verify_token(token)
        return err.value.code

    now = int(time.time())
    assert code(forge(SIGNING, fp=fp, iat=now - 600, exp=now - 300)) == "token_expired"
    assert auth.verify_token(forge(OLD_SIGNING, fp=fp)).name == "alice"      # rotation: old key verifies
    other = b"x" * 40
    assert code(forge(other, fp=fp)) == "invalid_token"                       # unknown kid
    assert code(jwt.encode({"sub": "alice"}, other, headers={"kid": key_id(SIGNING)})) == "invalid_token"
    head, body, sig = pair["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["role"] = "admin"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert code(f"{head}.{forged_body}.{sig}") == "invalid_token"             # tampered
    assert code(pair["refresh_token"]) == "invalid_token"                     # not an access token
    assert code(jwt.encode({"sub": "alice"}, None, algorithm="none")) == "invalid_token"
    odd_header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":["a"]}').rstrip(b"=").decode()
    assert code(f"{odd_header}.{body}.{sig}") == "invalid_token"
    assert code("not a token") == "invalid_token"

    users.set_user(users_file, "alice", "a-new-password")                     # re-password: revoked
    assert code(pair["access_token"]) == "token_revoked"


def test_refresh_rotates_and_logout_revokes(auth):
    pair = auth.issue(auth.store.get("alice"))
    with pytest.raises(Unauthorized):
        auth.refresh(pair["access_token"])                 # an access token is not a refresh token
    second = auth.refresh(pair["refresh_token"])
    with pytest.raises(Unauthorized) as err:
        auth.refresh(pair["refresh_token"])                # used once: rotated away
    assert err.value.code == "token_revoked"
    auth.logout(second["refresh_token"], second["access_token"])
    with pytest.raises(Unauthorized):
        auth.refresh(second["refresh_token"])
    with pytest.raises(Unauthorized):
        auth.verify_token(second["access_token"])          # sent along with the logout
    with pytest.raises(Unauthorized):
        auth.verify_token(pair["access_token"])            # its refresh token was reused: all revoked


def test_api_keys_as_bearer_and_header(auth, users_file):
    kid, key = keys.create_key(users_file, "alice")
    assert auth.authenticate(f"Bearer {key}").name == "alice"
    assert auth.authenticate(None, key).name == "alice"
    with pytest.raises(Unauthorized) as err:
        auth.authenticate(None, key[:-1] + ("A" if key[-1] != "A" else "B"))
    assert err.value.code == "invalid_key"
    keys.revoke_key(users_file, "alice", kid)
    with pytest.raises(Unauthorized):
        auth.authenticate(None, key)


def test_passwords_throttled_same_error_for_unknown_users(auth):
    def fail(name, client="198.51.100.1"):
        with pytest.raises(Unauthorized) as err:
            auth.login(name, "wrong-password", client)
        return err.value.code, err.value.message

    assert fail("alice") == fail("nobody")
    assert auth.login("alice", "alice-password", "198.51.100.1").name == "alice"   # success clears
    for _ in range(5):
        fail("alice", "198.51.100.2")
    with pytest.raises(TooManyAttempts):
        auth.login("alice", "alice-password", "198.51.100.3")      # locked even with the right one
    basic = "Basic " + base64.b64encode(b"alice:alice-password").decode()
    with pytest.raises(TooManyAttempts):
        auth.authenticate(basic, client="198.51.100.3")


@pytest.mark.slow
def test_unknown_user_costs_as_much_as_a_wrong_password(users_file):
    store = users.UserStore(users_file)
    times = {"known": [], "unknown": []}
    for _ in range(4):
        for kind, name in (("known", "alice"), ("unknown", "nobody")):
            t = time.perf_counter()
            assert store.verify_password(name, "wrong-password") is None
            times[kind].append(time.perf_counter() - t)
    known, unknown = statistics.median(times["known"]), statistics.median(times["unknown"])
    assert 0.6 < unknown / known < 1.6, times


# -- redaction and JSON depth -----------------------------------------------------------------
def test_redact_scrubs_credentials():
    jwt_text = forge(SIGNING)
    lines = [
        'Authorization: Basic YWxpY2U6c2VjcmV0LXBhc3M=',
        f'Authorization: Bearer {jwt_text}',
        f"token {jwt_text} in a message",
        'X-API-Key: rbk_abcdefghijklmnopqrstuvwxyz0123456789',
        json.dumps({"message": 'body {"username": "a", "password": "hunter2 with spaces"}'}),
        "password=hunter2&user=a",
        json.dumps({"refresh_token": "opaque-value"}),
    ]
    for line in lines:
        out = redact(line)
        for secret in ("YWxpY2U6c2VjcmV0LXBhc3M=", jwt_text, "abcdefghijklmnop", "hunter2", "opaque-value"):
            assert secret not in out, (line, out)
    assert redact("POST /models/cars/predict 200 token_ttl=3600") == "POST /models/cars/predict 200 token_ttl=3600"


def test_json_depth():
    from rbridge.gateway.bodies import json_depth
    assert json_depth(b'{"data": [{"a": 1}]}') == 3
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1
    assert json_depth(b'{"a": "\\\\", "b": [[[1]]]}') == 4
    assert json_depth(b'{"a": "\\"[[[["}') == 1
    deep = b'{"data": [{"a": ' + b"[" * 50 + b"]" * 50 + b"}]}"
    assert json_depth(deep) == 53
    big = json.dumps({"data": [{"a": 1.5, "b": "x[y"} for _ in range(5000)]}).encode()
    assert json_depth(big) == 3
    assert json_depth(big.replace(b'"a": 1.5', b'"a": [[[[1]]]]', 1)) == 7


def test_initial_admin_password_file_is_private(tmp_path):
    path = tmp_path / "users.json"
    password = users.ensure_initial_admin(path)
    secret = tmp_path / users.INITIAL_PASSWORD_FILE
    assert secret.read_text().strip() == password
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert password not in path.read_text()
    assert users.ensure_initial_admin(path) is None
    os.unlink(secret)


def test_concurrent_basic_logins_hash_the_password_once(auth, monkeypatch):
    """A client pool opening 16 connections at once costs one slow hash, not 16."""
    calls = []
    real = auth.store.verify_password

    def counting(name, password):
        calls.append(name)
        time.sleep(0.2)                  # a slow hash: the others arrive while it runs
        return real(name, password)
    monkeypatch.setattr(auth.store, "verify_password", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(auth.basic("alice", "alice-password")))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(u.name == "alice" for u in results)
    assert calls == ["alice"]


def test_throttle_counts_an_attempt_when_it_starts():
    """Attempts under way count: sixty guesses at once get no more checks than the limit."""
    t = Throttle(clock=Clock())
    attempt = t.keys("alice", "10.0.0.1")
    for _ in range(5):
        t.start(attempt)                                 # five checks running at once
    with pytest.raises(TooManyAttempts) as err:
        t.start(attempt)                                 # a sixth could not be told apart
    assert err.value.headers["Retry-After"] == "1" and "at once" in err.value.message
    assert t.finish(attempt, failed=False) == []         # a success (or the server's own error)
    for _ in range(3):
        assert t.finish(attempt, failed=True) == []
    assert t.finish(attempt, failed=True) == []          # four failures: one more allowed
    t.start(attempt)
    assert t.finish(attempt, failed=True) == [("user:alice", 60.0)]
    with pytest.raises(TooManyAttempts):
        t.start(attempt)


def test_users_file_checked_as_a_whole(users_file):
    good = users.read_file(users_file)
    record = good["users"]["alice"]
    for damage, words in (({"keys": 5}, '"keys"'), ({"hash": 7}, '"hash"'), ({"hash": "plain"}, "argon2"),
                          ({"role": ["admin"]}, '"role"'), ({"keys": [{"id": "k", "sha256": "zz"}]}, '"keys"')):
        users_file.write_text(json.dumps({"users": {"alice": {**record, **damage}}}))
        with pytest.raises(ValueError, match=words):
            users.read_file(users_file)
    users_file.write_text(json.dumps({"users": {"alice": {**record, "role": "root"}}}))
    assert users.read_file(users_file)["users"]["alice"]["role"] == "root"   # refused at sign-in instead
