"""Storage options: one dict for deltalake and fsspec alike.

Users give Delta-style options (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...), the form
deltalake's object store takes; fsspec (s3fs) wants ``key``/``secret``/``client_kwargs``. This
module translates, so a pipeline config carries one ``storage_options`` mapping.
"""

from __future__ import annotations

from typing import Any

_S3_CLIENT_KEYS = {
    "AWS_ENDPOINT_URL": "endpoint_url",
    "AWS_ENDPOINT": "endpoint_url",
    "AWS_REGION": "region_name",
}
_DELTA_ONLY = {
    "AWS_ALLOW_HTTP",
    "AWS_S3_ALLOW_UNSAFE_RENAME",
    "AWS_CONDITIONAL_PUT",
    "AWS_S3_LOCKING_PROVIDER",
}


def fsspec_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """fsspec keyword arguments for `storage_options` (Delta-style AWS_* keys are translated)."""
    if not storage_options:
        return {}
    opts: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in storage_options.items():
        upper = key.upper()
        if upper == "AWS_ACCESS_KEY_ID":
            opts["key"] = value
        elif upper == "AWS_SECRET_ACCESS_KEY":
            opts["secret"] = value
        elif upper == "AWS_SESSION_TOKEN":
            opts["token"] = value
        elif upper in _S3_CLIENT_KEYS:
            client[_S3_CLIENT_KEYS[upper]] = value
        elif upper in _DELTA_ONLY:
            continue
        else:
            opts[key] = value  # already an fsspec option
    if client:
        opts["client_kwargs"] = {**opts.get("client_kwargs", {}), **client}
    return opts
