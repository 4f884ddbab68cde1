"""Derived display assets (thumbnails, viewport images, previews, overlays) rendered as bytes."""
