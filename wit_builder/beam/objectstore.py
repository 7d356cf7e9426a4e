"""Object stores before any work: Beam's filesystems set from the run's pipeline options, and every ``s3://``
bucket a command names checked once, so that a wrong endpoint or key is one line, not minutes of retries.

Beam configures its filesystems from the options of a ``Pipeline`` when one is built; a stage's checks before
work (listing inputs, reading plan.json) run earlier, so :func:`configure` hands the same options to
``FileSystems`` first (``--s3_endpoint_url``, ``--s3_access_key_id``, ... of Beam's ``S3Options``).

Beam's S3 client retries an unreachable endpoint with exponential backoff for minutes; :func:`check_s3` asks
each bucket once (``HeadBucket``, a 5 s connect timeout, no retries) with the client Beam itself would build
and turns a failure into :class:`ObjectStoreError`: one line naming the URL and the setting to fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from wit_builder.core.errors import InputError

S3_SCHEME = "s3://"
CONNECT_TIMEOUT_S = 5.0
CREDENTIALS_HINT = ("--s3_access_key_id and --s3_secret_access_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "an AWS profile)")


class ObjectStoreError(InputError):
    """An object store that cannot be used as named: unreachable, refused credentials or a missing bucket."""


def configure(options: PipelineOptions) -> None:
    """Give Beam's filesystems the run's options now (Beam does it itself only when a Pipeline is built)."""
    FileSystems.set_options(options)


def paths_in(options: Any) -> Iterator[str]:
    """Every string (or string in a tuple) of a command's options dataclass tree: the paths it may name."""
    if not dataclasses.is_dataclass(options):
        return
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from paths_in(value)
        elif isinstance(value, str):
            yield value
        elif isinstance(value, tuple):
            yield from (v for v in value if isinstance(v, str))


def s3_buckets(paths: Iterable[str]) -> list[str]:
    """The distinct buckets of the ``s3://`` paths, in first-seen order."""
    buckets = (p[len(S3_SCHEME):].split("/", 1)[0] for p in paths if p.startswith(S3_SCHEME))
    return list(dict.fromkeys(b for b in buckets if b))


def _client(options: PipelineOptions) -> Any:
    import boto3
    from botocore.config import Config

    s3 = options.view_as(S3Options)
    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=30, retries={"max_attempts": 1})
    return boto3.client("s3", aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key,
                        aws_session_token=s3.s3_session_token, endpoint_url=s3.s3_endpoint_url,
                        region_name=s3.s3_region_name, use_ssl=not s3.s3_disable_ssl, verify=s3.s3_verify,
                        config=config)


def check_s3(paths: Iterable[str], options: PipelineOptions) -> None:
    """Ask every bucket the ``s3://`` paths name once; ObjectStoreError naming the URL and the setting to fix
    when the endpoint is unreachable, the credentials are refused or missing, or the bucket does not exist.
    Nothing is asked when no path is on ``s3://``."""
    buckets = s3_buckets(paths)
    if not buckets:
        return
    try:
        client = _client(options)
        from botocore import exceptions
    except ImportError as exc:
        raise ObjectStoreError(f"s3://{buckets[0]}: Beam's S3 filesystem needs boto3: pip install "
                               "'apache-beam[aws]'") from exc
    except ValueError as exc:  # botocore's "Invalid endpoint: HOST:PORT" (a URL without its scheme)
        raise ObjectStoreError(f"s3://{buckets[0]}: --s3_endpoint_url {options.view_as(S3Options).s3_endpoint_url!r} "
                               f"is not a URL ({exc}): write it as http://HOST:PORT or https://HOST") from exc
    endpoint = options.view_as(S3Options).s3_endpoint_url or "AWS's default endpoint"
    for bucket in buckets:
        url = f"s3://{bucket}"
        try:
            client.head_bucket(Bucket=bucket)
        except exceptions.NoCredentialsError as exc:
            raise ObjectStoreError(f"{url}: no credentials for the object store: set {CREDENTIALS_HINT}") from exc
        except (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError,
                exceptions.ReadTimeoutError) as exc:
            raise ObjectStoreError(f"{url}: cannot reach the object store at {endpoint}: check --s3_endpoint_url "
                                   f"(and --s3_disable_ssl for a plain-HTTP endpoint) ({exc})") from exc
        except exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchBucket") or status == 404:
                raise ObjectStoreError(f"{url}: no such bucket at {endpoint}: create it, or fix the path or "
                                       "--s3_endpoint_url") from exc
            if code in ("403", "401", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied") or status in (
                    401, 403):
                raise ObjectStoreError(f"{url}: the object store at {endpoint} refused the credentials (HTTP "
                                       f"{status}): set {CREDENTIALS_HINT}") from exc
            raise ObjectStoreError(f"{url}: the object store at {endpoint} answered {code or status}: {exc}") from exc
        except exceptions.BotoCoreError as exc:
            raise ObjectStoreError(f"{url}: the object store at {endpoint} failed: {exc}; check --s3_endpoint_url "
                                   f"and {CREDENTIALS_HINT}") from exc
