"""The model server: `tunegate serve-model` serves `models:/<mlflow.registered_model>@<alias>`.

    tunegate serve-model [--config FILE] [--set k=v ...] [--host H] [--port P]

`config` (the sections it reads), `source` (alias -> version -> loaded model; the swap),
`protocol` (request models, the scoring protocol, scrubbing), `batching` (the queue and the
model thread), `predlog` (the prediction log and feedback lookup), `metrics` (Prometheus),
`app` (the routes, the reloader, feedback). README "Serving and monitoring" has the endpoints
with curl examples.
"""

from deployments.model_server.app import CHAMPION_EVENT, create_app, serve_model
from deployments.model_server.config import ServeConfig, load_serve_config

__all__ = ["CHAMPION_EVENT", "ServeConfig", "create_app", "load_serve_config", "serve_model"]
