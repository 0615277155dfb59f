"""Pytest fixtures for a local Hub-compatible server (see ``hub_server.py``).

- ``hub_server`` (session): a running server with ``.endpoint``, ``.token``, ``.user`` and ``.requests``.
  For the whole session huggingface_hub uses a temporary cache and token file (never ``~/.cache``),
  plain HTTP uploads (``HF_HUB_DISABLE_XET``) and no proxy for loopback.
- ``hub_api`` (session): an ``HfApi`` bound to that endpoint and token.
- ``hub_repo`` (function): a fresh, empty model repo id, deleted afterwards.
- ``hub_env`` (function): ``HF_ENDPOINT`` and ``HF_TOKEN`` point at the server for this test, so code that
  takes its endpoint from the environment at call time (``hf://`` paths, the CLI) talks to it.

huggingface_hub is imported inside the fixtures: without it, hub tests skip and the rest of the suite runs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hub_server import HubServer

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["hub_api", "hub_env", "hub_repo", "hub_server"]

_ENV = {
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A Hub-compatible server on 127.0.0.1 for the whole test session."""
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("hf-home")
    # huggingface_hub reads these at import time, so its module attributes are patched as well as the env.
    patched = {
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    saved_env = {name: os.environ.get(name) for name in _ENV}
    saved_constants = {name: getattr(constants, name) for name in patched}
    os.environ.update(_ENV)
    for name, value in patched.items():
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
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_server.endpoint, token=hub_server.token)


@pytest.fixture
def hub_repo(hub_api: HfApi) -> Iterator[str]:
    """A new empty model repo (only ``.gitattributes``) on ``hub_server``; deleted after the test."""
    repo_id = hub_api.create_repo(f"org/repo-{secrets.token_hex(4)}").repo_id
    yield repo_id
    hub_api.delete_repo(repo_id, missing_ok=True)


@pytest.fixture
def hub_env(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """Point ``HF_ENDPOINT`` and ``HF_TOKEN`` at ``hub_server`` for one test."""
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    return hub_server
