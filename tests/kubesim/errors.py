"""API errors in the Kubernetes ``Status`` format the official client expects.

Each helper builds the message the real API server would write for the same
mistake, so that a CLI tested here prints what its users will see on a real cluster.
"""

from __future__ import annotations

from typing import Any

from .resources import Resource

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An HTTP error answer: status code plus a Kubernetes Status body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` object sent as the response body."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": res.plural}
    if name:
        details["name"] = name
    if res.group:
        details["group"] = res.group
    details.update(extra)
    return details


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', details=_details(res, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404,
        f'namespaces "{namespace}" not found',
        details={"name": namespace, "kind": "namespaces"},
    )


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        f'{res.qualified} "{name}" already exists',
        reason="AlreadyExists",
        details=_details(res, name),
    )


def modified(res: Resource, name: str) -> ApiError:
    """Optimistic-concurrency failure (stale resourceVersion or uid precondition)."""
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict",
        details=_details(res, name),
    )


def invalid(res: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 with one cause per field error: (reason, field, message)."""
    parts = [f"{field}: {message}" for _, field, message in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {
        "name": name,
        "kind": res.kind,
        "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes],
    }
    if res.group:
        details["group"] = res.group
    return ApiError(422, f'{res.qualified_kind} "{name}" is invalid: {summary}', details=details)


def forbidden(
    res: Resource, verb: str, name: str | None, namespace: str | None, subresource: str | None
) -> ApiError:
    target = f'{res.qualified} "{name}"' if name else res.qualified
    resource = f"{res.plural}/{subresource}" if subresource else res.plural
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{target} is forbidden: User "sim-user" cannot {verb} resource "{resource}" '
        f'in API group "{res.group}" {scope}'
    )
    return ApiError(403, message, details=_details(res, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def gone(message: str) -> ApiError:
    return ApiError(410, message, reason="Expired")
