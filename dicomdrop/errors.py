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
    files concerned (never patient data).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        stage: str = "",
        files: list[str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.stage = stage
        self.files = list(files or [])


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


class TruncatedError(QuarantineError):
    """A DICOM file is cut short: its pixel data is shorter than its header says, or its
    encapsulated fragments end early (``dicom.truncated``)."""

    def __init__(self, message: str, *, files: list[str] | None = None) -> None:
        super().__init__("dicom.truncated", message, stage="deid", files=files)
