"""The command line: `rbridge serve`, `rbridge check`, `rbridge user ...`, `key ...`, and the client
commands `predict`, `publish`, `versions`, `activate` (also `python -m rbridge`)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from rbridge.gateway import keys
from rbridge import settings as settings_mod
from rbridge.gateway import users
from rbridge.errors import ConfigError


def _users_path(args) -> Path:
    """--users, else RBRIDGE_USERS, else ./users.json (the same rule as the server)."""
    return settings_mod.load({"users": args.users}).users


def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ")
    return password


def cmd_serve(args) -> int:
    from rbridge.server import serve
    cli = {f.name: getattr(args, f.name, None) for f in settings_mod.FIELDS if f.cli}
    return serve(settings_mod.load(cli))


def cmd_check(args) -> int:
    from rbridge.check import check
    return check(args.model, args.script, args.config, args.rows)


def cmd_user_add(args) -> int:
    path = _users_path(args)
    created = users.set_user(path, args.name, _read_password(args), args.role)
    print(f"{'created' if created else 'updated'} user {args.name} in {path}")
    return 0


def cmd_user_passwd(args) -> int:
    path = _users_path(args)
    if args.name not in users.read_file(path)["users"]:
        raise ValueError(f"no user {args.name} in {path}")
    users.set_user(path, args.name, _read_password(args))
    print(f"changed the password of {args.name}; their tokens are revoked")
    return 0


def cmd_user_remove(args) -> int:
    path = _users_path(args)
    if not users.remove_user(path, args.name):
        raise ValueError(f"no user {args.name} in {path}")
    print(f"removed user {args.name}; their tokens are revoked")
    return 0


def cmd_user_list(args) -> int:
    for name, record in sorted(users.read_file(_users_path(args))["users"].items()):
        print(f"{name}\t{record.get('role', 'scorer')}\tkeys: {len(record.get('keys', []))}")
    return 0


def cmd_key_create(args) -> int:
    path = _users_path(args)
    key_id, key = keys.create_key(path, args.user, args.name)
    print(f"created key {key_id} for {args.user} in {path}; it is shown only this once:", file=sys.stderr)
    print(key, flush=True)
    return 0


def cmd_key_revoke(args) -> int:
    path = _users_path(args)
    if not keys.revoke_key(path, args.user, args.key_id):
        raise ValueError(f"user {args.user} has no key {args.key_id} (rbridge key list {args.user})")
    print(f"revoked key {args.key_id} of {args.user}; it stops working on the next request")
    return 0


def cmd_key_list(args) -> int:
    for k in keys.list_keys(_users_path(args), args.user):
        print(f"{k['user']}\t{k['id']}\t{k['created']}\t{k['name']}")
    return 0


def _client(args):
    """A client for a running server from --url/--user or RB_URL, RB_USER, RB_PASSWORD, RB_API_KEY
    (the client's own variables, not RBRIDGE_*: those configure the server, which rejects unknown ones)."""
    import os

    from rbridge.client import Client

    url = args.url or os.environ.get("RB_URL")
    if not url:
        raise ValueError("give the server with --url or RB_URL")
    user = args.user or os.environ.get("RB_USER")
    api_key = os.environ.get("RB_API_KEY") if not user else None
    password = None
    if user:
        password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else \
            os.environ.get("RB_PASSWORD") or getpass.getpass(f"password for {user}: ")
    elif not api_key:
        raise ValueError("give --user (with --password-stdin or RB_PASSWORD) or RB_API_KEY")
    return Client(url, username=user, password=password, api_key=api_key,
                  verify=args.cacert or True, timeout=args.timeout)


def _answer(args, call) -> int:
    """Print the server's answer to `call(client)` as JSON; a server's error on stderr, exit 1."""
    import json

    from rbridge.client import BridgeClientError

    with _client(args) as client:
        try:
            answer = call(client)
        except BridgeClientError as exc:
            print(f"rbridge {args.command}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(answer, indent=2))
    return 0


def cmd_predict(args) -> int:
    """Score a CSV or JSON file on a running server: the client side, no R needed."""
    import json

    fmt = args.format or ("csv" if args.file.lower().endswith(".csv") else "json")
    if args.file == "-":
        if args.password_stdin:
            raise ValueError("standard input holds the password; give the rows as a file")
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {args.file}: {exc.strerror}") from None
    if fmt == "csv":
        return _answer(args, lambda client: client.predict_csv(args.model, data))
    return _answer(args, lambda client: client.predict_response(args.model, json.loads(data)))


def cmd_publish(args) -> int:
    """Upload a model (and its script, config) to a running server: it serves it once it loads."""
    for path in (args.model_file, args.script, args.config):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"no file {path}")
    return _answer(args, lambda client: client.publish(args.name, args.model_file, args.script, args.config))


def cmd_versions(args) -> int:
    return _answer(args, lambda client: client.versions(args.name))


def cmd_activate(args) -> int:
    return _answer(args, lambda client: client.activate(args.name, args.version))


def _connection_arguments(sp) -> None:
    sp.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000 (env RB_URL)")
    sp.add_argument("--user", help="sign in as this user (env RB_USER; else the API key in RB_API_KEY)")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from the first line "
                    "of standard input (else RB_PASSWORD, else a prompt)")
    sp.add_argument("--cacert", help="CA bundle to verify an HTTPS server with")
    sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rbridge", description="Serve R models (.rds) over REST.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the models in a folder")
    settings_mod.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    ck = sub.add_parser("check", help="load a model as a worker does and show its class, packages, schema and "
                                      "a prediction: run it before copying a file into models/")
    ck.add_argument("model", help="the model file, NAME.rds (NAME.R and NAME.json beside it are used, as the "
                                  "server uses them)")
    ck.add_argument("--script", help="the score()/init() script (default: NAME.R beside the model)")
    ck.add_argument("--config", help="the model's settings (default: NAME.json beside the model)")
    ck.add_argument("--rows", help="rows to score: FILE.csv (a header line, then rows) or FILE.json "
                                   "({\"data\": [rows]}, {\"columns\": {...}} or a list of rows); default: an "
                                   "example row built from the schema")
    ck.set_defaults(func=cmd_check)

    user = sub.add_parser("user", help="manage the users file").add_subparsers(dest="user_command",
                                                                                required=True)
    for name, func, help_text in (("add", cmd_user_add, "create or update a user"),
                                  ("passwd", cmd_user_passwd, "change a user's password"),
                                  ("remove", cmd_user_remove, "remove a user"),
                                  ("list", cmd_user_list, "list users and roles")):
        sp = user.add_parser(name, help=help_text)
        if name != "list":
            sp.add_argument("name")
        if name in ("add", "passwd"):
            sp.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")
        if name == "add":
            sp.add_argument("--role", choices=users.ROLES, default=None,
                            help="scorer (scores), publisher (also publishes models), admin (everything); default: scorer, "
                                 "or the user's current role")
        sp.add_argument("--users", default=None, help="users file (default ./users.json; env RBRIDGE_USERS)")
        sp.set_defaults(func=func)

    key = sub.add_parser("key", help="manage API keys (two per user at most)").add_subparsers(
        dest="key_command", required=True)
    sp = key.add_parser("create", help="make a key for a user and print it (once)")
    sp.add_argument("user")
    sp.add_argument("--name", default=None, help="a label for the key, e.g. the client using it")
    sp.set_defaults(func=cmd_key_create)
    sp = key.add_parser("revoke", help="revoke a user's key")
    sp.add_argument("user")
    sp.add_argument("key_id")
    sp.set_defaults(func=cmd_key_revoke)
    sp = key.add_parser("list", help="list keys (ids and creation times, never the keys)")
    sp.add_argument("user", nargs="?")
    sp.set_defaults(func=cmd_key_list)
    for sp in key.choices.values():
        sp.add_argument("--users", default=None, help="users file (default ./users.json; env RBRIDGE_USERS)")

    pr = sub.add_parser("predict", help="score a CSV or JSON file on a running server (a client)")
    pr.add_argument("file", help="rows: FILE.csv (a header line, then rows) or FILE.json ({\"data\": [rows]}, "
                                 "{\"columns\": {...}} or a list of rows); - for standard input")
    pr.add_argument("--model", required=True, help="the model's name")
    pr.add_argument("--format", choices=("csv", "json"), help="the file's format (default: from its name)")
    _connection_arguments(pr)
    pr.set_defaults(func=cmd_predict)

    pub = sub.add_parser("publish", help="upload a model to a running server (a publisher; it serves "
                                         "it once it loads, else says why and keeps the old version)")
    pub.add_argument("name", help="the model's name on the server")
    pub.add_argument("model_file", metavar="model.rds", help="the model, saved with saveRDS()")
    pub.add_argument("--script", help="<name>.R defining score(model, newdata) (and init(model))")
    pub.add_argument("--config", help="<name>.json: version, description, schema, predict_args, ...")
    pub.set_defaults(func=cmd_publish)
    ver = sub.add_parser("versions", help="list the versions of a model a running server keeps")
    ver.add_argument("name")
    ver.set_defaults(func=cmd_versions)
    act = sub.add_parser("activate", help="serve another kept version of a model (rollback)")
    act.add_argument("name")
    act.add_argument("version", type=int, help="the version's number (rbridge versions NAME)")
    act.set_defaults(func=cmd_activate)
    for sp in (pub, ver, act):
        _connection_arguments(sp)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"rbridge: {exc}", file=sys.stderr)
        return 2
