"""A small pipeline of trivial scripts shaped like the robocar pipeline, for the tests and the benchmark.

Preprocess (Processing, a dataset manifest) -> Train (Training, script mode) -> Evaluate (Processing,
uncached, property file) -> CheckQuality (Condition: else QualityTooLow, Fail) and ShouldRegister
(Condition: quality and a model the group does not hold yet -> CompileForEdge (Processing) -> Register
(RegisterModel)). The definition is written in the published format exactly as sagemaker v3 emits it,
so the executor's tests and its overhead benchmark need neither the SDK nor TensorFlow, and each script
takes milliseconds. ``upload_sample`` puts a few records under ``sample/raw/`` and a manifest listing
them at the ``InputDataUrl`` default; ``pipelines.datasets.snapshot`` names later datasets by content.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

BUCKET = "sample-bucket"
CODE_PREFIX = "sample/code"
GROUP = "sample-pilots"
RAW_URI = f"s3://{BUCKET}/sample/raw/"
MANIFEST_URI = f"s3://{BUCKET}/sample/datasets/sample.manifest"  # what upload_sample writes
ECR = "763104351884.dkr.ecr.us-east-1.amazonaws.com"  # AWS's deep learning containers (never pulled locally)
PROCESSING_IMAGE = f"{ECR}/tensorflow-training:2.19-cpu-py312"
TRAINING_IMAGE = f"{ECR}/tensorflow-training:2.19-cpu-py312"
INFERENCE_IMAGE = f"{ECR}/tensorflow-inference:2.19-cpu"

PROCESSING_SCRIPT = r"""
import argparse, json, os, pathlib, signal, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("task", choices=["preprocess", "evaluate", "compile"])
parser.add_argument("--input", required=True)
parser.add_argument("--output", required=True)
parser.add_argument("--mae", type=float, default=0.1)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--fail", default="")
parser.add_argument("--model-s3-uri", default="")
parser.add_argument("--group", default="")
args = parser.parse_args()
print(f"{args.task}: input {args.input}", flush=True)
if args.fail == "exit":
    print("simulated failure: bad input data", file=sys.stderr)
    sys.exit(3)
marker = pathlib.Path(os.environ.get("SAMPLE_KILL_ONCE_MARKER", "/nonexistent/x"))
if args.fail == "kill-once" and not marker.exists():
    marker.write_text("killed")
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(args.sleep)
out = pathlib.Path(args.output)
if args.task == "preprocess":
    files = [p for p in pathlib.Path(args.input).rglob("*") if p.is_file()]
    names = sorted(p.relative_to(args.input).as_posix() for p in files)
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / split / "frames.json").write_text(json.dumps({"split": split, "records": names}))
elif args.task == "compile":
    import hashlib
    artifact = out / "rasp4b" / "model.tar.gz"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(pathlib.Path(args.input, "model.tar.gz").read_bytes())
    sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
    compiled = {"targets": {"rasp4b": {"sha256": sha256, "runtime": "litert"}}}
    (out / "compiled.json").write_text(json.dumps(compiled))
else:
    model = sorted(os.listdir(args.input))
    registered = False
    if args.group and args.model_s3_uri:  # the registry lookup of processing/evaluate.py, locally
        from edge.aws import clients
        from processing.evaluate import is_registered
        registered = is_registered(clients().sagemaker, args.group, args.model_s3_uri)
    (out / "evaluation.json").write_text(json.dumps({
        "regression_metrics": {"angle_mae": {"value": args.mae, "standard_deviation": 0.01}},
        "baseline": {"regression_metrics": {"angle_mae": {"value": 0.4}}}, "champion": None,
        "already_registered": registered, "test_frames": 2, "model_files": model,
    }))
print(f"{args.task}: done", flush=True)
"""

TRAINING_SCRIPT = r"""
import argparse, json, os, pathlib

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--model-type", required=True)
args = parser.parse_args()
model_dir = pathlib.Path(os.environ["SM_MODEL_DIR"])
train = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
(model_dir / "model.json").write_text(json.dumps({
    "epochs": args.epochs, "model_type": args.model_type, "hps": json.loads(os.environ["SM_HPS"]),
    "channels": json.loads(os.environ["SM_CHANNELS"]), "train_files": sorted(os.listdir(train)),
    "num_cpus": int(os.environ["SM_NUM_CPUS"]), "cwd": os.getcwd(),
}))
for epoch in range(args.epochs):
    print(f"epoch {epoch} val_loss={0.5 / (epoch + 1):.4f}", flush=True)
"""


def _targz(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload_sample(s3: Any, *, bucket: str = BUCKET, records: int = 3) -> None:
    """Put the sample's code, a few input records and the manifest listing them into (local or moto) S3."""
    from pipelines.datasets import manifest_document

    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:  # a missing bucket is a ClientError 404 on every client
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=f"{CODE_PREFIX}/sample_steps.py", Body=PROCESSING_SCRIPT.encode())
    s3.put_object(
        Bucket=bucket, Key=f"{CODE_PREFIX}/sourcedir.tar.gz", Body=_targz({"train.py": TRAINING_SCRIPT})
    )
    keys = [f"tub/record_{index}.json" for index in range(records)]
    for index, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=f"sample/raw/{key}", Body=json.dumps({"i": index}))
    manifest = manifest_document(RAW_URI.replace(BUCKET, bucket, 1), keys)
    s3.put_object(Bucket=bucket, Key=MANIFEST_URI.split("/", 3)[3], Body=manifest)


def _get(reference: str) -> dict[str, str]:
    return {"Get": reference}


def _scoped(*parts: str) -> dict[str, Any]:
    """``s3://BUCKET/sample/<parts[0]>/<execution id>/<rest>``: each execution writes under its own prefix."""
    head, *rest = parts
    values = [f"s3://{BUCKET}/sample/{head}", _get("Execution.PipelineExecutionId"), *rest]
    return {"Std:Join": {"On": "/", "Values": values}}


def _processing_input(name: str, uri: Any, path: str, data_type: str = "S3Prefix") -> dict[str, Any]:
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": path,
            "S3DataType": data_type,
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
            "S3CompressionType": "None",
        },
    }


def _processing_output(name: str, path: str, uri: Any) -> dict[str, Any]:
    return {"OutputName": name, "S3Output": {"S3Uri": uri, "LocalPath": path, "S3UploadMode": "EndOfJob"}}


def _processing(
    name: str, task: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], extra_args: list[Any]
) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
            },
            "AppSpecification": {
                "ImageUri": PROCESSING_IMAGE,
                "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/sample_steps.py"],
                "ContainerArguments": [task, *extra_args],
            },
            "RoleArn": "arn:aws:iam::123456789012:role/sample",
            "ProcessingInputs": [
                _processing_input("code", f"s3://{BUCKET}/{CODE_PREFIX}/", "/opt/ml/processing/input/code"),
                *inputs,
            ],
            "ProcessingOutputConfig": {"Outputs": outputs},
            "Environment": {"PYTHONUNBUFFERED": "1", "SAMPLE_WORKDIR": "/opt/ml/processing"},
        },
        "CacheConfig": {"Enabled": True, "ExpireAfter": "P30D"},
    }


def definition(*, preprocess_extra: list[Any] | None = None, retry: bool = False) -> dict[str, Any]:
    """The sample definition; ``preprocess_extra`` adds Preprocess arguments (e.g. ``--fail exit``)."""
    preprocess = _processing(
        "Preprocess",
        "preprocess",
        [
            _processing_input(
                "data", _get("Parameters.InputDataUrl"), "/opt/ml/processing/input/data", "ManifestFile"
            )
        ],
        [
            _processing_output("train", "/opt/ml/processing/output/train", _scoped("preprocess", "train")),
            _processing_output("test", "/opt/ml/processing/output/test", _scoped("preprocess", "test")),
        ],
        [
            "--input",
            "/opt/ml/processing/input/data",
            "--output",
            "/opt/ml/processing/output",
            "--sleep",  # a Float in a string list: Std:Join makes it the string the request needs
            {"Std:Join": {"On": "", "Values": [_get("Parameters.PreprocessSeconds")]}},
            *(preprocess_extra or []),
        ],
    )
    if retry:
        preprocess["RetryPolicies"] = [
            {
                "BackoffRate": 2.0,
                "IntervalSeconds": 0,
                "MaxAttempts": 3,
                "ExceptionType": ["SageMaker.CAPACITY_ERROR"],
            }
        ]
    train_uri = _get("Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri")
    train = {
        "Name": "Train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "TrainingImage": TRAINING_IMAGE,
                "MetricDefinitions": [{"Name": "validation:loss", "Regex": r"val_loss=([0-9\.]+)"}],
            },
            "HyperParameters": {
                "sagemaker_program": json.dumps("train.py"),
                "sagemaker_submit_directory": json.dumps(f"s3://{BUCKET}/{CODE_PREFIX}/sourcedir.tar.gz"),
                "epochs": _get("Parameters.Epochs"),
                "model-type": _get("Parameters.ModelType"),
            },
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": train_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            ],
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "RoleArn": "arn:aws:iam::123456789012:role/sample",
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            "OutputDataConfig": {"S3OutputPath": _scoped("models")},
            "Environment": {"PYTHONPATH": "/opt/ml/code"},
        },
        "CacheConfig": {"Enabled": True, "ExpireAfter": "P30D"},
    }
    evaluate = _processing(
        "Evaluate",
        "evaluate",
        [
            _processing_input(
                "model", _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"), "/opt/ml/processing/model"
            )
        ],
        [_processing_output("evaluation", "/opt/ml/processing/evaluation", _scoped("evaluation"))],
        [
            "--input",
            "/opt/ml/processing/model",
            "--output",
            "/opt/ml/processing/evaluation",
            "--mae",
            {"Std:Join": {"On": "", "Values": [_get("Parameters.SimulatedMae")]}},
            "--model-s3-uri",
            _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"),
            "--group",
            GROUP,
        ],
    )
    del evaluate["CacheConfig"]  # it reads the registry, which changes between executions
    evaluate["PropertyFiles"] = [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]
    compile_ = _processing(
        "CompileForEdge",
        "compile",
        [
            _processing_input(
                "model", _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"), "/opt/ml/processing/model"
            )
        ],
        [_processing_output("compiled", "/opt/ml/processing/compiled", _scoped("edge", "compiled"))],
        ["--input", "/opt/ml/processing/model", "--output", "/opt/ml/processing/compiled"],
    )
    compile_["PropertyFiles"] = [
        {"PropertyFileName": "CompiledArtifacts", "OutputName": "compiled", "FilePath": "compiled.json"}
    ]

    def compiled(path: str) -> dict[str, Any]:
        return {
            "Std:JsonGet": {
                "PropertyFile": _get("Steps.CompileForEdge.PropertyFiles.CompiledArtifacts"),
                "Path": path,
            }
        }

    compiled_uri = _get("Steps.CompileForEdge.ProcessingOutputConfig.Outputs['compiled'].S3Output.S3Uri")
    evaluation_uri = _get("Steps.Evaluate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri")
    mae = {
        "Std:JsonGet": {
            "PropertyFile": _get("Steps.Evaluate.PropertyFiles.EvaluationReport"),
            "Path": "regression_metrics.angle_mae.value",
        }
    }
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": GROUP,
            "CustomerMetadataProperties": {
                "angle_mae": mae,
                "source": "sample",
                "edge:rasp4b:uri": {
                    "Std:Join": {"On": "/", "Values": [compiled_uri, "rasp4b", "model.tar.gz"]}
                },
                "edge:rasp4b:sha256": compiled("targets.rasp4b.sha256"),
                "edge:rasp4b:runtime": compiled("targets.rasp4b.runtime"),
            },
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": INFERENCE_IMAGE,
                        "ModelDataUrl": _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"),
                    }
                ],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": {"Std:Join": {"On": "/", "Values": [evaluation_uri, "evaluation.json"]}},
                    }
                }
            },
            "ModelApprovalStatus": _get("Parameters.ModelApprovalStatus"),
            "SkipModelValidation": "None",
        },
        "DependsOn": ["CompileForEdge"],
    }
    fail = {
        "Name": "QualityTooLow",
        "Type": "Fail",
        "Arguments": {
            "ErrorMessage": {
                "Std:Join": {
                    "On": " ",
                    "Values": ["angle MAE", mae, "is above", _get("Parameters.MaeThreshold")],
                }
            }
        },
    }
    good_enough = {
        "Type": "LessThanOrEqualTo",
        "LeftValue": mae,
        "RightValue": _get("Parameters.MaeThreshold"),
    }
    already_registered = {
        "Std:JsonGet": {
            "PropertyFile": _get("Steps.Evaluate.PropertyFiles.EvaluationReport"),
            "Path": "already_registered",
        }
    }
    check_quality = {
        "Name": "CheckQuality",
        "Type": "Condition",
        "Arguments": {"Conditions": [good_enough], "IfSteps": [], "ElseSteps": [fail]},
    }
    should_register = {
        "Name": "ShouldRegister",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                good_enough,
                {"Type": "Equals", "LeftValue": already_registered, "RightValue": False},
            ],
            "IfSteps": [compile_, register],
            "ElseSteps": [],
        },
    }
    return {
        "Version": "2020-12-01",
        "Metadata": {},
        "Parameters": [
            {"Name": "InputDataUrl", "Type": "String", "DefaultValue": MANIFEST_URI},
            {"Name": "Epochs", "Type": "String", "DefaultValue": "2"},
            {
                "Name": "ModelType",
                "Type": "String",
                "DefaultValue": "linear",
                "EnumValues": ["linear", "categorical"],
            },
            {"Name": "PreprocessSeconds", "Type": "Float", "DefaultValue": 0.0},
            {"Name": "SimulatedMae", "Type": "Float", "DefaultValue": 0.1},
            {"Name": "MaeThreshold", "Type": "Float", "DefaultValue": 0.2},
            {
                "Name": "ModelApprovalStatus",
                "Type": "String",
                "DefaultValue": "PendingManualApproval",
                "EnumValues": ["PendingManualApproval", "Approved", "Rejected"],
            },
        ],
        "PipelineExperimentConfig": {
            "ExperimentName": _get("Execution.PipelineName"),
            "TrialName": _get("Execution.PipelineExecutionId"),
        },
        "MlflowConfig": None,
        "Steps": [preprocess, train, evaluate, check_quality, should_register],
    }
