"""The command line: `rbridge serve`, `rbridge user ...` (also `python -m bridge`)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from . import settings as settings_mod
from . import users
from .errors import ConfigError


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
    from .server import serve
    cli = {f.name: getattr(args, f.name, None) for f in settings_mod.FIELDS if f.cli}
    return serve(settings_mod.load(cli))


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
        print(f"{name}\t{record.get('role', 'scorer')}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rbridge", description="Serve R models (.rds) over REST.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the models in a folder")
    settings_mod.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

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
                            help="admin or scorer (default: scorer, or the user's current role)")
        sp.add_argument("--users", default=None, help="users file (default ./users.json; env RBRIDGE_USERS)")
        sp.set_defaults(func=func)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as exc:
        print(f"rbridge: {exc}", file=sys.stderr)
        return 2
