"""Display assets (thumbnails, previews, model input) of each series and overlays of AI runs."""
