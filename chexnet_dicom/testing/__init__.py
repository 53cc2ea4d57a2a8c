"""Test material the project makes itself: synthetic DICOM images and studies.

Not part of the analysis path (no runtime module imports it; the layering test checks
that): the tests, ``scripts/make_sample_data.py`` and ``benchmarks/`` use it to build
their fixtures, so that no real patient data is ever needed or committed.
"""
