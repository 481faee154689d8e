"""DICOM bytes in and out: the raw element walker and the encoder.

Sort, group, de-identification and the verifier all read files through the same walker, so it
lives below all of them rather than inside one of them (the verifier must not depend on the
de-identification engine it checks).
"""
