"""Pytest fixtures for a local Hub-compatible server (see ``hub_server.py``).

- ``hub_server`` (session): a running server with ``.endpoint``, ``.token`` and ``.user``.
- ``hub_api`` (session): an ``HfApi`` bound to that endpoint and token.
- ``hub_repo`` (function): a fresh, empty model repo id, deleted afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from huggingface_hub import HfApi, constants
from hub_server import HubServer

__all__ = ["hub_api", "hub_repo", "hub_server"]

_ENV = {
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
# huggingface_hub reads these at import time, so the module attributes are patched too.
_CONSTANTS = {"HF_HUB_DISABLE_XET": True, "HF_HUB_DISABLE_TELEMETRY": True}


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A Hub-compatible server on 127.0.0.1 for the whole test session."""
    saved_env = {name: os.environ.get(name) for name in _ENV}
    saved_constants = {name: getattr(constants, name) for name in _CONSTANTS}
    os.environ.update(_ENV)
    for name, value in _CONSTANTS.items():
        setattr(constants, name, value)
    try:
        with HubServer(tmp_path_factory.mktemp("hub")) as server:
            yield server
    finally:
        for name, old in saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        for name, old in saved_constants.items():
            setattr(constants, name, old)


@pytest.fixture(scope="session")
def hub_api(hub_server: HubServer) -> HfApi:
    """An ``HfApi`` talking to ``hub_server`` with its token."""
    return HfApi(endpoint=hub_server.endpoint, token=hub_server.token)


@pytest.fixture
def hub_repo(hub_api: HfApi) -> Iterator[str]:
    """A new empty model repo (only ``.gitattributes``) on ``hub_server``; deleted after the test."""
    repo_id = hub_api.create_repo(f"org/repo-{secrets.token_hex(4)}").repo_id
    yield repo_id
    hub_api.delete_repo(repo_id, missing_ok=True)
