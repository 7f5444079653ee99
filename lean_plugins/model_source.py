"""Where a model named by the caller comes from (a local folder or the Hugging Face hub), and
transformers' progress bars while it loads.

A name that is not an existing path is taken as a hub id only when it looks like one
(``name`` or ``org/name``); anything else is a missing local path and says so. Before a hub id
is handed to transformers, one TCP connection with a short timeout checks that the hub can be
reached; if not, the local hub cache is used when it holds the model, then a copy that ships in
an installed package (:mod:`lean_plugins.packaged_models`), and otherwise the load fails at once
with a message, instead of transformers' retries (about 23 s per attempt).

A packaged model's short name (``smollm2-135m-instruct``) never touches the network: it is the
package's GGUF file, converted once into a Hugging Face folder in the user cache.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from lean_plugins.errors import ModelLoadError

#: A Hugging Face hub repo id: ``name`` or ``namespace/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
#: Seconds the reachability check waits for the hub's TCP port.
HUB_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    """The hub URL transformers would use (``$HF_ENDPOINT`` or huggingface.co)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """One TCP connection to the hub's host and port; no HTTP request, no retries."""
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except Exception:  # OSError, DNS failure, or a test's socket blocker
        return False
    return True


def _cached_snapshot(repo_id: str) -> str | None:
    """The local folder of ``repo_id`` in the Hugging Face cache, or ``None`` when not there."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, an old huggingface_hub, or an id it rejects
        return None


def _packaged_copy(hub_id: str) -> str | None:
    """The converted folder of an installed package's copy of ``hub_id``, or ``None`` when no
    package ships it or it is not installed (the caller then reports the hub as unreachable)."""
    from lean_plugins import packaged_models
    from lean_plugins.errors import MissingDependencyError

    packaged = packaged_models.packaged_model_for_hub_id(hub_id)
    if packaged is None:
        return None
    try:
        return str(packaged_models.prepared_folder(packaged))
    except MissingDependencyError:
        return None


def _packaged_hint(hub_id: str) -> str:
    from lean_plugins import packaged_models

    packaged = packaged_models.packaged_model_for_hub_id(hub_id)
    if packaged is None:
        return ""
    return f" An offline copy of this model ships in a package: `{packaged.install_command}`."


def resolve_model_source(name_or_path: str | Path) -> tuple[str, bool]:
    """``(source, local_files_only)`` for ``from_pretrained``, or a :class:`ModelLoadError` now.

    An existing folder is used as it is. A packaged model's name (``smollm2-135m-instruct``) is
    its converted folder in the user cache. A missing path is reported as missing. A hub id is
    used from the hub when it is reachable, else as its folder in the local hub cache, else as
    the packaged copy of the same model when one is installed; when none can give it, the error
    says so at once.
    """
    from lean_plugins import packaged_models

    text = str(name_or_path)
    path = Path(text).expanduser()
    packaged = packaged_models.packaged_model(text)
    if packaged is not None and not path.exists():
        return str(packaged_models.prepared_folder(packaged)), True
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(
                f"{path} is a file; pass the model folder that holds config.json, the weights "
                "and the tokenizer files."
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} has no config.json, so it is not a Hugging Face model folder; pass the "
                "folder that holds config.json, the weights and the tokenizer files."
            )
        return str(path), True
    if not HUB_ID.match(text) or text.count("/") > 1 or ".." in text:
        raise ModelLoadError(
            f"Model folder {path} does not exist. Check the path, or pass a Hugging Face hub "
            "name such as 'org/model'."
        )
    if hub_offline():
        cached = _cached_snapshot(text) or _packaged_copy(text)
        if cached is not None:
            return cached, True
        raise ModelLoadError(
            f"{text!r} is neither a local folder nor in the local Hugging Face cache, and hub "
            "access is off (HF_HUB_OFFLINE). Download it where the hub can be reached, or pass "
            f"a local model folder.{_packaged_hint(text)}"
        )
    if hub_reachable():
        return text, False
    cached = _cached_snapshot(text) or _packaged_copy(text)
    if cached is not None:  # a local folder: nothing downstream tries the network for it
        return cached, True
    raise ModelLoadError(
        f"{text!r} is not a local folder, and the Hugging Face hub ({hub_endpoint()}) cannot be "
        f"reached from this machine (no connection within {HUB_TIMEOUT_S:g} s). Pass a local "
        "model folder, or download the model where the hub can be reached (it is then used from "
        f"the local cache).{_packaged_hint(text)}"
    )


@contextmanager
def transformers_progress(show: bool = False) -> Iterator[None]:
    """Show or hide transformers' progress bars ("Loading weights", "Writing model shards")
    inside the block, and restore the caller's setting after. Library calls hide them; the
    CLI shows them where a load is long."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was_enabled else hf_logging.disable_progress_bar)()
