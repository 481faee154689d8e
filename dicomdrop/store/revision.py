"""The newest schema revision shipped, apart from the database layer.

``dicomdrop lookup`` reads the registry with plain ``sqlite3`` when the database is at this
revision (:mod:`dicomdrop.store.litereads`), so the value lives where importing it costs nothing.
A new migration moves it (a test checks it against the migrations folder).
"""

from __future__ import annotations

HEAD_REVISION = "0007_console_sessions"
