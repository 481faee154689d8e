"""Keep what holds identities private to the service user, whatever the umask.

work, quarantine and originals (with each job's report.csv) hold drops as they arrived; the
data folder holds the registry database and the secret key. Under a umask of 022 they would be
created readable by every local user, and only a unit file's ``UMask=`` would protect a
deployment. So the code sets the modes itself, at ``init`` and at every start: the folders
0700, the database and key files 0600. The data folder is 0711 instead when the inbox or outbox
lies inside it (the default layout), so that other users can still reach those; its own files
stay 0600. The inbox and the outbox are left alone: they are shared by design.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from dicomdrop.config import Settings

log = logging.getLogger(__name__)

PRIVATE_FOLDERS = ("work", "quarantine", "originals")


def _set_mode(path: Path, wanted: int) -> bool:
    """chmod ``path`` to ``wanted`` if it differs; True if it was changed."""
    if not path.exists() or path.is_symlink():
        return False
    if stat.S_IMODE(path.stat().st_mode) == wanted:
        return False
    path.chmod(wanted)
    return True


def _sqlite_files(settings: Settings) -> list[Path]:
    try:
        url = make_url(settings.store_url)
    except Exception:  # an unparseable URL is reported when the store is opened
        return []
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return []
    base = Path(url.database)
    return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]


def secure_private_paths(settings: Settings, *, warn: bool = True) -> list[str]:
    """Set the modes of every private folder and file that exists; return what was changed
    (each logged as a warning unless ``warn`` is False, as for folders ``init`` just made)."""
    paths = settings.paths
    changed: list[str] = []
    for key in PRIVATE_FOLDERS:
        if _set_mode(getattr(paths, key), 0o700):
            changed.append(key)
    shared_inside = any(
        folder.resolve().is_relative_to(paths.data.resolve())
        for folder in (paths.inbox, paths.outbox)
    )
    if _set_mode(paths.data, 0o711 if shared_inside else 0o700):
        changed.append("data")
    for file in (settings.security.key_file, *_sqlite_files(settings)):
        if _set_mode(file, 0o600):
            changed.append(file.name)
    for name in changed if warn else ():
        log.info("%s was readable by other users; made private to the service user", name)
    return changed
