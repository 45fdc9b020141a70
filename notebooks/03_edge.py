# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3 · What the car does with the approved model
#
# The car runs the device agent (`robocar-edge`, `edge/`): it asks the registry for the newest Approved
# package that has an artifact for its target, downloads it, checks its SHA-256 against the registry,
# unpacks it safely, smoke-tests it and swaps it in atomically, keeping the previous model to roll back to.
# On AWS it arrives as a Greengrass component version, which the rollout function created on approval. This
# notebook plays the car.

# %%
# Settings as both CLIs resolve them (edge/settings.py): environment > robocar.toml > default; the local
# workspace unless ROBOCAR_BACKEND=aws or ROBOCAR_ENDPOINT_URL says otherwise (ROBOCAR_LOCAL_ROOT picks it).
from pipelines import notebook

settings, aws = notebook.connect()

# %% [markdown]
# ## What the registry offers this car

# %%
from edge import agent
from edge import settings as car_settings

# The car's own settings, as robocar-edge resolves them (ROBOCAR_EDGE_TARGET, ROBOCAR_EDGE_ROOT, ...).
car_config = car_settings.resolve({}, keys=("edge_target", "edge_root"))
TARGET = car_config["edge_target"]
candidate = agent.find_newest(aws.sagemaker, settings.model_package_group, TARGET)
if candidate is None:
    raise SystemExit(f"no Approved package has an artifact for {TARGET}: approve one first (notebook 2)")
print(f"v{candidate.version} {candidate.model_package_arn}")
print(f"  artifact {candidate.artifact_uri}")
print(f"  sha256   {candidate.sha256}")

# %% [markdown]
# ## The Greengrass component the rollout created
#
# The recipe pins the package and the artifact's URI; Greengrass computes the artifact's digest when the
# version is created and checks it on the car, and the agent checks the SHA-256 again against the registry.

# %%
import json

from edge.greengrass import component

description = aws.sagemaker.describe_model_package(ModelPackageName=candidate.model_package_arn)
recipe = component.render_recipe(component.load_template(), description, TARGET)
print(recipe["ComponentName"], recipe["ComponentVersion"])
print(json.dumps(recipe["ComponentConfiguration"]["DefaultConfiguration"], indent=2))
print(recipe["Manifests"][0]["Lifecycle"]["Run"]["Script"])

# %% [markdown]
# ## The car's check
#
# One pass of the agent into a scratch folder (`ROBOCAR_EDGE_ROOT` to choose it): find, download, verify,
# unpack, smoke-test, swap.

# %%
import tempfile
from pathlib import Path

# A scratch folder unless the car's folder is set: this notebook only plays the car.
given = car_config.given("edge_root")
car_root = Path(car_config["edge_root"]) if given else Path(tempfile.mkdtemp(prefix="robocar-car-"))
car = agent.Agent(
    car_root, group=settings.model_package_group, target=TARGET, sagemaker=aws.sagemaker, s3=aws.s3
)
result = car.check()
print(result.outcome, "-", result.detail)
print("current ->", car.current_name())
print(json.dumps(car.load_state()["last_check"], indent=2))

# %% [markdown]
# ## Driving
#
# The installed pilot on a camera frame: the same preprocessing as training (`edge/frames.py`), then angle
# and throttle for the actuators.

# %%
from edge import drive, frames

pilot = drive.open_pilot(car.current_dir())
image = frames.decode_image(agent.smoke_frame_bytes())  # the frame the smoke test uses
angle, throttle = pilot(image)
print(f"angle {angle:+.3f}  throttle {throttle:+.3f}")
print("a second check finds nothing newer:", car.check().outcome)
