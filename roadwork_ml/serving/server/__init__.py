"""``roadwork serve``: an HTTP model server for bundles.

Modules, one job each: :mod:`.protocol` (KServe v2 / Triton binary tensors), :mod:`.batching`
(dynamic batching with Triton's semantics), :mod:`.model` (a loaded champion),
:mod:`.swap` (champion sources and hot swaps), :mod:`.logwriter` (the monitoring inference
log), :mod:`.metrics` (Prometheus), :mod:`.auth` (bearer token, body limit), :mod:`.schema`
(request metadata, model metadata, client errors), :mod:`.app` (the endpoints), :mod:`.command`
(the CLI).
"""

from roadwork_ml.serving.server.command import add_serve_parser

__all__ = ["add_serve_parser"]
