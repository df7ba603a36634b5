"""The HTTP service (FastAPI) and the clinician's web page it serves."""
