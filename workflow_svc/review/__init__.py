"""The radiologist's review: the worklist, claims, per-finding decisions and ReviewService."""
