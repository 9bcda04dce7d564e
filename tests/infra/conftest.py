"""What the infra tests share: infra/k8s rendered once by `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI, REPO


@pytest.fixture(scope="session")
def rendered() -> list[dict[str, Any]]:
    """The kustomization's documents (a CI without kubectl fails; elsewhere the tests skip)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if IN_CI:
            pytest.fail("kubectl is required in CI to render infra/k8s")
        pytest.skip("kubectl not installed: cannot render the kustomization")
    out = subprocess.run([kubectl, "kustomize", str(REPO / "infra" / "k8s")],
                         capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]
