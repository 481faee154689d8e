"""Pixel data: its integrity, rendering frames to look at, finding text in them, masking it.

Header de-identification cannot see what a device drew into the image (a name on an ultrasound
frame, a secondary capture of a report). This package owns everything that reads pixel values:

- ``integrity``: is the pixel data complete (native length, encapsulated fragment structure)?
- ``render``: frames as 8-bit grey images, the way a person would look at them.
- ``ocr``: text boxes found in a rendered frame (Debian's ``tesseract``; nothing downloaded).
- ``mask``: blanking configured rectangles, natively or through a lossless re-encode.

It imports neither ``dicomdrop.deid`` nor the verifier: both call into it.
"""
