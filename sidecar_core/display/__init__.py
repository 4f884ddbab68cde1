"""Display images for ingest and imaging: PNG/GIF rendering and the on-demand viewport store."""
