"""TF-Serving backends: the same models over gRPC (PredictionService) or REST (/v1/models/<name>:predict).

Which version scores, and which card reads it: each backend asks TF-Serving's model metadata which
version it serves (the latest, by TF-Serving's default policy; rechecked every `poll_s` seconds, so a
new version TF-Serving picked up is used without a restart), checks that the served signature takes
the card's input, and then asks for THAT version explicitly in every Predict. The card (threshold,
features, version) is read from <models_dir>/<name>/<version>/model_card.json: the folder TF-Serving
serves from, mounted into the scorer too (export writes the card beside the SavedModel). Pinning the
version means a score is never read with another version's threshold.

A model TF-Serving does not serve at all (metadata NOT_FOUND: not in its models.config) raises
ModelsNotFoundError, so only the windows of that model's role are set aside; that answer too is
rechecked every `poll_s` seconds.

Every transport failure (connection refused, deadline exceeded, version unloaded, server error)
becomes ModelServerUnavailable: the caller retries the whole batch later; nothing here retries.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.scorer.backends import BackendResult, ModelsNotFoundError, check_inputs, role_models, versioned_card

SIGNATURE = "serving_default"
OUTPUTS = ("score", "feature_error")
# Rows per request: 1024 LSTM sequences of 8 x ~30 float32 stay near 1 MB, far below any message limit.
REQUEST_ROWS = 1024
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# gRPC's own reconnect backoff grows to 2 minutes by default: cap it so a restarted TF-Serving is found in seconds.
RECONNECT_MAX_MS = 3000


class ModelServerUnavailable(RuntimeError):
    """The model server did not score (down, slow, or no longer serving the version): retry the batch."""


def not_served(name: str, server: str, detail: str) -> ModelsNotFoundError:
    return ModelsNotFoundError(
        f"{server} does not serve a {name} model ({detail.strip()}): is it exported and in TF-Serving's models.config?"
    )


@dataclass(frozen=True)
class Served:
    version: int
    card: dict[str, Any]
    input_name: str
    checked_at: float


class TFServingBackend(ABC):
    """What the gRPC and REST clients share: version resolution, cards, chunking. Subclasses do the wire."""

    name = "tfserving"

    def __init__(self, models_dir: Path | str, poll_s: float, timeout_s: float) -> None:
        self.models_dir = Path(models_dir)
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._served: dict[str, Served] = {}
        self._absent: dict[str, tuple[str, float]] = {}  # model -> why it is not served, when that was checked

    @abstractmethod
    def _metadata(self, name: str) -> tuple[int, set[str]]:
        """(served version, input names of its serving_default signature); ModelsNotFoundError if not served."""

    @abstractmethod
    def _predict(self, name: str, version: int, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        """{"score": (n,), "feature_error": (n, F)} of that exact version."""

    def served(self, name: str) -> Served:
        """The version TF-Serving serves and its card, rechecked every poll_s seconds."""
        now = time.monotonic()
        current = self._served.get(name)
        if current is not None and now - current.checked_at < self.poll_s:
            return current
        absent = self._absent.get(name)
        if absent is not None and now - absent[1] < self.poll_s:
            raise ModelsNotFoundError(absent[0])  # a fresh one: a re-raised error grows its traceback
        try:
            version, inputs = self._metadata(name)
            if current is not None and current.version == version:
                card = current.card
            else:
                card = versioned_card(self.models_dir, name, version)
        except ModelsNotFoundError as exc:
            self._served.pop(name, None)
            self._absent[name] = (str(exc), now)
            raise
        self._absent.pop(name, None)
        input_name = card["signature"]["input"]["name"]
        if input_name not in inputs:
            raise ValueError(
                f"TF-Serving's {name} version {version} takes {sorted(inputs)}, but its card in {self.models_dir} "
                f"says {input_name!r}: the scorer and TF-Serving do not read the same models folder"
            )
        self._served[name] = Served(version, card, input_name, now)
        return self._served[name]

    def _call(self, served: Served, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) == 0:
            n_features = len(served.card["features"])
            return np.zeros(0, dtype=np.float32), np.zeros((0, n_features), dtype=np.float32)
        scores, errors = [], []
        for start in range(0, len(x), REQUEST_ROWS):
            try:
                out = self._predict(name, served.version, served.input_name, x[start : start + REQUEST_ROWS])
            except ModelServerUnavailable:
                self._served.pop(name, None)  # maybe the version was unloaded: ask again on the retry
                raise
            scores.append(np.asarray(out["score"], dtype=np.float32).reshape(-1))
            errors.append(np.asarray(out["feature_error"], dtype=np.float32))
        return np.concatenate(scores), np.concatenate(errors)

    def score(self, windows_features: np.ndarray, sequences: np.ndarray, role: str = "src") -> BackendResult:
        autoencoder, lstm = role_models(role)
        served = {name: self.served(name) for name in (autoencoder, lstm)}
        cards = {name: s.card for name, s in served.items()}
        windows_features = np.ascontiguousarray(windows_features, dtype=np.float32)
        sequences = np.ascontiguousarray(sequences, dtype=np.float32)
        check_inputs(windows_features, sequences, cards, role)
        ae_scores, ae_errors = self._call(served[autoencoder], autoencoder, windows_features)
        lstm_scores, lstm_errors = self._call(served[lstm], lstm, sequences)
        versions = {name: s.version for name, s in served.items()}
        return BackendResult(role, ae_scores, ae_errors, lstm_scores, lstm_errors, cards, versions)


class GrpcBackend(TFServingBackend):
    """tensorflow_serving.apis PredictionService over one insecure gRPC channel (host:port)."""

    name = "grpc"

    def __init__(self, address: str, models_dir: Path | str, poll_s: float, timeout_s: float) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        super().__init__(models_dir, poll_s, timeout_s)
        self.address = address
        self._grpc = grpc
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _rpc(self, method: Any, request: Any, what: str, unversioned: str | None = None) -> Any:
        """The response. `unversioned`: the model asked for without a version, which NOT_FOUND says is not served."""
        try:
            return method(request, timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            if unversioned is not None and exc.code() == self._grpc.StatusCode.NOT_FOUND:
                raise not_served(unversioned, f"TF-Serving gRPC {self.address}", exc.details()) from exc
            reason = f"{exc.code().name} {exc.details()}"
            raise ModelServerUnavailable(f"TF-Serving gRPC {self.address} {what}: {reason}") from exc

    def _metadata(self, name: str) -> tuple[int, set[str]]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        response = self._rpc(self._stub.GetModelMetadata, request, f"metadata of {name}", unversioned=name)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return int(response.model_spec.version.value), set(signatures.signature_def[SIGNATURE].inputs)

    def _predict(self, name: str, version: int, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(output_filter=list(OUTPUTS))
        request.model_spec.name = name
        request.model_spec.signature_name = SIGNATURE
        request.model_spec.version.value = version
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
        response = self._rpc(self._stub.Predict, request, f"predict {name} version {version}")
        return {k: tf.make_ndarray(response.outputs[k]) for k in OUTPUTS}

    def close(self) -> None:
        self._channel.close()


class RestBackend(TFServingBackend):
    """TF-Serving's REST API: GET /v1/models/<name>/metadata, POST /v1/models/<name>/versions/<v>:predict
    with the columnar {"inputs": {...}} body (one array per input, answered as {"outputs": {...}})."""

    name = "rest"

    def __init__(self, base_url: str, models_dir: Path | str, poll_s: float, timeout_s: float) -> None:
        import requests

        super().__init__(models_dir, poll_s, timeout_s)
        self.base_url = base_url.rstrip("/")
        self._requests = requests
        self._session = requests.Session()  # keeps the connection open between batches

    def _http(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None, unversioned: str | None = None
    ) -> dict[str, Any]:
        """The JSON answer. `unversioned`: the model asked for without a version, which 404 says is not served."""
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(method, url, json=body, timeout=self.timeout_s)
        except self._requests.RequestException as exc:
            raise ModelServerUnavailable(f"TF-Serving REST {url} {what}: {exc}") from exc
        if unversioned is not None and response.status_code == 404:
            raise not_served(unversioned, f"TF-Serving REST {self.base_url}", response.text[:300])
        if response.status_code != 200:
            raise ModelServerUnavailable(
                f"TF-Serving REST {url} {what}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json()

    def _metadata(self, name: str) -> tuple[int, set[str]]:
        meta = self._http("GET", f"/v1/models/{name}/metadata", f"metadata of {name}", unversioned=name)
        signature = meta["metadata"]["signature_def"]["signature_def"][SIGNATURE]
        return int(meta["model_spec"]["version"]), set(signature["inputs"])

    def _predict(self, name: str, version: int, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        body = {"signature_name": SIGNATURE, "inputs": {input_name: x.tolist()}}
        out = self._http("POST", f"/v1/models/{name}/versions/{version}:predict", f"predict {name}", body)["outputs"]
        return {k: np.asarray(out[k], dtype=np.float32) for k in OUTPUTS}

    def close(self) -> None:
        self._session.close()
