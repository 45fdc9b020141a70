"""The control plane: pipeline definitions, the CLI, local mode, events and infrastructure helpers."""

import os as _os

# The control plane's local clients (pipeline executions, requests checked as AWS checks them) for every
# edge.aws.clients() of this process and of the local steps it starts; edge/ names nothing above it.
_os.environ.setdefault("ROBOCAR_LOCAL_CLIENTS", "pipelines.local.client:validated_local_clients")
