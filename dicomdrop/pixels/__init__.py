"""Pixel data: its integrity, rendering frames to look at, finding text in them, masking it.

Header de-identification cannot see what a device drew into the image (a name on an ultrasound
frame, a secondary capture of a report). This package owns everything that reads pixel values:

- ``integrity``: is the pixel data complete (native length, encapsulated fragment structure)?
- ``render``: frames as 8-bit grey images, the way a person would look at them.
- ``ocr``: text boxes found in a rendered frame (Debian's ``tesseract``; nothing downloaded).
- ``mask``: blanking configured rectangles, natively or through a lossless re-encode.
- ``scan``: which instances are at risk, the fail-closed plan for each, the text boxes of one.

It imports nothing of ``dicomdrop.deid``: the de-identify stage and the verification's pixel
scan (``dicomdrop.verify.pixels``) both call into it. See docs/pixels.md.
"""
