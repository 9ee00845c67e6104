"""A small stand-in for TF-Serving, for tests and the benchmark: the real PredictionService gRPC protocol
(Predict, GetModelMetadata from tensorflow-serving-api) and the REST API (/v1/models/<name>[/versions/<v>]
:predict and /metadata), serving the SavedModels of a models folder with tf.saved_model.load.

Like TF-Serving with its default version policy, a request without a version gets the latest version in
the folder (a version dropped in later is served from then on) and a request for a version not in the
folder gets NOT_FOUND. The metadata is the SavedModel's own SignatureDef, as TF-Serving returns it.
`delay_s` makes every predict slow, to exercise the clients' deadlines.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from services.scorer.backends import latest_version

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ModelNotFound(KeyError):
    pass


class SavedModels:
    """(name, version) -> loaded serving_default signature, loaded on first use."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._loaded: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self.delay_s = 0.0

    def resolve(self, name: str, version: int | None) -> int:
        version = latest_version(self.models_dir, name) if version is None else version
        if version is None or not (self.models_dir / name / str(version) / "saved_model.pb").is_file():
            raise ModelNotFound(f"Servable not found for request: {name} version {version}")
        return version

    def predict(
        self, name: str, version: int | None, inputs: dict[str, np.ndarray]
    ) -> tuple[int, dict[str, np.ndarray]]:
        version = self.resolve(name, version)
        with self._lock:
            if (name, version) not in self._loaded:
                self._loaded[(name, version)] = tf.saved_model.load(str(self.models_dir / name / str(version)))
            saved = self._loaded[(name, version)]
        if self.delay_s:
            time.sleep(self.delay_s)
        out = saved.signatures["serving_default"](**{k: tf.constant(v, dtype=tf.float32) for k, v in inputs.items()})
        return version, {k: v.numpy() for k, v in out.items()}

    def signatures(self, name: str, version: int | None) -> tuple[int, get_model_metadata_pb2.SignatureDefMap]:
        version = self.resolve(name, version)
        saved = saved_model_pb2.SavedModel.FromString(
            (self.models_dir / name / str(version) / "saved_model.pb").read_bytes()
        )
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in saved.meta_graphs[0].signature_def.items():
            if not key.startswith("__"):  # TF-Serving leaves out internal signatures such as __saved_model_init_op
                signatures.signature_def[key].CopyFrom(signature)
        return version, signatures


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: SavedModels) -> None:
        self.models = models

    @staticmethod
    def _version(spec: Any) -> int | None:
        return spec.version.value if spec.HasField("version") else None

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - the protocol's name
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            version, outputs = self.models.predict(request.model_spec.name, self._version(request.model_spec), inputs)
        except ModelNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = "serving_default"
        wanted = set(request.output_filter) or set(outputs)
        for key in wanted:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            version, signatures = self.models.signatures(request.model_spec.name, self._version(request.model_spec))
        except ModelNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response


_REST_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<verb>:predict|/metadata)$")


def _rest_handler(models: SavedModels) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as TF-Serving does
        disable_nagle_algorithm = True  # headers and body go in two writes: Nagle would hold the body ~40 ms

        def _route(self, verb: str) -> tuple[str, int | None] | None:
            match = _REST_PATH.match(self.path)
            if not match or match["verb"] != verb:
                self._reply(404, {"error": f"Malformed request: {self.command} {self.path}"})
                return None
            return match["name"], int(match["version"]) if match["version"] else None

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            route = self._route("/metadata")
            if route is None:
                return
            try:
                version, signatures = models.signatures(*route)
            except ModelNotFound as exc:
                return self._reply(404, {"error": str(exc)})
            sig_json = json_format.MessageToDict(signatures, preserving_proto_field_name=True)
            spec = {"name": route[0], "signature_name": "", "version": str(version)}
            self._reply(200, {"model_spec": spec, "metadata": {"signature_def": sig_json}})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            route = self._route(":predict")
            if route is None:
                return
            if "inputs" not in body:
                return self._reply(400, {"error": "this test server takes the columnar {'inputs': {...}} format"})
            inputs = {k: np.asarray(v, dtype=np.float32) for k, v in body["inputs"].items()}
            try:
                _, outputs = models.predict(*route, inputs)
            except ModelNotFound as exc:
                return self._reply(404, {"error": str(exc)})
            self._reply(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            return

    return Handler


class ModelServer:
    """`start_grpc(port)` / `start_rest(port)` (0 = a free port; returns the port), `stop()`; restartable."""

    def __init__(self, models_dir: Path | str) -> None:
        self.models = SavedModels(Path(models_dir))
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    def start_grpc(self, port: int = 0) -> int:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # a stopped server's port must really be free
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Servicer(self.models), server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        self._grpc = server
        return bound

    def start_rest(self, port: int = 0) -> int:
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _rest_handler(self.models))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="rest-model-server", daemon=True).start()
        return self._http.server_address[1]

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
