"""Settings of the library and its CLI (environment prefix ``RECSYS_``).

Importing this module creates no folders and opens no connections; paths are
resolved relative to the working directory when used.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: name of the registered model and of the alias the service serves
MODEL_NAME = "recsys-lightfm"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


class Settings(BaseSettings):
    """Library settings; every field can be set as ``RECSYS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    var_dir: Path = Field(
        Path("var"), description="Folder for local state (store, MLflow, caches)."
    )
    db_url: str | None = Field(
        None, description="SQLAlchemy URL of the event store; default: SQLite file under var_dir."
    )
    db_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds the event store waits for a locked SQLite file or a database "
        "connection before it reports the store unavailable.",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: SQLite store under var_dir."
    )
    mlflow_artifact_root: str | None = Field(
        None,
        description="Artifact root for new experiments; default: var_dir/mlartifacts, or the "
        "tracking server's own (e.g. S3) when the tracking URI is http(s).",
    )
    experiment_name: str = "recsys"
    model_name: str = MODEL_NAME
    service_url: str = Field(
        "http://127.0.0.1:8000", description="The recommendation service a retrain asks to reload."
    )
    admin_token: SecretStr | None = Field(
        None, description="The service's bearer token for POST /admin/reload (no default)."
    )
    alert_webhook_url: str | None = Field(
        None, description="Where a failed retraining run posts an alert (JSON); unset: logs only."
    )

    @property
    def resolved_db_url(self) -> str:
        """The event store URL, falling back to ``sqlite:///<var_dir>/events.db``."""
        return self.db_url or f"sqlite:///{self.var_dir / 'events.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        """The tracking URI, falling back to ``sqlite:///<var_dir>/mlflow.db``."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_dir / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> str | None:
        """Where new experiments keep artifacts: the setting, else None for a tracking server
        (it decides: its ``--artifacts-destination`` / ``--default-artifact-root``, e.g. an S3
        bucket), else ``var_dir/mlartifacts`` next to the local store.

        >>> Settings(var_dir="/v", mlflow_tracking_uri="http://mlflow:5000").resolved_artifact_root
        >>> Settings(var_dir="/v").resolved_artifact_root
        'file:///v/mlartifacts'
        """
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.resolved_tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.var_dir / "mlartifacts").resolve().as_uri()
