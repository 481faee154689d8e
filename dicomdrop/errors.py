"""The exception tree of dicomdrop.

Every error carries a stable ``code`` (written to quarantine reason files and logs) and a message
an operator can act on. Messages name job-relative paths, DICOM keywords and config keys, never a
value taken from a patient's data.
"""

from __future__ import annotations


class DicomdropError(Exception):
    """Base class of every error dicomdrop raises on purpose."""

    code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The human-readable message, without the code."""
        return str(self.args[0]) if self.args else ""


class ConfigError(DicomdropError):
    """The configuration file is missing, unreadable or has a bad key or value."""

    code = "config.invalid"


class PortInUseError(ConfigError):
    """A configured port (e.g. ``[daemon] http_port``) is taken by another program."""

    code = "config.port_in_use"


class KeyFileError(DicomdropError):
    """The secret key file is missing, unreadable, malformed or readable by others."""

    code = "config.key_file"


class StoreError(DicomdropError):
    """The registry database cannot be reached or is in an unexpected state."""

    code = "store.error"


class QuarantineError(DicomdropError):
    """A drop, a patient group or a file must go to quarantine.

    ``stage`` names the pipeline stage that decided; ``files`` lists job-relative paths of the
    files concerned (never patient data); ``pending_match`` the registry's pending match the files
    wait for (``match.ambiguous``), written to reason.json as a field of its own.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        stage: str = "",
        files: list[str] | None = None,
        pending_match: int | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.stage = stage
        self.files = list(files or [])
        self.pending_match = pending_match


class ArchiveError(QuarantineError):
    """An archive is corrupt, encrypted, hostile or over a configured limit."""

    def __init__(self, code: str, message: str, *, files: list[str] | None = None) -> None:
        super().__init__(code, message, stage="unpack", files=files)


class DeidError(QuarantineError):
    """A dataset could not be de-identified (unreadable element, invalid value, ...)."""

    def __init__(self, code: str, message: str, *, files: list[str] | None = None) -> None:
        super().__init__(code, message, stage="deid", files=files)


class VerificationError(QuarantineError):
    """The verification scan found a trace of the patient's identity in an output
    (``verify.phi_found``; ``verify.phi_in_pixels`` when every trace is burned-in text)."""

    def __init__(
        self, message: str, *, files: list[str] | None = None, code: str = "verify.phi_found"
    ) -> None:
        super().__init__(code, message, stage="verify", files=files)


class ClaimError(DicomdropError):
    """A drop could not be moved from the inbox into the work folder; it stays in the inbox."""

    code = "claim.failed"


class DaemonLockError(DicomdropError):
    """Another daemon with the same host_id holds the work folder's lock."""

    code = "daemon.duplicate"


class JobBusyError(DicomdropError):
    """Another process (a daemon's worker, ``dicomdrop process``, a retry) runs this job."""

    code = "job.busy"


class ResourceError(DicomdropError):
    """The machine ran out of something (disk space, quota, file handles, memory).

    Never a verdict on the data: the job pauses and is resumed once the resource is back.
    ``code`` is ``resource.no_space``, ``resource.no_files`` or ``resource.no_memory``.
    """

    code = "resource.no_space"

    def __init__(self, message: str, code: str = "resource.no_space") -> None:
        super().__init__(message, code=code)
        self.args = (message, code)  # survives pickling between worker and daemon


class TruncatedError(QuarantineError):
    """A DICOM file is cut short: its pixel data is shorter than its header says, or its
    encapsulated fragments end early (``dicom.truncated``)."""

    def __init__(self, message: str, *, files: list[str] | None = None) -> None:
        super().__init__("dicom.truncated", message, stage="deid", files=files)
