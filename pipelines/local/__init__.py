"""Local mode: run the pipeline definition on this machine with local S3, registry and executions.

``run_local(definition, workspace, parameters) -> Execution`` is the Python API (``make demo`` uses it);
``LocalPipelineClient`` speaks boto3's SageMaker method names for ``robocar pipeline``/``registry``.
Nothing here imports the sagemaker SDK (but ``environments.py`` asks it for a built-in algorithm's
registry account, when a definition names such an image).
"""

from pipelines.local.executor import DefinitionError, run_local
from pipelines.local.store import Execution, StepRecord
from pipelines.parameters import ParameterError

__all__ = ["DefinitionError", "Execution", "ParameterError", "StepRecord", "run_local"]
