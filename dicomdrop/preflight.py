"""Everything about a configuration that can be checked without data, checked before any.

A mistake such as a misspelt tag in a site rule would otherwise show only when the first drop
reaches de-identification, after its patients were registered, and every drop would go to
quarantine. ``dicomdrop check-config`` runs these checks and prints each result; ``dicomdrop
watch`` runs them at start and refuses to start on the first failure. Each check is
independent, so one report lists every problem at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicomdrop.config import Settings
from dicomdrop.errors import DicomdropError

#: Folders that must exist and be writable before the daemon takes a drop.
WORKING_FOLDERS = ("inbox", "work", "outbox", "quarantine", "originals")


@dataclass(frozen=True)
class CheckResult:
    """One check: ``name`` (what was checked), ``ok`` and a one-line ``detail``."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        """The result as a JSON object."""
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def check_deid(settings: Settings) -> list[CheckResult]:
    """Every site rule (tag, action, value, pattern) and the private keep lists compile."""
    from dicomdrop.deid.profile import compile_profile
    from dicomdrop.deid.rules import compile_rule

    results: list[CheckResult] = []
    rules_ok = True
    for index, rule in enumerate(settings.deid.rules):
        try:
            compile_rule(rule, index)
        except DicomdropError as exc:
            rules_ok = False
            results.append(CheckResult("deid rules", False, exc.message))
    if rules_ok:
        try:
            compile_profile(settings.deid)
        except DicomdropError as exc:
            results.append(CheckResult("deid profile", False, exc.message))
        else:
            results.append(
                CheckResult(
                    "deid profile",
                    True,
                    f"{settings.deid.profile}, {len(settings.deid.rules)} site rule(s), "
                    f"{len(settings.deid.private_keep)} private keep rule(s)",
                )
            )
    return results


def check_key(settings: Settings) -> list[CheckResult]:
    """The key file exists, has 32 bytes and is private."""
    from dicomdrop.secret import load_key

    try:
        load_key(settings.security.key_file)
    except DicomdropError as exc:
        return [CheckResult("key", False, exc.message)]
    return [CheckResult("key", True, f"{settings.security.key_file} (32 bytes, private)")]


def check_folders(settings: Settings) -> list[CheckResult]:
    """Each working folder exists and is writable; inbox and work share one filesystem (a claim
    is a rename, which cannot cross filesystems)."""
    results: list[CheckResult] = []
    for name in WORKING_FOLDERS:
        folder = getattr(settings.paths, name)
        if not folder.is_dir():
            detail = (
                f"[paths] {name} = {folder} does not exist; create the folders with "
                "'dicomdrop init'"
            )
            results.append(CheckResult(f"folder {name}", False, detail))
        elif not os.access(folder, os.W_OK | os.X_OK):
            detail = (
                f"[paths] {name} = {folder} is not writable by this user; fix its owner or mode"
            )
            results.append(CheckResult(f"folder {name}", False, detail))
        else:
            results.append(CheckResult(f"folder {name}", True, str(folder)))
    inbox, work = settings.paths.inbox, settings.paths.work
    if inbox.is_dir() and work.is_dir():
        if inbox.stat().st_dev != work.stat().st_dev:
            detail = (
                f"[paths] inbox ({inbox}) and work ({work}) are on different filesystems; a "
                "drop is claimed by renaming it into work, so put both on one filesystem"
            )
            results.append(CheckResult("inbox and work", False, detail))
        else:
            results.append(CheckResult("inbox and work", True, "on one filesystem"))
    return results


def check_delivery(settings: Settings) -> list[CheckResult]:
    """``[delivery] group`` exists on this host."""
    from dicomdrop.delivery_access import group_id

    try:
        gid = group_id(settings.delivery.group)
    except DicomdropError as exc:
        return [CheckResult("delivery group", False, exc.message)]
    if gid is None:
        return []
    return [CheckResult("delivery group", True, f"{settings.delivery.group} (gid {gid})")]


def check_ports(settings: Settings) -> list[CheckResult]:
    """``[daemon] http_port`` is free (0: monitoring off).

    Only meaningful while no daemon of this config runs: a running daemon holds the port.
    """
    from dicomdrop.ports import port_in_use_message, port_is_free

    port = settings.daemon.http_port
    if port == 0:
        return [CheckResult("http_port", True, "0 (monitoring off)")]
    if not port_is_free(port):
        return [CheckResult("http_port", False, port_in_use_message(port))]
    return [CheckResult("http_port", True, f"{port} is free on 127.0.0.1")]


def check_network(settings: Settings) -> list[CheckResult]:
    """The C-STORE listener (when enabled): its port is free, caller hosts resolve, TLS files
    load; network delivery targets: credential and TLS files can be read."""
    import socket
    import urllib.parse

    from dicomdrop.delivery.base import client_tls_context
    from dicomdrop.network.listener import resolve_hosts, tls_context

    results: list[CheckResult] = []
    network = settings.network
    if network.enabled:
        address = f"{network.bind_address}:{network.port}"
        try:
            with socket.socket() as probe:
                # As the listener binds: connections of a previous run in TIME_WAIT (after a
                # kill or a restart) do not make the port busy.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((network.bind_address, network.port))
            results.append(CheckResult("network listener", True, f"{address} is free"))
        except OSError as exc:
            detail = (
                f"[network] cannot listen on {address} ({exc.strerror}); stop what listens "
                "there, or choose another port or bind_address"
            )
            results.append(CheckResult("network listener", False, detail))
        try:
            for caller in network.allowed_callers:
                resolve_hosts(caller.hosts)
            tls = tls_context(network)
            detail = f"{len(network.allowed_callers)} allowed caller(s)" + (", TLS" if tls else "")
            results.append(CheckResult("network callers and TLS", True, detail))
        except DicomdropError as exc:
            results.append(CheckResult("network callers and TLS", False, exc.message))
    for target in settings.delivery.network_targets:
        name = f"delivery target {target.name}"
        problem = None
        for key in ("bearer_token_file", "basic_auth_file"):
            path = getattr(target, key)
            if path is not None and not os.access(path, os.R_OK):
                problem = f"[[delivery.targets]] {target.name}: {key} {path} cannot be read"
        uses_tls = target.tls if target.kind == "cstore" else target.url.startswith("https")
        if problem is None and uses_tls:
            try:
                client_tls_context(target)
            except (OSError, ValueError) as exc:
                problem = (
                    f"[[delivery.targets]] {target.name}: TLS files cannot be used "
                    f"({type(exc).__name__}); check tls_ca, tls_certificate, tls_key"
                )
        # The host only: a URL could carry credentials (user:password@), never shown.
        host = urllib.parse.urlsplit(target.url).hostname if target.kind == "stow" else None
        where = host or f"{target.host}:{target.port}"
        results.append(CheckResult(name, problem is None, problem or f"{target.kind} {where}"))
    return results


def check_store(settings: Settings) -> list[CheckResult]:
    """The database: driver installed, server reachable, schema at the shipped head revision."""
    from sqlalchemy.engine import make_url

    from dicomdrop.store.db import HEAD_REVISION, Store

    url = make_url(settings.store_url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    # A check creates nothing: a missing SQLite file is created at the first start.
    if database and database != ":memory:" and not Path(database).exists():
        detail = f"{database} does not exist yet; it is created at the first start"
        return [CheckResult("store", True, detail)]
    try:
        store = Store.open(
            settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms, upgrade=False
        )
    except DicomdropError as exc:
        return [CheckResult("store", False, exc.message)]
    try:
        revision = store.schema_revision()
    except Exception as exc:  # the message may quote the URL; the type says enough here
        detail = f"the schema revision cannot be read ({type(exc).__name__})"
        return [CheckResult("store", False, detail)]
    finally:
        store.close()
    if revision == HEAD_REVISION:
        return [CheckResult("store", True, f"reachable, schema at head ({revision})")]
    if revision is None:
        detail = "reachable, empty: the schema is created at the first start (or 'db upgrade')"
        return [CheckResult("store", True, detail)]
    if revision not in known_revisions():
        detail = (
            f"the schema is at revision {revision}, which this version of dicomdrop does not "
            "know (a newer version upgraded it); run that version"
        )
        return [CheckResult("store", False, detail)]
    detail = (
        f"reachable, schema at revision {revision}, this version needs {HEAD_REVISION}: run "
        "'dicomdrop db upgrade' (the daemon also upgrades at start)"
    )
    return [CheckResult("store", True, detail)]


def known_revisions() -> set[str]:
    """Every schema revision shipped with this version."""
    from alembic.script import ScriptDirectory

    from dicomdrop.store.db import alembic_config

    return {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


#: Every check, in the order reported.
CHECKS: tuple[Callable[[Settings], list[CheckResult]], ...] = (
    check_deid,
    check_key,
    check_folders,
    check_store,
    check_delivery,
    check_ports,
    check_network,
)


def run_checks(settings: Settings, *, store: bool = True) -> list[CheckResult]:
    """Every check's results (``store=False`` leaves the database out, for a caller that opens
    and upgrades it itself)."""
    results: list[CheckResult] = []
    for check in CHECKS:
        if check is check_store and not store:
            continue
        results.extend(check(settings))
    return results
