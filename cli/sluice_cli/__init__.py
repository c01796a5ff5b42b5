"""Sluice command line: the ``sluice`` command, local serving and the dev-cluster harness.

The one package allowed to import both ``sluice_operator`` and ``sluice_sidecar``; neither of them
imports it (import-linter checks both directions).
"""
