"""``s3://bucket/key`` and its parts: the one parser of S3 URIs (standard library only)."""

from __future__ import annotations

S3_SCHEME = "s3://"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``, the key possibly empty; a clear ValueError otherwise."""
    if not isinstance(uri, str) or not uri.startswith(S3_SCHEME):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in S3 URI: {uri!r}")
    return bucket, key
