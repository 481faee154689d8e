"""The independent verification: identity tokens, the scan of every output byte, codestreams.

It never imports ``dicomdrop.deid``: a fault in the engine must not be able to hide itself from
the check that decides whether a file may leave (tests/test_boundaries.py keeps it so).
"""
