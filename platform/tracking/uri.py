"""Which tracking URIs can ever work: ``resolve_tracking_uri`` picks a run's URI (``tracking.uri``, else
``$MLFLOW_TRACKING_URI``, else the repository's sqlite file) and refuses, in one line, one that no MLflow
store could open (an unknown scheme such as ``gopher://``, an ``http://`` URI without a host, a port that is
not a number, a database URI SQLAlchemy cannot parse). A well-formed URI of a server that is down is not
refused: that is an outage, which the run's buffers ride out (``platform.tracking``).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from platform.cli import UserFacingError
from platform.tracking.tracker import default_tracking_uri

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # SQLAlchemy stores; "+driver" may follow
HTTP_SCHEMES = ("http", "https")
# MLflow 3's other built-in stores: "" (a local path), file:, Databricks workspaces and Unity Catalog
OTHER_SCHEMES = ("", "file", "databricks", "databricks-uc", "uc")
ACCEPTED = (
    "a local path, file:PATH, sqlite:///PATH, postgresql|mysql|mssql://..., http(s)://HOST[:PORT], databricks"
)


class TrackingUriError(UserFacingError):
    """A tracking URI that no MLflow tracking store can open."""


def resolve_tracking_uri(configured: str | None, repo_root: Path) -> str:
    """``configured`` (``tracking.uri``) or ``$MLFLOW_TRACKING_URI`` or ``sqlite:////<repo_root>/mlflow.db``,
    checked by ``check_tracking_uri``."""
    setting = (
        "tracking.uri"
        if configured
        else "MLFLOW_TRACKING_URI"
        if os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        else "the default tracking URI"
    )
    uri = configured or default_tracking_uri(repo_root)
    check_tracking_uri(uri, setting)
    return uri


def check_tracking_uri(uri: str, setting: str = "tracking.uri") -> None:
    """Raise ``TrackingUriError`` (naming ``setting``, the value and the fix) for a URI that cannot work."""
    problem = _problem(uri.strip())
    if problem:
        raise TrackingUriError(
            f"{setting}={uri}: {problem}; MLflow accepts {ACCEPTED} (set tracking.uri to one, "
            "or leave it and $MLFLOW_TRACKING_URI unset for the repository's mlflow.db)"
        )


def _problem(uri: str) -> str | None:
    if not uri:
        return "empty"
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if len(scheme) == 1 and uri[1:3] in (":\\", ":/"):  # a Windows drive letter, not a scheme
        return None
    base = scheme.split("+", 1)[0]
    if base in DATABASE_SCHEMES:
        return _database_problem(uri, base)
    if scheme in HTTP_SCHEMES:
        if not parsed.hostname:
            return "no host"
        try:
            parsed.port  # noqa: B018  (raises ValueError for a port that is not a number in 0-65535)
        except ValueError:
            return f"the port of {parsed.netloc!r} is not a number in 0-65535"
        return None
    if scheme in OTHER_SCHEMES or scheme in _plugin_schemes():
        return None
    return f"MLflow has no tracking store for the scheme {scheme!r}"


def _database_problem(uri: str, base: str) -> str | None:
    from sqlalchemy.engine import make_url  # installed with MLflow, which needs it for these stores
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except (ArgumentError, ValueError) as exc:
        return f"not a database URL SQLAlchemy can parse ({exc})"
    if base == "sqlite" and not url.database:
        return "no database file (write sqlite:///relative/path.db or sqlite:////absolute/path.db)"
    if base != "sqlite" and not (url.host or url.database or url.query):  # a socket path may sit in the query
        return "no database host or name"
    return None


def _plugin_schemes() -> set[str]:
    """Schemes of tracking-store plugins installed beside MLflow (entry point group ``mlflow.tracking_store``)."""
    from importlib.metadata import entry_points

    return {ep.name.lower() for ep in entry_points(group="mlflow.tracking_store")}
