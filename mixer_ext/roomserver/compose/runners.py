"""The composition runner the settings choose (``MIXER_COMPOSITION_RUNNER``)."""

from __future__ import annotations

from mixer_ext.roomserver.compose.workers import CompositionRunner, CompositionWorkers
from mixer_ext.settings import Settings


def runner_from_settings(settings: Settings) -> CompositionRunner:
    """``local``: worker processes of this server; ``kubernetes``: one Job each, through
    the pod's service account (or the kubeconfig outside a cluster).  Both run at most
    ``MIXER_COMPOSITION_WORKERS`` compositions at once."""
    if settings.composition_runner == "kubernetes":
        from mixer_ext.roomserver.compose.kube import KubeCompositionJobs

        return KubeCompositionJobs.from_settings(settings)
    return CompositionWorkers(settings.composition_workers)
