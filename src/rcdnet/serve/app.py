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
from rcdnet.explain.cam import METHODS, REFERENCE, to_original
from rcdnet.explain.images import caption, mapper
from rcdnet.explain.render import panel
from rcdnet.files import file_sha256
from rcdnet.predict import (
    Predictor,
    TorchPredictor,
    load_predictor,
    model_file,
    prediction_row,
)

log = logging.getLogger("rcdnet.serve")
STATIC = Path(__file__).parent / "static"
MAX_FRAMES = 600  # frames read from one uploaded video or multi-frame DICOM
SERVED_METHODS = [m for m in METHODS if m not in ("scorecam", REFERENCE)]  # fast, and about the image


def read_upload(file: UploadFile, limit: int, max_frames: int = MAX_FRAMES
                ) -> tuple[str, list[np.ndarray], str | None]:
    """(file name, RGB frames, a warning when a clip ended early and only its decoded frames are used); any
    problem is an HTTP 4xx naming the file."""
    data = file.file.read(limit + 1)
    name = Path(file.filename or "upload").name
    if len(data) > limit:
        raise HTTPException(413, f"upload too large: the limit is {limit / 2**20:g} MB")
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


def prediction_json(predictor: Predictor, name: str, probs: np.ndarray) -> dict:
    """The /predict answer for (F, C) per-frame probabilities (one frame for an image)."""
    row = prediction_row(predictor, name, probs.mean(axis=0), frames=len(probs))
    return {"file": name, "label": row["label"], "p_malignant": row["p_malignant"],
            "operating_points": {op: {"threshold": t, "malignant": bool(row[f"malignant@{op}"])}
                                 for op, t in predictor.thresholds.items()},
            "frames": len(probs),
            "p_malignant_per_frame": [round(float(p), 4) for p in probs[:, predictor.malignant_index]]}


def explain_png(predictor: TorchPredictor, name: str, rgb: np.ndarray, method: str) -> bytes:
    """Original | heat-map overlay with a caption, as PNG bytes (the caller holds the model's lock)."""
    pre = predictor.preprocessor(rgb)[None]
    with mapper(predictor, method) as hm:
        probs = predictor.predict_arrays(pre)[0]
        heat = to_original(hm(pre)[0], rgb.shape[:2], predictor.preprocessor)
    item = {"sample": Sample(path=Path(name), label="", key=name, source="upload"), "mask": None,
            "p_malignant": float(probs[predictor.malignant_index]), "predicted": predictor.classes[int(np.argmax(probs))]}
    png = panel(rgb, heat, None, caption(item, method, hm.layer))
    return cv2.imencode(".png", cv2.cvtColor(png, cv2.COLOR_RGB2BGR))[1].tobytes()


def _guard(app: FastAPI, limit: int, max_upload_mb: float) -> None:
    """Refuse oversized bodies before they are read; answer any unexpected error with a plain 500 (logged)."""

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


def create_app(model: str | Path, max_upload_mb: float = 50.0) -> FastAPI:
    """The service for one model (run directory, checkpoint, cross-validation directory or ``.onnx``)."""
    path = model_file(model)
    predictor = load_predictor(path)
    lock = threading.Lock()  # one model, shared: heat-map hooks must not see another request's forward pass
    limit = int(max_upload_mb * 2**20)
    version = {"rcdnet": __version__, "model_file": path.name, "model_sha256": file_sha256(path)[:16],
               "model": predictor.model_name, "runtime": predictor.runtime, "classes": predictor.classes,
               "operating_points": predictor.thresholds, "explain": isinstance(predictor, TorchPredictor),
               "max_upload_mb": max_upload_mb}
    model_version = f"{version['model']} {version['model_sha256']}"
    app = FastAPI(title="rcdnet", version=__version__,
                  description="Benign vs malignant breast ultrasound. Research software, not a medical device.")
    _guard(app, limit, max_upload_mb)

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
        name, frames, warning = read_upload(file, limit)
        try:
            arrays = np.stack([predictor.preprocessor(f) for f in frames])
        except ValueError as exc:
            raise HTTPException(415, f"{name}: image could not be preprocessed ({exc})") from None
        with lock:
            probs = predictor.predict_arrays(arrays)
        return {**prediction_json(predictor, name, probs), "warning": warning, "model_version": model_version}

    @app.post("/explain", responses={200: {"content": {"image/png": {}}}})
    def explain(file: UploadFile = File(...), method: str = Form("gradcam")):
        if not isinstance(predictor, TorchPredictor):
            raise HTTPException(501, f"heat maps need a single PyTorch checkpoint; this service runs "
                                     f"{version['runtime']}")
        if method not in SERVED_METHODS:
            raise HTTPException(422, f"method must be one of {', '.join(SERVED_METHODS)}")
        name, frames, _ = read_upload(file, limit, max_frames=1)
        with lock:
            png = explain_png(predictor, name, frames[0], method)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return app


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 50.0) -> None:
    import uvicorn

    app = create_app(model, max_upload_mb)
    print(f"rcdnet serve: http://{host}:{port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
