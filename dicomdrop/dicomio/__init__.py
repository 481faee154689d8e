"""DICOM bytes in and out: the raw element walker, the encoder, the output protocol, and
the table of pydicom's answers kept per process (``kept``).

Sort, group, de-identification and the verifier all read files through the same walker, so it
lives below all of them rather than inside one of them (the verifier must not depend on the
de-identification engine it checks). ``output.StoredOutput`` is how the verifier reads an
output's bytes without knowing where they are kept. This package imports nothing of dicomdrop
but ``config`` and ``errors`` (tests/test_boundaries.py keeps it so).
"""
