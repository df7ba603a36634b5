"""``rcdnet serve``: a FastAPI service around a trained model, and the web page a clinician uses.

    GET  /            the page: drop an image, see the label, the probability and the heat map
    GET  /health      {"status": "ok"}
    GET  /version     rcdnet and model versions, classes, operating points, whether /explain is available
    POST /predict     multipart field ``file`` (image, DICOM or video) -> JSON prediction
    POST /explain     multipart field ``file`` (+ ``method``) -> PNG: image | heat-map overlay, with caption
    GET  /docs        OpenAPI documentation

Uploads are held in memory (the multipart parser may spool large ones to the system's temporary directory);
nothing else is written. Bad input gets a 4xx with a plain message, never a stack trace: an upload over the size
limit or a picture over the pixel limit 413, a file that is not a readable image, DICOM or video 415. At most
``--workers`` requests decode and classify at a time; the next gets 503 with ``Retry-After`` (bounded memory).
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
from rcdnet.data.boxes import BoxError
from rcdnet.data.decode import MAX_PIXELS
from rcdnet.explain.cam import METHODS, REFERENCE
from rcdnet.explain.images import mapper
from rcdnet.explain.render import panel
from rcdnet.files import file_sha256
from rcdnet.predict import Predictor, load_predictor, model_file
from rcdnet.predict.regions import Region, RegionResolver
from rcdnet.segment.finder import finder_for
from rcdnet.serve.answers import decoded, predict_answer, read_upload, request_box
from rcdnet.serve.limits import BodyLimit

log = logging.getLogger("rcdnet.serve")
STATIC = Path(__file__).parent / "static"
WORKERS = 2  # requests decoded and classified at once; the next one gets 503 + Retry-After
RETRY_AFTER_S = 2


class Slots:
    """``with slot:`` takes one of ``n`` places or answers 503 with ``Retry-After`` at once (no queue to grow)."""

    def __init__(self, n: int):
        self._free = threading.BoundedSemaphore(max(1, n))

    def __enter__(self):
        if not self._free.acquire(blocking=False):
            raise HTTPException(503, "busy: every worker is classifying; try again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return self

    def __exit__(self, *exc) -> None:
        self._free.release()
SERVED_METHODS = [m for m in METHODS if m not in ("scorecam", REFERENCE)]  # fast, and about the image
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "eigencam": "Eigen-CAM", "layercam": "LayerCAM"}


def explain_png(predictor: Predictor, name: str, rgb: np.ndarray, method: str, region: Region) -> bytes:
    """Original | heat-map overlay with a caption, as PNG bytes (the caller holds the model's lock). The heat map
    is the PyTorch model's; the probability is the predictor's (with a site's calibration, if it has one). The
    outline is the lesion the finder found (or the one the model's localisation head marks)."""
    box = region.box
    pre = predictor.preprocessor(rgb, box)[None]
    model = predictor.torch_predictor
    with mapper(model, method) as hm:
        probs = predictor.predict_arrays(pre)[0]
        heat = predictor.preprocessor.to_original(hm(pre)[0], rgb.shape[:2], box)
    found = (region.lesion.mask(rgb.shape[:2]) if region.lesion is not None else
             predictor.preprocessor.to_original(model.localise(pre)[0], rgb.shape[:2], box) >= 0.5
             if getattr(model.model, "localiser", None) is not None else None)
    p_mal = float(probs[predictor.malignant_index])
    outline = ", white outline = the lesion the model found" if found is not None else ""
    png = panel(rgb, heat, None, [f"Heat map ({METHOD_NAMES.get(method, method)}): red = regions that raised the "
                                  f"malignancy score most{outline}", f"p(malignant) = {p_mal:.3f}"], found)
    return cv2.imencode(".png", cv2.cvtColor(png, cv2.COLOR_RGB2BGR))[1].tobytes()


def _guard(app: FastAPI, limit: int) -> None:
    """Count every body as it arrives and cut it at the limit (:class:`~rcdnet.serve.limits.BodyLimit`: a chunked
    upload too); answer any unexpected error with a plain 500 (logged)."""
    app.add_middleware(BodyLimit, limit=limit)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def version_info(path: Path, predictor: Predictor, operating_point: str | None, finder=None, **limits) -> dict:
    """``GET /version``: the model, its operating points, the one the page states first, and the service limits."""
    operating_point = operating_point or ("high_sensitivity" if "high_sensitivity" in predictor.thresholds
                                          else "default")
    if operating_point not in predictor.thresholds:
        raise ValueError(f"{path}: no operating point {operating_point!r}; it has {', '.join(predictor.thresholds)}")
    config = getattr(predictor, "config", None)
    site = getattr(predictor, "site", None)
    target = (site.provenance.get("target_sensitivity") if site is not None
              else config.eval.target_sensitivity if config is not None else None)
    return {"rcdnet": __version__, "model_file": path.name, "model_sha256": file_sha256(path)[:16],
            "model": predictor.model_name, "runtime": predictor.runtime, "classes": predictor.classes,
            "operating_points": predictor.thresholds, "explain": predictor.torch_predictor is not None,
            "operating_point": operating_point,
            "input": "lesion box" if predictor.preprocessor.roi else "whole image",
            "finder": finder is not None,
            "calibration": getattr(predictor, "calibration", "as trained: the development hospital's validation images"),
            "site_cases": site.provenance.get("n_cases") if site is not None else None,
            "target_sensitivity": target, **limits}


def create_app(model: str | Path, max_upload_mb: float = 50.0, workers: int = WORKERS,
               max_megapixels: float | None = None, operating_point: str | None = None) -> FastAPI:
    """The service for one model (run directory, checkpoint, cross-validation directory or ``.onnx``).

    At most ``workers`` requests decode and classify at a time; one more is answered 503 with ``Retry-After`` at
    once rather than queued, so memory stays bounded by ``workers`` x (upload + one decoded picture of at most
    ``max_megapixels``) whatever the traffic. The page answers first at ``operating_point`` (default: the
    model's rule-out point ``high_sensitivity`` where it has one, else ``default``)."""
    path = model_file(model)
    predictor = load_predictor(path)
    roi, finder = predictor.preprocessor.roi, finder_for(predictor, path)
    s = predictor.preprocessor.size  # one pass before serving: the engine is ready (a checkpoint's ONNX graph
    predictor.predict_arrays(np.zeros((1, s, s), np.uint8))  # exported) and /version names the one in use
    lock = threading.Lock()  # one model, shared: heat-map hooks must not see another request's forward pass
    slot = Slots(workers)
    limit = int(max_upload_mb * 2**20)
    max_pixels = int(max_megapixels * 1e6) if max_megapixels else MAX_PIXELS
    version = version_info(path, predictor, operating_point, finder, max_upload_mb=max_upload_mb,
                           max_megapixels=max_pixels / 1e6, workers=workers)
    model_version = f"{version['model']} {version['model_sha256']}"
    app = FastAPI(title="rcdnet", version=__version__,
                  description="Benign vs malignant breast ultrasound. Research software, not a medical device.")
    app.state.slots = slot  # (the tests hold it to see the 503 path)
    _guard(app, limit)

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
    def predict(file: UploadFile = File(...), box: str | None = Form(None)):
        resolver = RegionResolver(roi, request_box(predictor, box), finder, masks=False)
        with slot:
            name, frames = read_upload(file, limit, max_pixels=max_pixels)
            answer = predict_answer(predictor, resolver, name, frames, lock)
        return {**answer, "model_version": model_version}

    @app.post("/explain", responses={200: {"content": {"image/png": {}}}})
    def explain(file: UploadFile = File(...), method: str = Form("gradcam"), box: str | None = Form(None)):
        if predictor.torch_predictor is None:
            raise HTTPException(501, f"heat maps need a single PyTorch checkpoint; this service runs "
                                     f"{version['runtime']}")
        if method not in SERVED_METHODS:
            raise HTTPException(422, f"method must be one of {', '.join(SERVED_METHODS)}")
        resolver = RegionResolver(roi, request_box(predictor, box), finder, masks=False)
        with slot:
            name, frames = read_upload(file, limit, max_frames=1, max_pixels=max_pixels)
            fr = decoded(name, frames, lambda x: x)[0][0]
            with lock:
                try:
                    region = resolver.regions(Path(name), fr.rgb, fr.pixel_mm, several=False)[0]
                    png = explain_png(predictor, name, fr.rgb, method, region)
                except BoxError as exc:
                    raise HTTPException(422, f"{name}: {exc}") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return app


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 50.0,
          workers: int = WORKERS, max_megapixels: float | None = None, operating_point: str | None = None) -> None:
    import uvicorn

    app = create_app(model, max_upload_mb, workers, max_megapixels, operating_point)
    print(f"rcdnet serve: http://{host}:{port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
