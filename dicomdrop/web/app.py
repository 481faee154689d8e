"""The console's routes: each checks the user's role on the server, every form carries a CSRF
token, and every action calls the library function its CLI command calls.

Who may open what (see :mod:`dicomdrop.web.auth`): the holds queue, retries and the dashboard
are for operators and stewards; identities (pending matches, release, re-identification) for
stewards only; the audit log for auditors and stewards. Identity data never appears in a URL
(forms that carry it are POSTed), in a log line, or in a page an operator may open; pages that
show it are sent with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from dicomdrop.config import Settings
from dicomdrop.errors import DicomdropError, StoreError
from dicomdrop.holds import Hold, delete_released, list_holds, release, start_retry
from dicomdrop.quarantine import Quarantine, QuarantineNotFound, QuarantineRecord
from dicomdrop.store.audit import audit_key_from
from dicomdrop.store.db import Store
from dicomdrop.web import text
from dicomdrop.web.auth import (
    AUDIT,
    AUDITOR,
    HOLDS,
    IDENTITIES,
    ConsoleIdentity,
    Forbidden,
    LoginThrottle,
    NotLoggedIn,
    check_csrf,
    csrf_token,
    session_secret,
)
from dicomdrop.web.codes import code_table, help_for
from dicomdrop.web.retries import RetryRunner

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NO_STORE = {"Cache-Control": "no-store"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
Endpoint = Callable[[Request], Awaitable[Response]]


def _job_id(value: str) -> str:
    if not _JOB_ID_RE.fullmatch(value) or ".." in value:
        raise DicomdropError("not a job id", code="console.bad_job")
    return value


def _csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    cell = "" if value is None else str(value)
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


class Console:
    """The application's state (settings, store, key, retry runner) and its endpoints."""

    def __init__(
        self,
        settings: Settings,
        key: bytes,
        store: Store,
        *,
        retries: RetryRunner | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.settings = settings
        self.key = key
        self.store = store
        if store.audit_key is None:
            store.audit_key = audit_key_from(key)  # the console's actions are audited
        self.retries = retries or RetryRunner(settings, key, store)
        self.throttle = throttle or LoginThrottle()
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters["md"] = text.inline_markdown
        env.filters["age"] = text.age
        env.filters["size"] = text.size
        env.filters["utc"] = text.utc
        env.globals["help_for"] = help_for

    # --- who is asking ---------------------------------------------------------------------

    async def user(self, request: Request, roles: Collection[str]) -> ConsoleIdentity:
        """The logged-in user if their role is in ``roles``; else NotLoggedIn or Forbidden."""
        from dicomdrop.store.users import active_user

        name: str | None = None
        generation: int | None = None  # None: the proxy vouches for the user, no cookie
        header = self.settings.web.trusted_user_header
        if header:
            name = request.headers.get(header) or None
        if name is None:
            name, generation = self._session_user(request)
        if name is None:
            raise NotLoggedIn("log in first")
        record = await run_in_threadpool(active_user, self.store, name)
        if record is None or (generation is not None and generation != record.session_generation):
            request.session.clear()
            raise NotLoggedIn("log in first")
        who = ConsoleIdentity(record.name, record.role)
        if not who.may(roles):
            raise Forbidden(f"the role {who.role} may not open this page")
        return who

    def _session_user(self, request: Request) -> tuple[str | None, int | None]:
        """The user name and session generation of a signed, unexpired session cookie."""
        stored = request.session.get("user")
        generation = request.session.get("gen")
        since = request.session.get("since")
        lifetime = self.settings.web.session_minutes * 60
        if (
            isinstance(stored, str)
            and isinstance(generation, int)
            and isinstance(since, int)
            and 0 <= time.time() - since <= lifetime
        ):
            return stored, generation
        return None, None

    async def form(self, request: Request, roles: Collection[str]) -> tuple[ConsoleIdentity, Any]:
        """The user (role checked) and the posted form (CSRF token checked)."""
        who = await self.user(request, roles)
        form = await request.form()
        check_csrf(request, form.get("csrf"))
        return who, form

    def render(
        self,
        request: Request,
        template: str,
        who: ConsoleIdentity | None,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        """A page, with the user, the CSRF token and a pending flash message."""
        flash = request.session.pop("flash", None)
        context.update(
            user=who,
            csrf=csrf_token(request),
            flash=flash,
            may_holds=who is not None and who.may(HOLDS),
            may_identities=who is not None and who.may(IDENTITIES),
            may_audit=who is not None and who.may(AUDIT),
        )
        return self.templates.TemplateResponse(
            request, template, context, status_code=status_code, headers=NO_STORE
        )

    # --- login -----------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        """GET /login."""
        return self.render(request, "login.html", None)

    async def login(self, request: Request) -> Response:
        """POST /login: check the CSRF token, the throttle and the password; audit the login
        or the failure (with the client address, never the password)."""
        from dicomdrop.store.users import LOGIN, LOGIN_FAILED, audit_session, authenticate

        form = await request.form()
        check_csrf(request, form.get("csrf"))
        name = str(form.get("name", "")).strip()
        password = str(form.get("password", ""))
        client = request.client.host if request.client else "-"
        if self.throttle.blocked(client, name):
            log.warning("console: login refused, too many failed attempts")
            return self.render(
                request,
                "login.html",
                None,
                status_code=429,
                error="Too many failed logins. Wait 15 minutes and try again.",
            )
        record = await run_in_threadpool(authenticate, self.store, name, password)
        if record is None:
            self.throttle.failed(client, name)
            await run_in_threadpool(audit_session, self.store, LOGIN_FAILED, name, client)
            log.warning("console: failed login")
            return self.render(
                request, "login.html", None, status_code=401, error="Wrong name or password."
            )
        self.throttle.succeeded(client, name)
        request.session.clear()
        request.session.update(
            user=record.name, gen=record.session_generation, since=int(time.time())
        )
        csrf_token(request)
        await run_in_threadpool(audit_session, self.store, LOGIN, record.name, client)
        log.info("console: %s logged in (%s)", record.name, record.role)
        return RedirectResponse("/", status_code=303)

    async def logout(self, request: Request) -> Response:
        """POST /logout: end the user's sessions (audited). The generation kept in the store is
        raised, so the cookie, and any copy of it, is refused from now on, also after a
        restart."""
        from dicomdrop.store.users import LOGOUT, active_user, audit_session, end_sessions

        form = await request.form()
        check_csrf(request, form.get("csrf"))
        name, generation = self._session_user(request)
        request.session.clear()
        if name is not None:
            record = await run_in_threadpool(active_user, self.store, name)
            if record is not None and record.session_generation == generation:
                await run_in_threadpool(end_sessions, self.store, name)
                client = request.client.host if request.client else "-"
                await run_in_threadpool(audit_session, self.store, LOGOUT, name, client)
                log.info("console: %s logged out", name)
        return RedirectResponse("/login", status_code=303)

    async def home(self, request: Request) -> Response:
        """GET /: the first page the role may open."""
        who = await self.user(request, (*HOLDS, AUDITOR))
        return RedirectResponse("/audit" if who.role == AUDITOR else "/dashboard", 303)

    # --- dashboard -------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        """GET /dashboard: the status, refreshed live, and the per-day chart."""
        who = await self.user(request, HOLDS)
        return self.render(request, "dashboard.html", who, **await self._live_context())

    async def dashboard_live(self, request: Request) -> Response:
        """GET /dashboard/live: the part of the dashboard that refreshes itself."""
        who = await self.user(request, HOLDS)
        return self.render(request, "_live.html", who, **await self._live_context())

    async def _live_context(self) -> dict[str, Any]:
        from dicomdrop.web.chart import per_day_svg
        from dicomdrop.web.dashboard import per_day, status

        report = await run_in_threadpool(status, self.settings)
        days = await run_in_threadpool(per_day, self.store)
        now = datetime.now(UTC)
        return {"status": report, "days": days, "chart": per_day_svg(days), "now": now}

    # --- holds -----------------------------------------------------------------------------

    async def holds(self, request: Request) -> Response:
        """GET /holds?code=: the holds queue, newest first."""
        who = await self.user(request, HOLDS)
        code = request.query_params.get("code") or None
        every = await run_in_threadpool(list_holds, self.settings, self.store)
        shown = every if code is None else await self._filtered(code)
        counts: dict[str, int] = {}
        for hold in every:
            for c in hold.record.codes:
                counts[c] = counts.get(c, 0) + 1
        return self.render(
            request,
            "holds.html",
            who,
            holds=shown,
            code=code,
            counts=dict(sorted(counts.items())),
            table=code_table(),
        )

    async def _filtered(self, code: str) -> list[Hold]:
        return await run_in_threadpool(list_holds, self.settings, self.store, code=code)

    async def hold(self, request: Request) -> Response:
        """GET /holds/{job}: one hold's reasons (file paths for stewards only)."""
        who = await self.user(request, HOLDS)
        job_id = _job_id(request.path_params["job"])
        holds = await run_in_threadpool(list_holds, self.settings, self.store)
        found = next((h for h in holds if h.job_id == job_id), None)
        if found is None:
            return self.render(request, "gone.html", who, status_code=404, job_id=job_id)
        pending = await self._pending_of(found) if who.may(IDENTITIES) else []
        return self.render(request, "hold.html", who, hold=found, pending=pending)

    async def _pending_of(self, hold: Hold) -> list[int]:
        from dicomdrop.store.curation import list_pending
        from dicomdrop.store.registry import Registry

        registry = Registry(self.store, self.key, self.settings.registry)
        pending = await run_in_threadpool(list_pending, registry)
        return [p.id for p in pending if p.seen_in == f"job:{hold.job_id}"]

    async def retry(self, request: Request) -> Response:
        """POST /holds/{job}/retry: claim the held files as a new job and run it."""
        who, _ = await self.form(request, HOLDS)
        job_id = _job_id(request.path_params["job"])
        new_job = await self._retry(job_id, who)
        request.session["flash"] = f"Job {job_id} is being retried as job {new_job}."
        return RedirectResponse(f"/jobs/{new_job}", status_code=303)

    async def _retry(self, job_id: str, who: ConsoleIdentity, reason: str = "retry") -> str:
        new_job = await run_in_threadpool(
            lambda: start_retry(self.settings, self.store, job_id, actor=who.name, reason=reason)
        )
        self.retries.submit(new_job)
        log.info("console: %s retried job %s as %s", who.name, job_id, new_job)
        return new_job

    async def release(self, request: Request) -> Response:
        """POST /holds/{job}/release: mark a reviewed hold released, with a reason (audited);
        its files stay until deleted."""
        who, form = await self.form(request, IDENTITIES)
        job_id = _job_id(request.path_params["job"])
        await run_in_threadpool(
            lambda: release(
                self.settings,
                self.store,
                job_id,
                actor=who.name,
                reason=str(form.get("reason", "")),
            )
        )
        log.info("console: %s released job %s", who.name, job_id)
        request.session["flash"] = (
            f"Job {job_id} released: its files will not be delivered. They stay in quarantine "
            "until you delete them."
        )
        return RedirectResponse(f"/holds/{job_id}", status_code=303)

    async def delete(self, request: Request) -> Response:
        """POST /holds/{job}/delete: delete a released hold's files (audited)."""
        who, form = await self.form(request, IDENTITIES)
        job_id = _job_id(request.path_params["job"])
        await run_in_threadpool(
            lambda: delete_released(
                self.settings,
                self.store,
                job_id,
                actor=who.name,
                reason=str(form.get("reason", "")),
            )
        )
        log.info("console: %s deleted the held files of job %s", who.name, job_id)
        request.session["flash"] = f"The held files of job {job_id} are deleted."
        return RedirectResponse("/holds", status_code=303)

    async def job(self, request: Request) -> Response:
        """GET /jobs/{job}: a job's state and events (e.g. a retry's progress)."""
        from dicomdrop.store.jobs import JobStore

        who = await self.user(request, HOLDS)
        job_id = _job_id(request.path_params["job"])
        jobs = JobStore(self.store)
        record = await run_in_threadpool(jobs.get, job_id)
        if record is None:
            return self.render(request, "gone.html", who, status_code=404, job_id=job_id)
        events = await run_in_threadpool(jobs.events, job_id)
        held = (Quarantine(self.settings.paths.quarantine).folder(job_id) / "reason.json").is_file()
        return self.render(request, "job.html", who, job=record, events=events, held=held)

    # --- pending matches -------------------------------------------------------------------

    def _registry(self) -> Any:
        from dicomdrop.store.registry import Registry

        return Registry(self.store, self.key, self.settings.registry)

    async def pending_list(self, request: Request) -> Response:
        """GET /pending: open pending matches, oldest first."""
        from dicomdrop.store.curation import held_job, list_pending

        who = await self.user(request, IDENTITIES)
        pending = await run_in_threadpool(list_pending, self._registry())
        return self.render(request, "pending_list.html", who, pending=pending, held_job=held_job)

    async def pending(self, request: Request) -> Response:
        """GET /pending/{id}: the incoming identity beside each candidate's (audited view)."""
        from dicomdrop.store.curation import pending_detail
        from dicomdrop.web.evidence import held_study

        who = await self.user(request, IDENTITIES)
        pending_id = int(request.path_params["pending_id"])
        detail = await run_in_threadpool(
            pending_detail, self._registry(), pending_id, actor=who.name
        )
        study = None
        if detail.job_id is not None:
            study = await run_in_threadpool(
                held_study, self.settings, _job_id(detail.job_id), pending_id
            )
        return self.render(request, "pending.html", who, detail=detail, study=study)

    async def resolve(self, request: Request) -> Response:
        """POST /pending/{id}/resolve: link or make a new patient; then retry the held job
        once none of its pending matches is open."""
        from dicomdrop.store.curation import held_job, list_pending, open_pending_of_job, resolve

        who, form = await self.form(request, IDENTITIES)
        pending_id = int(request.path_params["pending_id"])
        how = form.get("how")
        link = str(form.get("pseudonym", "")) if how == "link" else None
        registry = self._registry()
        pending = await run_in_threadpool(list_pending, registry)
        seen_in = next((p.seen_in for p in pending if p.id == pending_id), "")
        pseudonym = await run_in_threadpool(
            resolve,
            registry,
            pending_id,
            actor=who.name,
            reason=str(form.get("reason", "")),
            link=link,
            new=how == "new",
        )
        log.info("console: %s resolved pending match #%d", who.name, pending_id)
        message = f"Pending match #{pending_id} resolved as {pseudonym}."
        job_id = held_job(seen_in)
        target = "/pending"
        if job_id is not None:
            job_id = _job_id(job_id)
            still_open = await run_in_threadpool(open_pending_of_job, registry, job_id)
            held = await run_in_threadpool(self._held_record, job_id)
            if still_open:
                message += f" Job {job_id} waits for {still_open} more pending match(es)."
            elif held is not None and not held.released:
                new_job = await self._retry(
                    job_id, who, f"pending match #{pending_id} resolved as {pseudonym}"
                )
                message += f" Job {job_id} is being retried as job {new_job}."
                target = f"/jobs/{new_job}"
        request.session["flash"] = message
        return RedirectResponse(target, status_code=303)

    def _held_record(self, job_id: str) -> QuarantineRecord | None:
        try:
            return Quarantine(self.settings.paths.quarantine).read(job_id)
        except QuarantineNotFound:
            return None

    # --- re-identification -----------------------------------------------------------------

    async def reidentify_page(self, request: Request) -> Response:
        """GET /reidentify: the request form."""
        who = await self.user(request, IDENTITIES)
        return self.render(request, "reidentify.html", who)

    async def reidentify(self, request: Request) -> Response:
        """POST /reidentify: the answer, shown once (not cached, not in the URL), audited."""
        from dicomdrop.store.reid import reidentify

        who, form = await self.form(request, IDENTITIES)
        kind = str(form.get("kind", ""))
        if kind not in ("pseudonym", "study_uid", "accession"):
            raise DicomdropError("choose what the value is", code="console.usage")
        value = str(form.get("value", ""))
        person = await run_in_threadpool(
            lambda: reidentify(
                self.store,
                reason=str(form.get("reason", "")),
                actor=who.name,
                pseudonym=value if kind == "pseudonym" else None,
                study_uid=value if kind == "study_uid" else None,
                accession=value if kind == "accession" else None,
                min_reason_length=self.settings.security.min_reason_length,
            )
        )
        log.info("console: %s re-identified by %s", who.name, kind)
        return self.render(request, "reidentify_result.html", who, person=person)

    async def cohort(self, request: Request) -> Response:
        """POST /cohort: the pseudonyms of a list of studies, as CSV (audited)."""
        from dicomdrop.store.reid import cohort_pseudonyms

        who, form = await self.form(request, IDENTITIES)
        keys = str(form.get("keys", "")).split()
        rows = await run_in_threadpool(
            lambda: cohort_pseudonyms(
                self.store, keys, actor=who.name, reason=str(form.get("reason", ""))
            )
        )
        log.info("console: %s exported a cohort of %d keys", who.name, len(keys))
        header = ["key", "pseudonym", "pseudonymised_study_uid", "pseudonymised_accession"]
        body = _csv(
            [header, *([r.key, r.pseudonym, r.new_study_uid, r.new_accession] for r in rows)]
        )
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={**NO_STORE, "Content-Disposition": 'attachment; filename="cohort.csv"'},
        )

    # --- audit -----------------------------------------------------------------------------

    def _audit_query(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        return {
            "action": params.get("action") or None,
            "actor": params.get("actor") or None,
            "text": params.get("q") or None,
        }

    async def audit(self, request: Request) -> Response:
        """GET /audit: search the audit log (by the actions it holds)."""
        from dicomdrop.store.audit import audit_actions, list_events

        who = await self.user(request, AUDIT)
        query = self._audit_query(request)
        events = await run_in_threadpool(lambda: list_events(self.store, limit=500, **query))
        actions = await run_in_threadpool(audit_actions, self.store)
        return self.render(
            request,
            "audit.html",
            who,
            events=events,
            query=query,
            export=request.url.query,
            actions=actions,
        )

    async def audit_csv(self, request: Request) -> Response:
        """GET /audit.csv: the same search as CSV."""
        from dicomdrop.store.audit import list_events

        who = await self.user(request, AUDIT)
        query = self._audit_query(request)
        events = await run_in_threadpool(lambda: list_events(self.store, limit=1_000_000, **query))
        await run_in_threadpool(self._audit_export, who, len(events), query)
        log.info("console: %s exported %d audit rows", who.name, len(events))
        rows: list[list[object]] = [["id", "at", "actor", "action", "subject", "found", "reason"]]
        rows += [
            [e.id, e.at.isoformat(), e.actor, e.action, e.subject, e.found, e.reason]
            for e in events
        ]
        return Response(
            _csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={**NO_STORE, "Content-Disposition": 'attachment; filename="audit.csv"'},
        )

    def _audit_export(self, who: ConsoleIdentity, rows: int, query: dict[str, Any]) -> None:
        """An export of the audit log is itself audited (who took which rows)."""
        from dicomdrop.store.audit import record_event

        with self.store.session() as session:
            record_event(
                session,
                action="audit.export",
                actor=who.name,
                reason="CSV export",
                details={"rows": rows, **{k: v for k, v in query.items() if v}},
            )


def _csv(rows: Iterable[Iterable[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue()


async def _security_headers(request: Request, call_next: Endpoint) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(
    settings: Settings,
    key: bytes,
    store: Store,
    *,
    retries: RetryRunner | None = None,
    throttle: LoginThrottle | None = None,
) -> Starlette:
    """The console as an ASGI application (served by :func:`dicomdrop.web.server.build_server`)."""
    console = Console(settings, key, store, retries=retries, throttle=throttle)
    c = console
    routes = [
        Route("/login", c.login_page, methods=["GET"]),
        Route("/login", c.login, methods=["POST"]),
        Route("/logout", c.logout, methods=["POST"]),
        Route("/", c.home, methods=["GET"]),
        Route("/dashboard", c.dashboard, methods=["GET"]),
        Route("/dashboard/live", c.dashboard_live, methods=["GET"]),
        Route("/holds", c.holds, methods=["GET"]),
        Route("/holds/{job}", c.hold, methods=["GET"]),
        Route("/holds/{job}/retry", c.retry, methods=["POST"]),
        Route("/holds/{job}/release", c.release, methods=["POST"]),
        Route("/holds/{job}/delete", c.delete, methods=["POST"]),
        Route("/jobs/{job}", c.job, methods=["GET"]),
        Route("/pending", c.pending_list, methods=["GET"]),
        Route("/pending/{pending_id:int}", c.pending, methods=["GET"]),
        Route("/pending/{pending_id:int}/resolve", c.resolve, methods=["POST"]),
        Route("/reidentify", c.reidentify_page, methods=["GET"]),
        Route("/reidentify", c.reidentify, methods=["POST"]),
        Route("/cohort", c.cohort, methods=["POST"]),
        Route("/audit", c.audit, methods=["GET"]),
        Route("/audit.csv", c.audit_csv, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    async def not_logged_in(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DicomdropError)
        return console.render(request, "error.html", None, status_code=403, message=exc.message)

    async def refused(request: Request, exc: Exception) -> Response:
        # Library errors carry PHI-free, actionable messages (the CLI prints the same).
        assert isinstance(exc, DicomdropError)
        status = 503 if isinstance(exc, StoreError) and exc.code == "store.error" else 400
        return console.render(request, "error.html", None, status_code=status, message=exc.message)

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(BaseHTTPMiddleware, dispatch=_security_headers),
            Middleware(
                SessionMiddleware,
                secret_key=session_secret(key),
                session_cookie="dicomdrop_console",
                max_age=settings.web.session_minutes * 60,
                same_site="strict",
                https_only=settings.web.tls_cert_file is not None,
            ),
        ],
        exception_handlers={
            NotLoggedIn: not_logged_in,
            Forbidden: forbidden,
            DicomdropError: refused,
        },
    )
    app.state.console = console
    return app
