"""What the registry plane raises, and the MLflow error codes it tells apart."""

from __future__ import annotations

# MLflow error codes meaning "there is no such model / version / alias" and "it exists already".
NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"})
ALREADY_EXISTS = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})


class RegistryError(RuntimeError):
    """The registry refused or lacks something promotion needs; the message says what."""


class PromotionRefused(RegistryError):
    """A version may not become champion (gates failed, or it was not judged by rayops)."""

    def __init__(self, *, registered_model: str, version: str, reason: str) -> None:
        self.registered_model = registered_model
        self.version = version
        self.reason = reason
        super().__init__(f"{registered_model} v{version} cannot be promoted: {reason}")
