"""Sluice operator: API models, CRD generator, compiler, webhook and kopf handlers."""
