"""``rcdnet serve``: a FastAPI service around a trained model, and the web page a clinician uses.

    GET  /            the page: drop an image, see the label, the probability and the heat map
    GET  /health      {"status": "ok"}
    GET  /version     rcdnet and model versions, classes, operating points, whether /explain is available
    POST /predict     multipart field ``file`` (image, DICOM or video) -> JSON prediction
    POST /explain     multipart field ``file`` (+ ``method``) -> PNG: image | heat-map overlay, with caption
    GET  /docs        OpenAPI documentation

Uploads are held in memory (the multipart parser may spool large ones to the system's temporary directory);
nothing else is written. Bad input gets a 4xx with a plain message, never a stack trace.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from rcdnet import __version__
from rcdnet.data.samples import ImageReadError, Sample
from rcdnet.data.sources import IncompleteVideo, read_frames
from rcdnet.deploy.onnx import file_sha256
from rcdnet.explain.cam import METHODS, to_original
from rcdnet.explain.render import panel
from rcdnet.explain.run import caption, mapper
from rcdnet.inference import ENSEMBLE_FILE, Predictor, describe_prediction, load_predictor, resolve_checkpoint

log = logging.getLogger("rcdnet.serve")
STATIC = Path(__file__).parent / "static"
MAX_FRAMES = 600  # frames read from one uploaded video or multi-frame DICOM


def _model_file(model: str | Path) -> Path:
    p = Path(model)
    if p.suffix in (".onnx", ".json"):
        return p
    if p.is_dir() and (p / ENSEMBLE_FILE).is_file():
        return p / ENSEMBLE_FILE
    return resolve_checkpoint(p)


def create_app(model: str | Path, max_upload_mb: float = 50.0) -> FastAPI:
    """The service for one model (run directory, checkpoint or ``.onnx``)."""
    path = _model_file(model)
    predictor = load_predictor(path)
    lock = threading.Lock()  # one model, shared: heat-map hooks must not see another request's forward pass
    limit = int(max_upload_mb * 2**20)
    version = {"rcdnet": __version__, "model_file": path.name, "model_sha256": file_sha256(path)[:16],
               "model": getattr(predictor, "config", {}).get("model", {}).get("name")
               or getattr(predictor, "metadata", {}).get("model"),
               "runtime": {"Predictor": "pytorch", "OnnxPredictor": "onnxruntime",
                           "EnsemblePredictor": "pytorch ensemble"}[type(predictor).__name__],
               "classes": predictor.classes, "operating_points": predictor.thresholds,
               "explain": isinstance(predictor, Predictor), "max_upload_mb": max_upload_mb}
    model_version = f"{version['model']} {version['model_sha256']}"
    app = FastAPI(title="rcdnet", version=__version__,
                  description="Benign vs malignant breast ultrasound. Research software, not a medical device.")

    @app.middleware("http")
    async def size_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit + 65536:
            return JSONResponse({"detail": f"upload too large: the limit is {max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    def frames_of(file: UploadFile, data: bytes, max_frames: int = MAX_FRAMES
                  ) -> tuple[str, list[np.ndarray], str | None]:
        """(file name, RGB frames, a warning when a clip ended early and only its decoded frames are used)."""
        name = Path(file.filename or "upload").name
        if len(data) > limit:
            raise HTTPException(413, f"upload too large: the limit is {max_upload_mb:g} MB")
        if not data:
            raise HTTPException(400, f"{name}: empty file")
        frames, warning = [], None
        try:
            for f in read_frames(Path(name), data=data, max_frames=max_frames):
                frames.append(f.rgb)
        except IncompleteVideo as exc:
            warning = str(exc)
        except ImageReadError as exc:
            raise HTTPException(415, str(exc)) from None
        return name, frames, warning

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/version")
    def get_version():
        return version

    @app.post("/predict")
    def predict(file: UploadFile = File(...)):
        name, frames, warning = frames_of(file, file.file.read(limit + 1))
        try:
            arrays = np.stack([predictor.preprocessor(f) for f in frames])
        except ValueError as exc:
            raise HTTPException(415, f"{name}: image could not be preprocessed ({exc})") from None
        with lock:
            probs = predictor.predict_arrays(arrays)
        row = describe_prediction(predictor, name, probs.mean(axis=0), frames=len(frames))
        return {"file": name, "label": row["label"], "p_malignant": row["p_malignant"],
                "operating_points": {op: {"threshold": t, "malignant": bool(row[f"malignant@{op}"])}
                                     for op, t in predictor.thresholds.items()},
                "frames": len(frames), "p_malignant_per_frame": [round(float(p), 4) for p in
                                                                 probs[:, predictor.malignant_index]],
                "warning": warning, "model_version": model_version}

    @app.post("/explain", responses={200: {"content": {"image/png": {}}}})
    def explain(file: UploadFile = File(...), method: str = Form("gradcam")):
        if not isinstance(predictor, Predictor):
            raise HTTPException(501, f"heat maps need a single PyTorch checkpoint; this service runs "
                                     f"{version['runtime']}")
        if method not in METHODS or method == "scorecam":
            raise HTTPException(422, f"method must be one of {', '.join(m for m in METHODS if m != 'scorecam')}")
        name, frames, _ = frames_of(file, file.file.read(limit + 1), max_frames=1)
        rgb = frames[0]
        pre = predictor.preprocessor(rgb)[None]
        with lock, mapper(predictor, method) as hm:
            probs = predictor.predict_arrays(pre)[0]
            heat = to_original(hm(pre)[0], rgb.shape[:2], predictor.preprocessor)
        item = {"sample": Sample(path=Path(name), label="", key=name, source="upload"), "mask": None,
                "p_malignant": float(probs[predictor.malignant_index]),
                "predicted": predictor.classes[int(np.argmax(probs))]}
        png = panel(rgb, heat, None, caption(item, method, hm.layer))
        _, buf = cv2.imencode(".png", cv2.cvtColor(png, cv2.COLOR_RGB2BGR))
        return Response(buf.tobytes(), media_type="image/png", headers={"Cache-Control": "no-store"})

    return app


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 50.0) -> None:
    import uvicorn

    app = create_app(model, max_upload_mb)
    print(f"rcdnet serve: http://{host}:{port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
