"""The one rule both adapters use to leave secrets out of cache keys (lean_plugins.cache.keys.SECRET_FIELD)."""

import pytest

from lean_plugins.cache.keys import SECRET_FIELD


@pytest.mark.parametrize(
    "name", ["api_key", "openai_api_key", "apikey", "access_token", "token", "secret", "client_secret",
             "password", "credentials", "auth", "authorization", "headers", "default_headers"],
)
def test_secret_names_are_left_out(name: str) -> None:
    assert SECRET_FIELD.search(name)


@pytest.mark.parametrize("name", ["max_tokens", "max_new_tokens", "model", "temperature", "keywords", "top_k", "language"])
def test_settings_are_kept(name: str) -> None:
    assert not SECRET_FIELD.search(name)
