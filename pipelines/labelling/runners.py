"""Where ``robocar label predict`` runs a model: the car's runtime, an endpoint, an async endpoint.

Each returns a ``predict.Runner`` whose ``where`` says, for the report, what ran (artifact or endpoint)
and the model's classes by id once known. Nothing here is copied from the car or the endpoint: the car's
agent installs the package (``edge.agent.Agent.install_archive``, the path of ``robocar edge pull
--archive``) and ``edge.classify`` / ``edge.detect`` run it; the endpoints are called through
``pipelines.endpoint`` (AWS) and ``pipelines.local.endpoint_server`` (local), as ``robocar endpoint invoke``
calls them.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipelines.labelling.predict import (
    VERBOSE_JSON,
    Answer,
    Clients,
    Photo,
    PredictError,
    Runner,
    loads_answer,
)


# ---------------------------------------------------------------- the car
def install_for_car(clients: Clients, group: str, arn: str, target: str, root: Path) -> Path:
    """The package's artifact for ``target`` installed by the car's agent under ``root`` (digest checked
    against the registry, unpacked safely, smoke-tested); returns the installed model folder."""
    from edge import agent as agent_mod
    from edge import artifacts

    description = clients.sagemaker.describe_model_package(ModelPackageName=arn)
    candidate = agent_mod.candidate_from_package(description, target)
    if candidate is None:
        raise ValueError(f"{arn} has no artifact for edge target {target!r} (--edge-target)")
    car = agent_mod.Agent(Path(root), group=group, target=target, sagemaker=clients.sagemaker, s3=clients.s3)
    current = car.current_record()
    if current is None or f"{current['model_package_arn']}#{current['sha256']}" != candidate.key:
        fetched = Path(root) / "fetched" / f"{candidate.sha256}.tar.gz"
        artifacts.fetch_verified(clients.s3, candidate.artifact_uri, fetched, candidate.sha256)
        try:
            result = car.install_archive(fetched, candidate)
        finally:
            fetched.unlink(missing_ok=True)
        if result.outcome not in ("installed", "up-to-date"):
            raise ValueError(f"the car's agent did not install {arn}: {result.outcome}: {result.detail}")
    model_dir = car.current_dir()
    assert model_dir is not None  # installed just now, or already current
    return model_dir


def car_runner(
    clients: Clients, group: str, arn: str, target: str, root: Path, *, threads: int = 1
) -> Runner:
    """The car's classifier or detector (the package's manifest says which) on each photo."""
    from PIL import Image, UnidentifiedImageError

    from edge import classify, detect

    model_dir = install_for_car(clients, group, arn, target, root)
    if detect.is_detector(model_dir):
        model: Any = detect.open_detector(model_dir, threads=threads)
        task = "detection"
    else:
        model, task = classify.open_classifier(model_dir, threads=threads), "classification"
    classes = tuple(model.classes)

    def answer(photo: Photo, data: bytes) -> Answer:
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise PredictError(f"not a readable photo: {exc}") from None
        with image:
            values = model(image)
        if task == "detection":
            return Answer(classes, detections=values)
        return Answer(classes, probabilities=values)

    where = {"via": "car", "task": task, "artifact": model.description, "model_dir": str(model_dir),
             "edge_target": target, "classes": list(classes)}  # fmt: skip
    return Runner(where, answer_one=answer)


# ---------------------------------------------------------------- a real-time endpoint
def content_type(photo: Photo) -> str:
    from pipelines.endpoint import content_type_of

    return content_type_of(photo.source_ref)


def endpoint_runner(
    where_to: Any, clients: Clients, name: str, task: str, arn: str, *, workers: int = 1
) -> Runner:
    """Each photo sent to endpoint ``name``: the local server ``robocar endpoint deploy`` started (it must
    serve ``arn``), or SageMaker's InvokeEndpoint."""
    where: dict[str, Any] = {"via": "endpoint", "endpoint": name}
    if where_to.is_local:
        from pipelines.local import endpoint_server

        state = endpoint_server.status(where_to.local_root, name)
        if state is None or state["status"] != "InService":
            raise ValueError(f"no local endpoint {name} in service: robocar endpoint deploy --recipe ...")
        if state["package"] != arn:
            raise ValueError(f"local endpoint {name} serves {state['package']}, not {arn}: deploy it first")
        where["url"] = state["url"]

        def send(data: bytes, media: str) -> bytes:
            status, _, body = endpoint_server.invoke(state["url"], data, media, VERBOSE_JSON)
            if status >= 400:
                raise PredictError(
                    f"endpoint {name} answered {status}: {body[:300].decode('utf-8', 'replace')}"
                )
            return body
    else:
        from pipelines import endpoint

        def send(data: bytes, media: str) -> bytes:
            return endpoint.invoke(clients.runtime, name, data, media, VERBOSE_JSON)[1]

    def answer(photo: Photo, data: bytes) -> Answer:
        result = loads_answer(send(data, content_type(photo)), task)
        where.setdefault("classes", list(result.classes))
        return result

    where["concurrency"] = workers
    return Runner(where, answer_one=answer, workers=workers)


# ---------------------------------------------------------------- an asynchronous endpoint
def _is_missing(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    return code in ("NoSuchKey", "404", "NotFound") or isinstance(exc, FileNotFoundError)


def read_object(s3: Any, uri: str) -> bytes | None:
    """The object's bytes, or None while it does not exist yet."""
    from edge.s3_uri import split_s3_uri

    bucket, key = split_s3_uri(uri)
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise


def async_runner(
    where_to: Any,
    clients: Clients,
    name: str,
    task: str,
    input_folder: str,
    *,
    timeout_s: float,
    interval_s: float,
) -> Runner:
    """Each photo uploaded to ``<input folder>/<sha256><suffix>`` (as ``robocar endpoint invoke --async``
    names it) and submitted (InvokeEndpointAsync, or the local server's ``invoke_async``); then the
    output and failure objects polled until each photo has one, or ``timeout_s``."""
    where: dict[str, Any] = {"via": "async", "endpoint": name}
    submit = _local_submit(where_to, clients, name) if where_to.is_local else _aws_submit(clients, name)

    def answers(photos: Sequence[Photo]) -> Iterator[tuple[Photo, bytes, Answer | Exception]]:
        pending: list[tuple[Photo, bytes, str, str | None]] = []
        for photo in photos:
            data = b""
            try:
                data = photo.read()
                uri = input_folder + hashlib.sha256(data).hexdigest() + photo.suffix
                output, failure = submit(uri, data, content_type(photo))
                pending.append((photo, data, output, failure))
            except Exception as exc:  # counted as the photo's failure, the others go on
                yield photo, data, exc
        deadline = time.monotonic() + timeout_s
        while pending:
            still: list[tuple[Photo, bytes, str, str | None]] = []
            for photo, data, output, failure in pending:
                result = _collect(clients.s3, output, failure, task)
                if result is None:
                    still.append((photo, data, output, failure))
                else:
                    if isinstance(result, Answer):
                        where.setdefault("classes", list(result.classes))
                    yield photo, data, result
            pending = still
            if pending and time.monotonic() >= deadline:
                for photo, data, output, _ in pending:
                    yield photo, data, TimeoutError(f"no result at {output} within {timeout_s:g} s")
                return
            if pending:
                time.sleep(interval_s)

    return Runner(where, answer_all=answers)


def _collect(s3: Any, output: str, failure: str | None, task: str) -> Answer | Exception | None:
    body = read_object(s3, output)
    if body is not None:
        try:
            return loads_answer(body, task)
        except PredictError as exc:
            return exc
    error = read_object(s3, failure) if failure else None
    if error is not None:
        return PredictError(f"the endpoint failed: {error[:300].decode('utf-8', 'replace')}")
    return None


def _aws_submit(clients: Clients, name: str) -> Any:
    from edge.s3_uri import split_s3_uri
    from pipelines import endpoint

    def submit(uri: str, data: bytes, media: str) -> tuple[str, str | None]:
        bucket, key = split_s3_uri(uri)
        clients.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=media)
        answer = endpoint.invoke_async(clients.runtime, name, uri, media, VERBOSE_JSON)
        return answer["OutputLocation"], answer.get("FailureLocation")

    return submit


def _local_submit(where_to: Any, clients: Clients, name: str) -> Any:
    from edge.s3_uri import split_s3_uri
    from pipelines.local import endpoint_server

    state = endpoint_server.status(where_to.local_root, name)
    if state is None or state["status"] != "InService" or not state.get("async_output"):
        raise ValueError(f"no local async endpoint {name} in service: robocar endpoint deploy --async")

    def submit(uri: str, data: bytes, media: str) -> tuple[str, str | None]:
        bucket, key = split_s3_uri(uri)
        clients.s3.create_bucket(Bucket=bucket)
        clients.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=media)
        inference_id = str(uuid.uuid4())
        output = endpoint_server.invoke_async(
            where_to.local_root, name, uri, content_type=media, accept=VERBOSE_JSON, inference_id=inference_id
        )
        return output, f"{state['async_failure'].rstrip('/')}/{inference_id}-error.out"

    return submit
