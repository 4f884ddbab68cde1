"""Assistive report drafts: context, de-identification, prompt, drafters (template or LLM)."""
