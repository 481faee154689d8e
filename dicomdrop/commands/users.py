"""``dicomdrop user add|list|disable``: the local users of the steward console."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.commands.registry import open_store
from dicomdrop.store.audit import current_user


def register(sub: Any) -> None:
    """Add ``user``."""
    from dicomdrop.store.users import ROLES

    u = sub.add_parser("user", help="users of the steward console (dicomdrop web)")
    usub = u.add_subparsers(dest="user_command", metavar="ACTION")
    usub.required = True
    p = usub.add_parser(
        "add",
        help="add a console user (password from the terminal, or one line on stdin)",
        description="Roles: operator (holds queue, retry, dashboard; never identities), "
        "steward (also pending matches, release, re-identification), auditor (the audit log). "
        "The password is asked twice on a terminal, else read as the first line of stdin; "
        "only its Argon2 hash is stored. Audited.",
    )
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--by", default=None, help="who adds the user (default: the OS user)")
    add_config_option(p)
    p.set_defaults(func=run_user_add)
    p = usub.add_parser("list", help="console users, their roles and whether they are disabled")
    add_config_option(p)
    p.set_defaults(func=run_user_list)
    p = usub.add_parser("disable", help="disable a console user at once (audited)")
    p.add_argument("name")
    p.add_argument("--by", default=None, help="who disables the user (default: the OS user)")
    add_config_option(p)
    p.set_defaults(func=run_user_disable)


def _read_password() -> str:
    from dicomdrop.store.users import UserError, check_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        check_password(password)
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ")
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    check_password(password)
    return password


def run_user_add(args: argparse.Namespace, ctx: Context) -> int:
    """Add a user."""
    from dicomdrop.store.users import add_user

    password = _read_password()
    store = open_store(ctx)
    try:
        user = add_user(store, args.name, args.role, password, actor=args.by or current_user())
    finally:
        store.close()
    print(f"added {user.name} ({user.role})")
    return 0


def run_user_list(args: argparse.Namespace, ctx: Context) -> int:
    """One line per user."""
    from dicomdrop.store.users import list_users

    store = open_store(ctx)
    try:
        users = list_users(store)
    finally:
        store.close()
    if not users:
        print("no console users; add one with 'dicomdrop user add NAME --role ROLE'")
    for user in users:
        state = "disabled" if user.disabled else "active"
        print(f"{user.name}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%d}")
    return 0


def run_user_disable(args: argparse.Namespace, ctx: Context) -> int:
    """Disable a user."""
    from dicomdrop.store.users import disable_user

    store = open_store(ctx)
    try:
        disable_user(store, args.name, actor=args.by or current_user())
    finally:
        store.close()
    print(f"disabled {args.name}")
    return 0
