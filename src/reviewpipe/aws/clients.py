"""boto3 clients from the `aws` params section, and AWS failures as user errors.

Credentials come only from the standard AWS chain (environment, shared config/profile, instance role);
nothing here reads, logs or writes them. `aws.endpoint_url` (or botocore's own AWS_ENDPOINT_URL) points
the clients at an AWS-compatible service such as moto's server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reviewpipe.errors import ReviewpipeError


@dataclass(frozen=True)
class AwsSettings:
    """The `aws` params section: where the AWS APIs are, never who you are."""

    region: str | None
    profile: str | None
    endpoint_url: str | None
    role_arn: str

    @classmethod
    def from_params(cls, section: Any) -> AwsSettings:
        return cls(
            region=section.region or None,
            profile=section.profile or None,
            endpoint_url=section.endpoint_url or None,
            role_arn=str(section.role_arn),
        )

    def require_role(self) -> str:
        import re

        if "CHANGE-ME" in self.role_arn or not re.fullmatch(
            r"arn:aws[a-z-]*:iam::\d{12}:role/\S+", self.role_arn or ""
        ):
            raise ReviewpipeError(
                "aws.role_arn must be the IAM role SageMaker assumes "
                f"(arn:aws:iam::<account>:role/<name>), not {self.role_arn!r}; set it in conf/aws/default.yaml"
            )
        return self.role_arn


class Aws:
    """One boto3 session (the standard credential chain) and its clients for one region."""

    def __init__(self, settings: AwsSettings, session: Any = None) -> None:
        import boto3

        self.settings = settings
        with aws_call("opening an AWS session"):
            self.session = session or boto3.Session(
                profile_name=settings.profile, region_name=settings.region
            )
        self.region = settings.region or self.session.region_name
        if not self.region:
            raise ReviewpipeError("no AWS region: set aws.region or AWS_DEFAULT_REGION")
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            with aws_call(f"opening the {service} client"):
                self._clients[service] = self.session.client(
                    service, region_name=self.region, endpoint_url=self.settings.endpoint_url
                )
        return self._clients[service]

    def account_id(self) -> str:
        with aws_call("reading the account id (sts:GetCallerIdentity)"):
            return str(self.client("sts").get_caller_identity()["Account"])


class SageMakerJobs:
    """S3 + SageMaker clients of one session, and a settings section with `s3_prefix` (where the
    job's files go) and `image_uri` (a DLC; `{region}` is filled in)."""

    def __init__(self, aws: Aws, settings: Any) -> None:
        self.aws = aws
        self.settings = settings
        self.s3 = aws.client("s3")
        self.sagemaker = aws.client("sagemaker")

    def _uri(self, *parts: str) -> str:
        return "/".join([self.settings.s3_prefix.rstrip("/"), *parts])

    @property
    def image_uri(self) -> str:
        return str(self.settings.image_uri).format(region=self.aws.region)


@contextmanager
def aws_call(what: str, settings: str = "aws") -> Iterator[None]:
    """AWS failures as ReviewpipeErrors that say what failed (never with credentials in them);
    `settings` names the params section with the region and profile."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        WaiterError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ReviewpipeError(
            f"{what}: no usable AWS credentials in the standard chain ({exc}); set AWS_PROFILE or run "
            "`aws configure` (reviewpipe never takes keys in params)"
        ) from exc
    except ProfileNotFound as exc:
        raise ReviewpipeError(f"{what}: {exc}; fix {settings}.profile or ~/.aws/config") from exc
    except NoRegionError as exc:
        raise ReviewpipeError(f"{what}: no AWS region; set {settings}.region or AWS_DEFAULT_REGION") from exc
    except WaiterError as exc:
        raise ReviewpipeError(f"{what}: {exc}") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ReviewpipeError(f"{what} failed: {error.get('Code')}: {error.get('Message')}") from exc
    except (BotoCoreError, S3UploadFailedError) as exc:
        raise ReviewpipeError(f"{what} failed: {exc}") from exc


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for anything else)."""
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def poll(
    describe: Callable[[], dict[str, Any]],
    status_of: Callable[[dict[str, Any]], str],
    done: tuple[str, ...],
    what: str,
    delay_s: float,
    timeout_s: float,
    report: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Call `describe` every `delay_s` until its status is one of `done`; print each change of the
    `report` line (the status by default). A ReviewpipeError after `timeout_s`."""
    started = time.monotonic()
    last = None
    while True:
        described = describe()
        line = report(described) if report else status_of(described)
        if line != last:
            print(f"{what}: {line}", flush=True)
            last = line
        if status_of(described) in done:
            return described
        if time.monotonic() - started > timeout_s:
            raise ReviewpipeError(
                f"{what} still {status_of(described)} after {timeout_s:g} s; raise the timeout in conf or "
                "check it in the AWS console (it keeps running)"
            )
        time.sleep(delay_s)


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def upload(s3: Any, uri: str, data: bytes | None = None, path: str | Path | None = None) -> str:
    """Put `data` (or the file at `path`) at `uri` unless an object of that size is there: callers
    name objects by a content hash, so same size there means same bytes. Returns `uri`."""
    bucket, key = split_s3(uri)
    size = len(data) if data is not None else Path(str(path)).stat().st_size
    with aws_call(f"checking {uri}"):
        try:
            if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == size:
                return uri
        except Exception as exc:
            if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
    with aws_call(f"uploading {uri}"):
        if data is not None:
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            s3.upload_file(str(path), bucket, key)
    return uri
