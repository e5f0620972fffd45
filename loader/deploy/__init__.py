"""Deployment artefacts derived from the specs: Helm values and manifests."""
