"""evaluate layer of chexnet-dicom (see DESIGN.md for the dependency rules)."""
