"""Load ``config.toml`` into typed, frozen settings.

Every section of the file is a frozen dataclass below; the loader checks each key against the
dataclass field's type, so an unknown key, a wrong type or a bad value is a :class:`ConfigError`
that names the key and says what is accepted. Relative paths resolve against the folder of the
config file. Nothing here reads environment-specific state except :func:`config_path_from`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from dicomdrop.errors import ConfigError

CONFIG_ENV_VAR = "DICOMDROP_CONFIG"
DEFAULT_CONFIG_NAME = "config.toml"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _size(default: int, minimum: int = 0) -> Any:
    """A byte-size field: accepts an integer or a string such as ``"10 GiB"``."""
    return field(default=default, metadata={"size": True, "min": minimum})


def _num(default: int | float, minimum: float | None = None, maximum: float | None = None) -> Any:
    return field(default=default, metadata={"min": minimum, "max": maximum})


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathsSettings:
    """Where dicomdrop reads and writes. Every folder is created by ``dicomdrop init``."""

    data: Path = Path("data")
    inbox: Path = Path("data/inbox")
    outbox: Path = Path("data/outbox")
    quarantine: Path = Path("data/quarantine")
    work: Path = Path("data/work")
    originals: Path = Path("data/originals")

    def folders(self) -> dict[str, Path]:
        """Every folder by its key name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class StoreSettings:
    """The registry database."""

    url: str = ""
    busy_timeout_ms: int = _num(30000, minimum=0)


@dataclass(frozen=True)
class SecuritySettings:
    """The secret key that keys every pseudonym, UID and date derivation."""

    key_file: Path = Path("data/secret.key")
    min_reason_length: int = _num(10, minimum=1)


@dataclass(frozen=True)
class PrivateKeepRule:
    """Private elements to retain for one private creator (offsets are the low byte, 0x00-0xFF)."""

    creator: str
    elements: tuple[int, ...]
    group: int | None = None


@dataclass(frozen=True)
class SiteRule:
    """One site rule. ``tag`` is ``(gggg,eeee)`` or a DICOM keyword.

    actions: ``keep`` (untouched, overrides the profile), ``remove``, ``empty``, ``replace``
    (set ``value`` where present), ``force`` (set ``value``, adding the element when missing),
    ``regexp`` (``re.sub(pattern, replacement, value)``).
    """

    tag: str
    action: Literal["keep", "remove", "empty", "replace", "force", "regexp"]
    value: str | None = None
    pattern: str | None = None
    replacement: str | None = None


@dataclass(frozen=True)
class DeidSettings:
    """The de-identification profile: a preset, the PS3.15 option switches, and site rules.

    An option left out (``None``) takes the preset's value.
    """

    profile: Literal["basic", "research", "names-only"] = "basic"
    retain_safe_private: bool | None = None
    retain_uids: bool | None = None
    retain_device_identity: bool | None = None
    retain_institution_identity: bool | None = None
    retain_patient_characteristics: bool | None = None
    retain_long_full_dates: bool | None = None
    retain_long_modified_dates: bool | None = None
    clean_descriptors: bool | None = None
    clean_structured_content: bool | None = None
    clean_graphics: bool | None = None
    date_shift_min_days: int = _num(-3650, minimum=-36500, maximum=36500)
    date_shift_max_days: int = _num(-1, minimum=-36500, maximum=36500)
    scrub_names: bool = True
    private_keep: tuple[PrivateKeepRule, ...] = ()
    rules: tuple[SiteRule, ...] = ()

    def __post_init__(self) -> None:
        if self.date_shift_min_days > self.date_shift_max_days:
            raise ConfigError(
                "[deid] date_shift_min_days must not be greater than date_shift_max_days"
            )
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ConfigError(
                "[deid] retain_long_full_dates and retain_long_modified_dates exclude each other; "
                "set at most one of them to true"
            )


@dataclass(frozen=True)
class ArchiveSettings:
    """Limits for unpacking and the format of delivered archives."""

    max_total_bytes: int = _size(64 * 1024**3, minimum=1)
    max_entry_bytes: int = _size(8 * 1024**3, minimum=1)
    max_ratio: int = _num(250, minimum=1)
    ratio_grace_bytes: int = _size(16 * 1024**2)
    max_entries: int = _num(200_000, minimum=1)
    max_depth: int = _num(4, minimum=0)
    free_space_margin_bytes: int = _size(1024**3)
    output_format: Literal["zip", "7z", "folder"] = "zip"
    zip_compression: Literal["deflate", "stored"] = "deflate"
    zip_level: int = _num(1, minimum=0, maximum=9)


@dataclass(frozen=True)
class RegistrySettings:
    """Pseudonyms and patient matching."""

    pseudonym_prefix: str = "DD"
    pseudonym_length: int = _num(10, minimum=6, maximum=52)
    match_threshold: float = _num(90.0, minimum=0, maximum=100)
    review_threshold: float = _num(75.0, minimum=0, maximum=100)
    ambiguity_margin: float = _num(5.0, minimum=0, maximum=100)
    accession_links: bool = False
    already_pseudonymized: Literal["quarantine", "fresh_pseudonym"] = "quarantine"
    export_drop_columns: tuple[str, ...] = tuple(
        ["name", "birthdate", "patientid", "address", "phone", "email"]
    )

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z0-9_-]{0,16}", self.pseudonym_prefix):
            raise ConfigError(
                "[registry] pseudonym_prefix: use up to 16 characters from A-Z, 0-9, '_' and '-'"
            )
        if self.review_threshold > self.match_threshold:
            raise ConfigError(
                "[registry] review_threshold must not be greater than match_threshold"
            )


@dataclass(frozen=True)
class SortSettings:
    """What happens to files that are not DICOM."""

    blacklist_extensions: tuple[str, ...] = tuple(
        [
            "pdf", "doc", "docx", "txt", "csv", "xls", "xlsx", "ppt", "pptx", "odt", "ods",
            "odp", "odg", "rtf", "jpg", "jpeg", "png",
            "bmp", "gif", "tif", "tiff", "xml", "html", "htm", "json", "mp4", "avi",
            ".DS_Store", "Thumbs.db",
        ]
    )  # fmt: skip
    unknown_files: Literal["quarantine", "delete"] = "quarantine"


@dataclass(frozen=True)
class ScreenSettings:
    """Instances that are never delivered (dicom_pseudon's screening rules)."""

    burned_in_annotation: bool = True
    screen_captures: bool = True
    patient_protocol: bool = True
    denied_sop_classes: tuple[str, ...] = tuple(
        [
            "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
            "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
            "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
            "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
            "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
        ]
    )
    suspect_manufacturers: tuple[str, ...] = tuple(["north american imaging, inc", "pacsgear"])
    suspect_models: tuple[str, ...] = tuple(["the dicom box"])
    allowed_modalities: tuple[str, ...] = tuple(
        ["CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT", "SEG", "RTSTRUCT"]
    )


_TARGET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


@dataclass(frozen=True)
class DeliveryTarget:
    """One place a job's verified output goes (``[[delivery.targets]]``).

    kind ``outbox``: the archive in ``[paths] outbox`` (format from ``[archives]``);
    ``cstore``: C-STORE to a remote AE (``host``, ``port``, ``called_ae_title``,
    ``calling_ae_title``, optional ``tls``); ``stow``: DICOMweb STOW-RS to ``url`` (optional
    ``bearer_token_file`` or ``basic_auth_file``). ``tls_verify`` (on by default), ``tls_ca`` and
    the client ``tls_certificate``/``tls_key`` apply to TLS connections of both network kinds.
    """

    name: str
    kind: Literal["outbox", "cstore", "stow"]
    host: str = ""
    port: int = _num(104, minimum=1, maximum=65535)
    called_ae_title: str = ""
    calling_ae_title: str = "DICOMDROP"
    url: str = ""
    bearer_token_file: Path | None = None
    basic_auth_file: Path | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_ca: Path | None = None
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    batch_size: int = _num(20, minimum=1, maximum=1000)
    timeout_seconds: float = _num(60.0, minimum=1)

    def __post_init__(self) -> None:
        where = f"[[delivery.targets]] {self.name!r}"
        if not _TARGET_NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"{where}: name must be 1-40 characters from a-z, 0-9, '_' and '-' "
                "(it names the target in the store, logs and metrics)"
            )
        if self.kind == "cstore":
            if not self.host:
                raise ConfigError(f'{where}: kind = "cstore" needs host')
            _check_ae_title(self.called_ae_title, f"{where} called_ae_title")
            _check_ae_title(self.calling_ae_title, f"{where} calling_ae_title")
        if self.kind == "stow" and not re.match(r"https?://", self.url):
            raise ConfigError(f'{where}: kind = "stow" needs url = "https://host/dicom-web"')
        if self.kind == "stow" and "@" in self.url.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(
                f"{where}: url must not hold a user name or password (they would show in "
                "logs and listings); put them into basic_auth_file, one line user:password"
            )
        if self.bearer_token_file is not None and self.basic_auth_file is not None:
            raise ConfigError(f"{where}: set bearer_token_file or basic_auth_file, not both")
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ConfigError(f"{where}: tls_certificate and tls_key go together")


@dataclass(frozen=True)
class MaskRule:
    """Rectangles to blank in the pixels of one kind of device output (as RSNA CTP's pixel
    anonymizer): matched on Manufacturer and ManufacturerModelName (case-insensitive, contained),
    Rows and Columns (exact), and optionally Modality and SOPClassUID. ``boxes`` are
    ``[left, top, width, height]`` in pixels."""

    manufacturer: str
    model: str
    rows: int = field(metadata={"min": 1, "max": 65535})
    columns: int = field(metadata={"min": 1, "max": 65535})
    boxes: tuple[tuple[int, ...], ...]
    modality: str = ""
    sop_class: str = ""

    def __post_init__(self) -> None:
        if not self.boxes:
            raise ConfigError("[[pixels.masks]] boxes must list at least one [left, top, w, h]")
        for box in self.boxes:
            if len(box) != 4 or min(box) < 0 or box[2] == 0 or box[3] == 0:
                raise ConfigError(
                    f"[[pixels.masks]] box {list(box)} must be [left, top, width, height] with "
                    "left and top >= 0 and width and height > 0"
                )


@dataclass(frozen=True)
class PixelSettings:
    """Burned-in text: which instances are at risk, the OCR scan, and masking rules.

    An instance is at risk when its Modality is in ``risk_modalities`` or its SOP class in
    ``risk_sop_classes``. It is delivered only with BurnedInAnnotation NO (when
    ``trust_burned_in_annotation_no``), a matching mask rule, or a pixel scan that found no text.
    """

    risk_modalities: tuple[str, ...] = tuple(["US", "IVUS", "ES", "XC", "GM", "OT", "SC", "XA"])
    risk_sop_classes: tuple[str, ...] = tuple(
        [
            "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
            "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
            "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
            "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
            "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
            "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
            "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic Image
            "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image
            "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
            "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image
        ]
    )
    trust_burned_in_annotation_no: bool = True
    scan: bool = True
    scan_frames: int = _num(3, minimum=1, maximum=100)
    min_confidence: float = _num(60.0, minimum=0, maximum=100)
    masks: tuple[MaskRule, ...] = ()


@dataclass(frozen=True)
class DeliverySettings:
    """Delivery of outputs, retention of originals, and who may read the outbox and write the
    inbox (the systemd unit's ``UMask=0077`` would otherwise make every delivery 0600)."""

    retention_days: int = _num(30, minimum=0)
    file_mode: int = _num(0o640, minimum=0, maximum=0o777)
    group: str = ""
    inbox_mode: int = _num(0o700, minimum=0, maximum=0o7777)
    # No targets: the outbox alone (as before targets existed).
    targets: tuple[DeliveryTarget, ...] = ()
    retry_initial_seconds: float = _num(5.0, minimum=0.1)
    retry_max_seconds: float = _num(600.0, minimum=1)
    outgoing: Path | None = None  # None: <paths.data>/outgoing

    def __post_init__(self) -> None:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ConfigError("[[delivery.targets]]: every target needs a name of its own")
        if sum(t.kind == "outbox" for t in self.targets) > 1:
            raise ConfigError('[[delivery.targets]]: at most one target of kind "outbox"')

    @property
    def to_outbox(self) -> bool:
        """True when verified outputs are packed into the outbox."""
        return not self.targets or any(t.kind == "outbox" for t in self.targets)

    @property
    def network_targets(self) -> tuple[DeliveryTarget, ...]:
        """The C-STORE and STOW-RS targets."""
        return tuple(t for t in self.targets if t.kind != "outbox")


@dataclass(frozen=True)
class DaemonSettings:
    """The watcher (``dicomdrop watch``)."""

    settle_seconds: float = _num(10.0, minimum=0)
    rescan_seconds: float = _num(30.0, minimum=0.1)
    workers: int = _num(0, minimum=0)
    observer: Literal["native", "polling"] = "native"
    marker_file: str = ""
    min_free_bytes: int = _size(2 * 1024**3)
    stop_timeout_seconds: float = _num(60.0, minimum=0)
    http_port: int = _num(0, minimum=0, maximum=65535)
    host_id: str = ""
    orphan_grace_seconds: float = _num(300.0, minimum=0)
    resource_retry_seconds: float = _num(30.0, minimum=0.1)
    max_job_attempts: int = _num(8, minimum=1)


#: Transfer syntaxes the C-STORE listener accepts by default: the uncompressed ones, deflate,
#: RLE, JPEG (baseline, extended, lossless), JPEG-LS and JPEG 2000 (lossless and lossy).
DEFAULT_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)

_AE_TITLE_RE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # printable ASCII without backslash
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


def _check_ae_title(value: str, key: str) -> None:
    if not _AE_TITLE_RE.fullmatch(value) or not value.strip():
        raise ConfigError(
            f"{key} = {value!r} is not an AE title; use 1 to 16 printable ASCII characters "
            'without a backslash, e.g. "DICOMDROP"'
        )


@dataclass(frozen=True)
class AllowedCaller:
    """A peer allowed to send to the C-STORE listener: its AE title and, optionally, hosts."""

    ae_title: str
    hosts: tuple[str, ...] = ()  # IP addresses or host names; empty: any host

    def __post_init__(self) -> None:
        _check_ae_title(self.ae_title, "[[network.allowed_callers]] ae_title")


@dataclass(frozen=True)
class NetworkSettings:
    """The C-STORE listener (``dicomdrop watch`` with ``enabled = true``)."""

    enabled: bool = False
    ae_title: str = "DICOMDROP"
    bind_address: str = "0.0.0.0"  # noqa: S104 (a listener for modalities and PACS)
    port: int = _num(11112, minimum=1, maximum=65535)
    allowed_callers: tuple[AllowedCaller, ...] = ()
    max_associations: int = _num(10, minimum=1)
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    idle_seconds: float = _num(30.0, minimum=0.1)
    timeout_seconds: float = _num(60.0, minimum=1)
    receiving: Path | None = None  # None: <paths.data>/receiving
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    def __post_init__(self) -> None:
        _check_ae_title(self.ae_title, "[network] ae_title")
        for uid in self.transfer_syntaxes:
            if not _UID_RE.fullmatch(uid) or len(uid) > 64:
                raise ConfigError(
                    f"[network] transfer_syntaxes: {uid!r} is not a transfer syntax UID "
                    'such as "1.2.840.10008.1.2.1"'
                )
        if not self.transfer_syntaxes:
            raise ConfigError("[network] transfer_syntaxes must name at least one UID")
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ConfigError(
                "[network] tls_certificate and tls_key go together: set both for TLS, or neither"
            )
        if self.tls_ca is not None and self.tls_certificate is None:
            raise ConfigError("[network] tls_ca needs tls_certificate and tls_key as well")
        if self.enabled and not self.allowed_callers:
            raise ConfigError(
                "[network] enabled = true needs at least one [[network.allowed_callers]] "
                "(ae_title, optionally hosts): the listener accepts no unknown peer"
            )


@dataclass(frozen=True)
class WebSettings:
    """The steward console (``dicomdrop web``, or inside ``dicomdrop watch`` when enabled)."""

    listen: str = "127.0.0.1:8765"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    session_minutes: int = _num(480, minimum=1)
    enabled: bool = False
    trusted_user_header: str = ""

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f'[web] listen = {self.listen!r} is not HOST:PORT; use e.g. "127.0.0.1:8765"'
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("[web] tls_cert_file and tls_key_file must be given together")

    @property
    def host(self) -> str:
        """The address to listen on (brackets of an IPv6 address removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The TCP port to listen on."""
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class LoggingSettings:
    """Log output. Logs never contain names, IDs or dates of patients."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Settings:
    """The whole configuration. ``source`` is the file it was read from (None: built-ins)."""

    paths: PathsSettings = field(default_factory=PathsSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    deid: DeidSettings = field(default_factory=DeidSettings)
    archives: ArchiveSettings = field(default_factory=ArchiveSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    sort: SortSettings = field(default_factory=SortSettings)
    screen: ScreenSettings = field(default_factory=ScreenSettings)
    pixels: PixelSettings = field(default_factory=PixelSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    web: WebSettings = field(default_factory=WebSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    source: Path | None = None

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the registry (a SQLite file under ``paths.data`` by default)."""
        if self.store.url:
            return self.store.url
        return f"sqlite:///{self.paths.data / 'dicomdrop.sqlite3'}"


# --- loading ------------------------------------------------------------------------------------


def config_path_from(cli_value: str | os.PathLike[str] | None) -> Path:
    """The config file to use: ``--config``, then ``$DICOMDROP_CONFIG``, then ``./config.toml``."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a config file. Raises :class:`ConfigError` naming the offending key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; pass --config PATH, set {CONFIG_ENV_VAR}, "
            "or run from the folder holding config.toml"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return settings_from_mapping(data, base_dir=path.resolve().parent, source=path.resolve())


def settings_from_mapping(
    data: dict[str, Any], *, base_dir: Path, source: Path | None = None
) -> Settings:
    """Build :class:`Settings` from parsed TOML, resolving relative paths against ``base_dir``."""
    sections: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(Settings) if f.name != "source"}
    for name, value in data.items():
        if name not in known:
            raise ConfigError(
                f"unknown section [{name}]; accepted sections: {', '.join(sorted(known))}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table, e.g. [{name}] on a line of its own")
    hints = typing.get_type_hints(Settings)
    for name in known:
        sections[name] = _build(hints[name], data.get(name, {}), f"[{name}]", base_dir)
    settings = Settings(**sections, source=source)
    settings = _resolve_left_out_paths(settings, base_dir)
    check_folders_apart(settings.paths)
    return _resolve_store_url(settings, base_dir)


#: The folders that must be neither equal nor inside one another (``data`` holds them all by
#: default, and only the store and key live in it directly).
SEPARATE_FOLDERS = ("inbox", "outbox", "quarantine", "work", "originals")


def _resolve_left_out_paths(settings: Settings, base_dir: Path) -> Settings:
    """Resolve the defaults of paths left out of the file against its folder, as the ones
    given are: never against the current directory of whoever runs a command."""

    def resolved(section: Any) -> Any:
        changes = {
            f.name: (base_dir / value).resolve()
            for f in dataclasses.fields(section)
            if isinstance(value := getattr(section, f.name), Path) and not value.is_absolute()
        }
        return dataclasses.replace(section, **changes) if changes else section

    return dataclasses.replace(
        settings, paths=resolved(settings.paths), security=resolved(settings.security)
    )


def check_folders_apart(paths: PathsSettings) -> None:
    """Refuse two of inbox, outbox, quarantine, work, originals that are equal or nested.

    quarantine == outbox would deliver a quarantined (identifiable) file; inbox == outbox would
    process deliveries again, endlessly; work inside the inbox would be claimed as a drop.
    """
    real = {key: Path(os.path.realpath(getattr(paths, key))) for key in SEPARATE_FOLDERS}
    for i, first in enumerate(SEPARATE_FOLDERS):
        for second in SEPARATE_FOLDERS[i + 1 :]:
            a, b = real[first], real[second]
            if a == b:
                raise ConfigError(
                    f"[paths] {first} and [paths] {second} are the same folder ({a}); "
                    "give each its own folder"
                )
            if a.is_relative_to(b) or b.is_relative_to(a):
                inner, outer = (first, second) if a.is_relative_to(b) else (second, first)
                raise ConfigError(
                    f"[paths] {inner} lies inside [paths] {outer}; folders must not be nested, "
                    "give each its own folder"
                )


def _resolve_store_url(settings: Settings, base_dir: Path) -> Settings:
    url = settings.store.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            resolved = f"{prefix}{(base_dir / rest).resolve()}"
            store = dataclasses.replace(settings.store, url=resolved)
            return dataclasses.replace(settings, store=store)
    return settings


def _build(cls: Any, data: Any, where: str, base_dir: Path) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where} unknown key '{key}'; accepted keys: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where} missing required key '{name}'")
            continue
        key = f"{where} {name}"
        value = _convert(hints[name], data[name], key, base_dir, f.metadata)
        kwargs[name] = value
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str, base_dir: Path, meta: Any) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(tp) if a is not type(None)]
        return _convert(options[0], value, key, base_dir, meta)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            shown = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{key} = {value!r} is not accepted; use one of {shown}")
        return value
    if origin is tuple:
        item_tp = get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, e.g. [ ... ]")
        return tuple(_convert(item_tp, v, f"{key}[{i}]", base_dir, {}) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, base_dir)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, not {value!r}")
        return value
    if tp is int:
        if meta.get("size"):
            value = _parse_size(value, key)
        elif isinstance(value, str):
            value = _parse_int_text(value, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, not {value!r}")
        _check_range(value, key, meta)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, not {value!r}")
        _check_range(value, key, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string in quotes, not {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()
    raise ConfigError(f"{key}: unsupported setting type {tp!r}")  # pragma: no cover


def _parse_int_text(value: str, key: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise ConfigError(f"{key} must be a number such as 0x10 or 16, not {value!r}") from None


def _check_range(value: float, key: str, meta: Any) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{key} = {value} is too small; the minimum is {low}")
    if high is not None and value > high:
        raise ConfigError(f"{key} = {value} is too large; the maximum is {high}")


def _parse_size(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f'{key} must be a size such as 1073741824 or "1 GiB"')
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ConfigError(
        f"{key} = {value!r} is not a size; use bytes (1073741824) or a number with a unit "
        '(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. "1 GiB"'
    )
