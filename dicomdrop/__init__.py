"""dicomdrop: a DICOM pseudonymization service.

Drops of imaging arrive in an inbox; dicomdrop de-identifies them with the DICOM PS3.15
confidentiality profile, verifies that no trace of the patient is left, and delivers them to an
outbox under a stable pseudonym kept in a patient registry.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
