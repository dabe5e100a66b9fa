"""bridge.fetch against a real HTTPS server on 127.0.0.1 with a certificate made here.

A throwaway CA signs a certificate for 127.0.0.1 (with the `cryptography` package when it is
installed, else the `openssl` command); the tests pass that CA as `ca_bundle`.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest

from rbridge.models.fetch import FetchError, fetch_models, read_manifest, redact

MODEL = b"RDX3\n" + bytes(range(256)) * 64          # stands in for an .rds file
SECRET = "sig=VERYSECRETSASTOKEN"


# ---------------------------------------------------------------- certificates
def _make_certs_cryptography(folder: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rbridge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(cert.public_bytes(pem))
    (folder / "key.pem").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "cert.pem", folder / "key.pem"


def _make_certs_openssl(folder: Path) -> tuple[Path, Path, Path]:
    def run(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=rbridge test CA",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "1", "-extfile", "ext.cnf")
    return folder / "ca.pem", folder / "cert.pem", folder / "key.pem"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("needs the cryptography package or the openssl command to make a certificate")
        return _make_certs_openssl(folder)
    return _make_certs_cryptography(folder)


# ---------------------------------------------------------------- servers
class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen: list[str] = []

    def do_GET(self):
        self.seen.append(self.path)
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        if path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", path[len("/redirect-to/"):].replace("|", "/"))
            self.end_headers()
            return
        body = self.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(context: ssl.SSLContext | None):
    handler = type("Handler", (_Handler,), {"files": {}, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    return server, handler, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def https(certs):
    ca, cert, key = certs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server, handler, base = _serve(context)
    handler.files["/models/credit.rds"] = MODEL
    yield handler, base, str(ca)
    server.shutdown()
    server.server_close()


@pytest.fixture
def plain_http():
    server, handler, base = _serve(None)
    handler.files["/credit.rds"] = MODEL
    yield handler, base
    server.shutdown()
    server.server_close()


def manifest(tmp_path: Path, *files: dict) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": list(files)}))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- tests
def test_good_file_is_downloaded_verified_and_placed(https, tmp_path, caplog):
    handler, base, ca = https
    dest = tmp_path / "models"
    m = manifest(tmp_path, {"url": f"{base}/models/credit.rds?sv=2024&{SECRET}",
                            "sha256": sha(MODEL).upper(), "name": "credit.rds"})
    with caplog.at_level(logging.DEBUG):
        paths = fetch_models(m, dest, ca_bundle=ca)
    assert paths == [dest / "credit.rds"]
    assert paths[0].read_bytes() == MODEL
    assert leftovers(dest) == []
    assert handler.seen == [f"/models/credit.rds?sv=2024&{SECRET}"]   # the token did reach the server
    assert "credit.rds" in caplog.text
    assert "VERYSECRET" not in caplog.text                            # ... and never the log

    # Already there with the right hash: not downloaded again.
    assert fetch_models(m, dest, ca_bundle=ca) == paths
    assert len(handler.seen) == 1


def test_hash_mismatch_names_file_and_both_hashes(https, tmp_path, caplog):
    handler, base, ca = https
    dest = tmp_path / "models"
    wrong = sha(b"something else")
    m = manifest(tmp_path, {"url": f"{base}/models/credit.rds?{SECRET}", "sha256": wrong,
                            "name": "credit.rds"})
    with caplog.at_level(logging.DEBUG), pytest.raises(FetchError) as err:
        fetch_models(m, dest, ca_bundle=ca)
    message = str(err.value)
    assert "credit.rds" in message and "mismatch" in message
    assert f"expected {wrong}" in message and f"got {sha(MODEL)}" in message
    assert "VERYSECRET" not in message and "VERYSECRET" not in caplog.text
    assert not (dest / "credit.rds").exists()
    assert leftovers(dest) == []


def test_mismatch_does_not_replace_an_existing_file(https, tmp_path):
    handler, base, ca = https
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "credit.rds").write_bytes(b"old model")
    m = manifest(tmp_path, {"url": f"{base}/models/credit.rds", "sha256": sha(b"new model"),
                            "name": "credit.rds"})
    with pytest.raises(FetchError):
        fetch_models(m, dest, ca_bundle=ca)
    assert (dest / "credit.rds").read_bytes() == b"old model"


def test_http_refused_unless_allowed(plain_http, tmp_path):
    handler, base = plain_http
    dest = tmp_path / "models"
    m = manifest(tmp_path, {"url": f"{base}/credit.rds?{SECRET}", "sha256": sha(MODEL),
                            "name": "credit.rds"})
    with pytest.raises(FetchError, match="plain-HTTP") as err:
        fetch_models(m, dest)
    assert "VERYSECRET" not in str(err.value)
    assert handler.seen == []                     # refused before any request
    assert fetch_models(m, dest, allow_http=True) == [dest / "credit.rds"]
    assert (dest / "credit.rds").read_bytes() == MODEL


def test_redirect_to_http_refused(https, plain_http, tmp_path):
    _, base, ca = https
    _, http_base = plain_http
    target = f"{http_base}/credit.rds".replace("/", "|")
    m = manifest(tmp_path, {"url": f"{base}/redirect-to/{target}", "sha256": sha(MODEL),
                            "name": "credit.rds"})
    with pytest.raises(FetchError, match="plain-HTTP"):
        fetch_models(m, tmp_path / "models", ca_bundle=ca)
    assert not (tmp_path / "models" / "credit.rds").exists()


@pytest.mark.parametrize("name", ["../credit.rds", "sub/credit.rds", "credit.exe", "credit.rds.sh",
                                  ".hidden.rds", "", "credit rds.rds", "/etc/passwd.json"])
def test_bad_names_refused(https, tmp_path, name):
    handler, base, ca = https
    m = manifest(tmp_path, {"url": f"{base}/models/credit.rds", "sha256": sha(MODEL), "name": name})
    with pytest.raises(FetchError, match="not allowed"):
        fetch_models(m, tmp_path / "models", ca_bundle=ca)
    assert handler.seen == []


@pytest.mark.parametrize("name", ["credit.rds", "credit.R", "credit.json", "my_model-v2.1.rds"])
def test_good_names_accepted(tmp_path, name):
    m = manifest(tmp_path, {"url": "https://example.invalid/x", "sha256": "0" * 64, "name": name})
    assert read_manifest(m)[0]["name"] == name


def test_untrusted_certificate_refused(https, tmp_path, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    _, base, _ = https
    m = manifest(tmp_path, {"url": f"{base}/models/credit.rds?{SECRET}", "sha256": sha(MODEL),
                            "name": "credit.rds"})
    with pytest.raises(FetchError, match="SSLError") as err:
        fetch_models(m, tmp_path / "models")
    assert "VERYSECRET" not in str(err.value)


def test_http_error_and_connection_error_hide_the_query(https, tmp_path):
    _, base, ca = https
    m = manifest(tmp_path, {"url": f"{base}/models/missing.rds?{SECRET}", "sha256": sha(MODEL),
                            "name": "missing.rds"})
    with pytest.raises(FetchError, match="HTTP 404") as err:
        fetch_models(m, tmp_path / "models", ca_bundle=ca)
    assert "missing.rds" in str(err.value) and "VERYSECRET" not in str(err.value)

    with socket.socket() as s:                      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = manifest(tmp_path, {"url": f"https://127.0.0.1:{port}/x.rds?{SECRET}", "sha256": sha(MODEL),
                            "name": "x.rds"})
    with pytest.raises(FetchError, match="ConnectionError") as err:
        fetch_models(m, tmp_path / "models", ca_bundle=ca, timeout=5)
    assert "x.rds" in str(err.value) and "VERYSECRET" not in str(err.value)


@pytest.mark.parametrize("doc, match", [
    ("not json", "not valid JSON"),
    ('{"models": []}', "must be a JSON object"),
    ('{"files": [{"url": "https://h/x", "name": "x.rds"}]}', "sha256"),
    ('{"files": [{"url": "https://h/x", "name": "x.rds", "sha256": "abc"}]}', "64 hex"),
    ('{"files": [{"url": "ftp://h/x", "name": "x.rds", "sha256": "' + "0" * 64 + '"}]}', "scheme"),
    ('{"files": [{"url": "https://h/x", "name": "x.rds", "sha256": "' + "0" * 64 + '"},'
     ' {"url": "https://h/y", "name": "x.rds", "sha256": "' + "0" * 64 + '"}]}', "twice"),
])
def test_bad_manifests(tmp_path, doc, match):
    path = tmp_path / "manifest.json"
    path.write_text(doc)
    with pytest.raises(FetchError, match=match):
        read_manifest(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(FetchError, match="cannot read fetch manifest"):
        fetch_models(tmp_path / "nope.json", tmp_path / "models")


def test_redact():
    assert redact("https://user:pw@acct.blob.core.windows.net:443/c/m.rds?sv=1&sig=abc#frag") \
        == "https://acct.blob.core.windows.net:443/c/m.rds"
