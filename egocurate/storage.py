"""Storage options: one dict for deltalake and fsspec alike.

Users give Delta-style options (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...), the form
deltalake's object store takes; fsspec (s3fs) wants ``key``/``secret``/``client_kwargs``. This
module translates, so a pipeline config carries one ``storage_options`` mapping. It also words the
failures of those clients (no credentials, a missing bucket) as one line naming the URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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


# ------------------------------------------------------------------------------ storage errors
# Errors of object storage clients (botocore, s3fs, aiohttp, fsspec, deltalake's object_store),
# matched by class name and module so that naming them never imports the clients.
_CLIENT_MODULES = ("botocore", "aiobotocore", "s3fs", "fsspec", "aiohttp", "gcsfs", "adlfs", "google.auth")
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
_UNREACHABLE = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "FSTimeoutError",
    "ClientConnectorError",
    "ServerTimeoutError",
}
_DENIED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}
# deltalake's object_store says which store failed; its message holds the server's XML reply.
_OBJECT_STORE = (
    "Generic S3 error",
    "Generic GCS error",
    "Generic MicrosoftAzure error",
    "Generic HTTP error",
)
_URL = re.compile(r"\b(?:s3a?|gs|gcs|az|abfss?|adl|hf)://[^\s'\"<>(),;]+")
_HTTP = re.compile(r"https?://[^\s'\"<>/?]+")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it was raised from or while handling, outermost first."""
    out: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in out):
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _classify(exc: BaseException) -> tuple[str, str | None] | None:
    """(kind, bucket) of one exception: credentials, bucket, denied, unreachable or store; None when
    it is not an object-storage failure."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith(_CLIENT_MODULES)}
    text = str(exc)
    if names & _NO_CREDENTIALS:
        return "credentials", None
    if names & _UNREACHABLE:
        return "unreachable", None
    if "ClientError" in names:
        error = (getattr(exc, "response", None) or {}).get("Error", {})
        if error.get("Code") == "NoSuchBucket":
            return "bucket", error.get("BucketName")
        if str(error.get("Code")) in _DENIED_CODES:
            return "denied", None
        return None
    if "The specified bucket does not exist" in text:
        return "bucket", None
    if isinstance(exc, OSError) and any(marker in text for marker in _OBJECT_STORE):
        return _classify_object_store(text)
    return None


def _classify_object_store(text: str) -> tuple[str, str | None]:
    """Kind of a deltalake object_store error, read off its message."""
    if "<Code>NoSuchBucket</Code>" in text:
        found = re.search(r"<BucketName>([^<]+)</BucketName>", text)
        return "bucket", found.group(1) if found else None
    if "/latest/api/token" in text or "169.254.169.254" in text or "credential" in text.lower():
        return "credentials", None  # no key in the environment, so it asked for instance credentials
    if any(code in text for code in ("<Code>AccessDenied</Code>", "InvalidAccessKeyId", "403 Forbidden")):
        return "denied", None
    if any(words in text for words in ("tcp connect error", "dns error", "Connection refused", "timed out")):
        return "unreachable", None
    return "store", None


def _bucket_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _name_url(chain: list[BaseException], bucket: str | None, locations: Sequence[str]) -> str | None:
    """The URL the failure is about: one in the messages, else one the command works on (of the
    failing bucket when known), else the bucket."""
    in_messages = [m.rstrip(".:") for exc in chain for m in _URL.findall(str(exc))]
    remote = [u for u in (*in_messages, *locations) if "://" in u and not u.startswith("file://")]
    if bucket:
        remote = [u for u in remote if _bucket_of(u) == bucket] or [f"s3://{bucket}"]
    return remote[0] if remote else None


def _detail(chain: list[BaseException]) -> str:
    """The innermost cause in a few words (an object_store message keeps its first and last lines)."""
    text = str(chain[-1]).strip() or type(chain[-1]).__name__
    lines = [re.sub(r"\x1b\[[0-9;]*m|↳", "", line).strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return f"{lines[0]}: {lines[-1]}"[:300]
    return lines[0][:300] if lines else text


def storage_error(exc: BaseException, locations: Sequence[str] = ()) -> str | None:
    """One line for an object-storage failure anywhere in `exc`'s chain (no credentials, a missing
    bucket, access denied, an unreachable endpoint), naming the URL; None for any other error.

    `locations` are the catalog and source URLs the command works on, for errors (such as
    botocore's ``NoCredentialsError``) whose message names none.
    """
    chain = _chain(exc)
    found = next(((e, kind) for e in chain if (kind := _classify(e)) is not None), None)
    if found is None:
        return None
    failing, (kind, bucket) = found
    url = _name_url(chain, bucket, locations)
    where = url or "the object store"
    endpoint = _HTTP.search(str(failing))
    if kind == "credentials":
        hint = (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or storage_options in the "
            "pipeline file"
            if where.startswith(("s3://", "s3a://", "the object"))
            else "configure the store's credentials"
        )
        return f"no credentials for {where}: {hint}"
    if kind == "bucket":
        return f"bucket {bucket or _bucket_of(where)!r} does not exist: {where}"
    if kind == "denied":
        return f"access denied to {where}: check the credentials and the bucket's permissions"
    if kind == "unreachable":
        at = f" at {endpoint.group(0)}" if endpoint else ""
        return f"cannot reach the object store of {where}{at}: {_detail(chain)}"
    return f"object store error on {where}: {_detail([failing])}"
