"""The per-namespace ConfigMap that carries the compiled sidecar config: its name and key.

The one place these two strings are spelled. The operator writes the ConfigMap (``kube``), the
injector mounts it into pods (``inject``), the chart grants write access to exactly this name
(``charts/sluice/templates/rbac.yaml``, kept equal by a test) and the docs name it. The sidecar
reads the mounted file at ``/etc/sluice/config/<KEY>`` and knows nothing of Kubernetes. No IO.
"""

from __future__ import annotations

#: metadata.name of the ConfigMap in every namespace that has Sluice resources
NAME = "sluice-config"
#: the data key holding the canonical JSON of a ``SidecarConfig``
KEY = "config.json"
