"""Every way the Hugging Face Hub can say no, as one glance error line: one mapping for the model
download (glance/hub.py) and for pushing and fetching a pair (glance/share.py).

huggingface_hub is imported inside the functions: it reads HF_ENDPOINT and HF_HUB_OFFLINE when it
is imported, and `glance --help` stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from glance.families import GlanceError

LOGIN = "log in with `hf auth login` or set HF_TOKEN"


class HubUnreachable(GlanceError):
    """The Hub could not be asked (no connection, timeout, offline mode): a look-up without download goes on."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hub_error(
    exc: BaseException, repo_id: str, *, revision: str | None = None, access: Literal["read", "write"] = "read"
) -> GlanceError | None:
    """The one line for what huggingface_hub raised while reading or writing `repo_id`; None when the
    exception is not the Hub's. `access` is what the token needed, for a refused token's line."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"{constants.ENDPOINT}/{repo_id}"
    offline = isinstance(exc, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE
    if isinstance(exc, OfflineModeIsEnabled) or offline:
        return HubUnreachable(f"{repo_id}: HF_HUB_OFFLINE is set and the files are not in the cache")
    # GatedRepoError is a RepositoryNotFoundError: the gate is checked first.
    if isinstance(exc, GatedRepoError):
        return GlanceError(
            f"{repo_id} is gated: accept its licence at {page} (logged in to the Hub), then {LOGIN} here"
        )
    if isinstance(exc, RevisionNotFoundError):
        return GlanceError(f"revision {revision!r} of {repo_id} not found on the Hub ({page})")
    if isinstance(exc, RepositoryNotFoundError):
        return GlanceError(f"{repo_id} not found on the Hub ({page}); check the id, or {LOGIN} if it is private")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return GlanceError(
                f"the Hub refused the token (HTTP {status}: {exc.server_message or 'invalid credentials'}) "
                f"for {repo_id}: it needs {access} access; {LOGIN} with a token that has it"
            )
        return GlanceError(f"the Hub answered HTTP {status} for {repo_id}: {first_line(exc)}")
    # LocalEntryNotFoundError online: the Hub did not answer and the file is not in the cache.
    if isinstance(exc, httpx2.TransportError | ConnectionError | LocalEntryNotFoundError | OSError):
        return HubUnreachable(f"cannot reach the Hub at {constants.ENDPOINT} ({first_line(exc)}); check the network")
    return None


@contextmanager
def one_line_hub_errors(
    repo_id: str, *, revision: str | None = None, access: Literal["read", "write"] = "read"
) -> Iterator[None]:
    """`with one_line_hub_errors(repo_id):` turns what the Hub refuses inside into `hub_error`'s line."""
    try:
        yield
    except GlanceError:
        raise
    except Exception as exc:
        error = hub_error(exc, repo_id, revision=revision, access=access)
        if error is None:
            raise
        raise error from None
