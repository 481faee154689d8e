"""The independent verification: identity tokens, the scan of every output byte, codestreams.

It imports only ``dicomdrop.dicomio``, ``config`` and ``errors``: never the engine in
``dicomdrop.deid`` (a fault in the engine must not be able to hide itself from the check that
decides whether a file may leave), nor the stages or the archives' spool; outputs are handed to
it as bytes or as ``dicomio.output.StoredOutput`` (tests/test_boundaries.py keeps it so).
"""
