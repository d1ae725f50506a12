"""The explorer's web server: one HTML page and a JSON API over a :class:`~camscope.app.workbench.Workbench`.

FastAPI serves the page and its script and style sheet from the package (no CDN: the page
works offline). Everything that runs a model goes through the one worker of a
:class:`~camscope.app.jobs.JobQueue`; explanations are jobs the page polls, so a slow
method never blocks the page, and a job can be cancelled.

Endpoints:

========================================  =================================================
``GET /``                                  the page
``GET /api/photos``                        bundled photos and the data folder's images
``GET /api/image?ref=REF&max_side=N``      an image as PNG (thumbnails)
``GET /api/models``                        models, methods, the loaded bank and analysis
``GET /api/layers?model=NAME``             candidate layers and the default
``POST /api/upload``                       an image file (multipart ``file``): its reference
``POST /api/predict``                      ``{image, model}``: the top-5 classes
``POST /api/explain``                      an explanation request: ``{job}``
``GET /api/jobs/ID``                       status, progress, and the result when done
``DELETE /api/jobs/ID``                    cancel
``GET /api/download/ID/KEY/FILE``          ``overlay.png``, ``map.npy``, ``raw.npy``, ``maps.safetensors``
``GET /api/download/ID/settings.json``     the settings of a result
========================================  =================================================

A user mistake (a bad upload, an unknown layer, a refused path) is answered with status 400
and ``{"error": "one line"}``, which the page shows.
"""

import socket
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from camscope.errors import needs_extra

with needs_extra("app", "the explorer (camscope serve)"):
    from fastapi import Body, FastAPI, File, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

from camscope.app.downloads import npy_bytes, overlay_png, png_bytes, safetensors_bytes, settings_json
from camscope.app.jobs import JobQueue
from camscope.app.schema import ExplainRequest, ExplainResult
from camscope.app.workbench import Workbench
from camscope.errors import CamscopeError

__all__ = ["bind_socket", "create_app", "run_server"]

_DOWNLOADS = {
    "overlay.png": "image/png",
    "map.npy": "application/octet-stream",
    "raw.npy": "application/octet-stream",
    "maps.safetensors": "application/octet-stream",
}


def create_app(workbench: Workbench, queue: JobQueue | None = None) -> FastAPI:
    """The FastAPI application of the explorer (``app.state.queue`` is its job queue)."""
    queue = queue or JobQueue()
    app = FastAPI(title="camscope explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    app.state.workbench = workbench
    static = resources.files("camscope.app") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    _add_guards(app, workbench)
    _add_browsing(app, workbench, queue, static)
    _add_jobs(app, workbench, queue)
    _add_downloads(app, queue)
    return app


def _add_guards(app: FastAPI, workbench: Workbench) -> None:
    """The upload size limit and the answer to a user mistake (status 400, ``{"error": ...}``)."""

    @app.middleware("http")
    async def upload_limit(request: Request, call_next: Any) -> Any:
        """Refuse an upload whose declared size is over the limit before its body is read."""
        if request.url.path == "/api/upload":
            declared = request.headers.get("content-length", "")
            limit = workbench.images.max_upload_bytes
            if declared.isdigit() and int(declared) > limit + 65536:
                message = f"the upload is {int(declared) / 1e6:.1f} MB, more than the limit of {limit / 1e6:.1f} MB: choose a smaller image"
                return JSONResponse({"error": message}, status_code=413)
        return await call_next(request)

    @app.exception_handler(CamscopeError)
    def user_mistake(request: Request, error: CamscopeError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)


def _add_browsing(app: FastAPI, workbench: Workbench, queue: JobQueue, static: Traversable) -> None:
    """The page and what it lists: photos, images, models, methods and layers."""

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/api/photos")
    def photos() -> dict[str, Any]:
        return workbench.images.listing()

    @app.get("/api/image")
    def image(ref: str, max_side: int = 160) -> Response:
        rgb = workbench.images.rgb(ref)
        return Response(png_bytes(rgb, max_side=max(16, min(max_side, 2048))), media_type="image/png")

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        from camscope.engine.method import available_methods

        return {
            "models": workbench.describe_models(),
            "methods": sorted(available_methods()),
            "bank": _bank_info(workbench.bank),
            "analysis": _analysis_info(workbench.analysis),
            "data": workbench.images.data is not None,
        }

    @app.get("/api/layers")
    def layers(model: str) -> dict[str, Any]:
        result: dict[str, Any] = queue.run("layers", lambda job: workbench.layers(model))
        return result


def _add_jobs(app: FastAPI, workbench: Workbench, queue: JobQueue) -> None:
    """Uploads, predictions and explanation jobs: submit, poll, cancel."""

    @app.post("/api/upload")
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI's idiom)
        data = await file.read(workbench.images.max_upload_bytes + 1)
        return workbench.images.upload(file.filename or "upload", data)

    @app.post("/api/predict")
    def predict(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        image, model = str(payload.get("image", "")), str(payload.get("model", ""))
        workbench.images.rgb(image)  # a bad reference fails here, without a job
        result: dict[str, Any] = queue.run("predict", lambda job: workbench.predict(image, model))
        return result

    @app.post("/api/explain")
    def explain(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        request = ExplainRequest.from_json(payload)
        workbench.images.rgb(request.image)
        job = queue.submit("explain", lambda job: workbench.explain(request, job))
        return {"job": job.id}

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        job = queue.get(job_id)
        state = job.describe()
        if job.status == "done" and isinstance(job.result, ExplainResult):
            state["result"] = job.result.describe()
        return state

    @app.delete("/api/jobs/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        return queue.cancel(job_id).describe()


def _add_downloads(app: FastAPI, queue: JobQueue) -> None:
    """A finished explanation's files and settings as attachments."""

    @app.get("/api/download/{job_id}/settings.json")
    def download_settings(job_id: str) -> Response:
        result = _result(queue, job_id)
        name = f"{_stem(result)}__settings.json"
        return Response(settings_json(result), media_type="application/json", headers=_attachment(name))

    @app.get("/api/download/{job_id}/{key}/{file}")
    def download(job_id: str, key: str, file: str) -> Response:
        if file not in _DOWNLOADS:
            raise CamscopeError(f"unknown download {file!r}: use {', '.join(_DOWNLOADS)}")
        result = _result(queue, job_id)
        panel = result.panel(key)
        if file == "overlay.png":
            data = overlay_png(result, panel)
        elif file == "map.npy":
            data = npy_bytes(panel.maps)
        elif file == "raw.npy":
            data = npy_bytes(panel.raw)
        else:
            data = safetensors_bytes(result, panel)
        name = f"{_stem(result)}__{key}__{file}"
        return Response(data, media_type=_DOWNLOADS[file], headers=_attachment(name))


def _result(queue: JobQueue, job_id: str) -> ExplainResult:
    job = queue.get(job_id)
    if job.status != "done" or not isinstance(job.result, ExplainResult):
        raise CamscopeError(f"job {job_id} has no maps ({job.status}{': ' + job.error if job.error else ''})")
    return job.result


def _stem(result: ExplainResult) -> str:
    label = str(result.settings.get("image_label", "image"))
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in label)[:60] or "image"


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _bank_info(bank: Any) -> dict[str, Any] | None:
    if bank is None:
        return None
    return {
        "model": (bank.model or {}).get("name"),
        "layer": bank.layer,
        "samples": bank.count,
        "classes": list(bank.class_names),
    }


def _analysis_info(analysis: Any) -> dict[str, Any] | None:
    if analysis is None:
        return None
    return {"method": analysis.method, "layer": analysis.layer, "samples": analysis.n_samples}


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free port chosen by the system)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CamscopeError(f"cannot listen on {host}:{port} ({error.strerror}): choose another --port") from None
    sock.listen(128)
    return sock


def run_server(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on a bound socket until interrupted (uvicorn, one process)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        app.state.queue.close(cancel=True)
