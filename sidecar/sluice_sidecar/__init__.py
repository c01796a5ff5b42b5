"""Sluice sidecar: the OpenAI-compatible routing gateway that runs next to each app."""
