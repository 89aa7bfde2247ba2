from __future__ import annotations

from pathlib import Path

import pytest

from service.core.registry import ModelRegistry
from service.core.settings import Settings
from tests.support.models import make_repository


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def registry(repository: Path) -> ModelRegistry:
    registry = ModelRegistry(Settings(model_repository=repository))
    registry.load_all()
    return registry
