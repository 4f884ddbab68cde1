"""Receiving a study: store and index each instance, refused studies, study completion."""
