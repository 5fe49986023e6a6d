"""Credentials never leave the process: finding them in URIs, refusing them in configs, masking them.

A run's config is written to ``config.yaml``, uploaded to MLflow as an artifact and logged as params,
and MLflow prints the tracking URI in its own "View run at" line. So a tracking URI that carries a
user name, a password or a token (``http://user:secret@host``, ``http://TOKEN@host``,
``http://host/?token=...``) would leave its secret in all of those. MLflow reads credentials from the
environment instead (``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, or
``MLFLOW_TRACKING_TOKEN``), and jobs inherit the launcher's environment locally and under SLURM, so a
URI with credentials is refused before anything is written, with that fix in the message.

Pure standard library: the planner validates configs without importing MLflow.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# Config keys and URI query parameters whose values are secrets.
SECRET_KEY = re.compile(r"(pass(word|wd)?|pwd|secret|token|api[_-]?key|credential|auth|sig(nature)?)",
                        re.IGNORECASE)
CREDENTIAL_VARIABLES = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
MASK = "***"


def uri_credentials(uri: str) -> list[str]:
    """What in ``uri`` is a credential: "user name", "password", "query parameter NAME"."""
    parts = urlsplit(uri)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.append("user name and password" if ":" in userinfo else "user name (or token)")
    for name, _ in _query_pairs(parts.query):
        if SECRET_KEY.search(name):
            found.append(f"query parameter {name!r}")
    return found


def mask_uri(uri: str) -> str:
    """The URI with user information and secret query values replaced by ``***``, safe to print.

    The host is kept as written (IPv6 brackets included)."""
    if not uri_credentials(uri):
        return uri  # as written: urlunsplit would also drop the empty host of sqlite:////path
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = (f"{userinfo.split(':', 1)[0]}:{MASK}" if ":" in userinfo else MASK) + "@" + host
    query = "&".join(f"{name}={MASK}" if SECRET_KEY.search(name) else pair
                     for name, pair in _query_pairs(parts.query))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def check_no_credentials(uri: str | None, where: str) -> None:
    """Raise ValueError when ``uri`` (the value of ``where``) carries credentials; the message is
    masked and names the environment variables to use instead."""
    if not uri:
        return
    found = uri_credentials(uri)
    if found:
        raise ValueError(
            f"{where}={mask_uri(uri)} carries credentials ({', '.join(found)}), which would reach run "
            f"files, MLflow and logs; export {CREDENTIAL_VARIABLES} instead and give the URI "
            f"without them (e.g. {mask_uri(_without_credentials(uri))})")


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(pair for name, pair in _query_pairs(parts.query) if not SECRET_KEY.search(name))
    return urlunsplit(parts._replace(netloc=host, query=query))


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """(name, raw "name=value" text) for each parameter of a query string, in order."""
    return [(pair.split("=", 1)[0], pair) for pair in query.split("&") if pair]
