"""``camscope serve``: an interactive explorer of class activation maps in the browser.

The package sits at the level of the command line (only :mod:`camscope.cli.serve` imports
it) and uses camscope's public API:

* :mod:`camscope.app.jobs`: one worker thread that owns the models and runs jobs from a queue,
  with progress (every :class:`camscope.progress.ProgressBar` reports to the running job) and
  cancellation;
* :mod:`camscope.app.images`: the bundled photos, an allowed data folder (no path outside it is
  read) and uploads (size limit, decoded safely by Pillow);
* :mod:`camscope.app.schema`: the page's explanation requests and their results (one panel per map);
* :mod:`camscope.app.workbench`: layers, top-5 predictions and the maps of a request
  (Grad-CAM family, Finer-CAM, DiffCAM against a reference group, S-CAMs of an analysis);
* :mod:`camscope.app.downloads`: overlays as PNG, maps as ``.npy`` and safetensors, settings as JSON;
* :mod:`camscope.app.server`: the FastAPI application and the page (``static/``: plain HTML,
  JavaScript and CSS shipped with the package; nothing is loaded from the network).

The web framework is the optional extra ``pip install "camscope[app]"`` (FastAPI, uvicorn,
python-multipart); :mod:`camscope.app.server` imports it, the other modules do not.
"""

__all__: list[str] = []
