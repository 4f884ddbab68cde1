"""The review API: worklist, study view, claims, findings, decisions, drafts, live events."""
