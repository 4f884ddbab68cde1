"""Imaging service: display assets, overlays and DICOM SR/SEG results of the stored studies."""
