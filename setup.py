"""robocar-pipeline: a SageMaker Pipeline that turns DonkeyCar tubs into a model that drives the car.

Dependencies are split by deployment unit (docs/design.md "Layout") so that the car installs only
what it runs: ``pip install .[edge]`` brings no TensorFlow and no sagemaker SDK.
"""

from setuptools import find_packages, setup

PIPELINE = [  # control plane: build, upsert, start the pipeline; container scripts for processing
    "sagemaker==3.27.*",
    "boto3>=1.40",
    "pandas>=2.0",
    "jsonschema>=4.20",
    "zlib-ng>=0.5",  # CRC-32 of the preprocess shards at 30 GB/s (zlib: 4); optional, same bytes
    "PyYAML>=6",  # renders the Greengrass recipe (robocar edge component)
    "regex>=2024.4",  # AWS's model patterns use \p{L}-style classes (pipelines/aws_rules.py)
]
TRAIN = [  # training and evaluation containers (TensorFlow script mode) and local compilation
    "tensorflow==2.21.*",
    "matplotlib>=3.8",
    "onnx>=1.17",  # the Neo input (processing/onnx_export.py) and its int8 quantisation in local compile
]
EDGE = [  # the device: runtimes only
    "ai-edge-litert>=2.0",
    "onnxruntime>=1.20",
    "paho-mqtt>=2.0",
]
DEV = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.6",  # `make test` on 2 workers (Makefile: TEST_WORKERS; benchmarks/README.md)
    "hypothesis>=6.100",
    "moto[server]==5.2.5",
    "ruff>=0.6",
    "cfn-lint>=1.0",
    "nbclient>=0.10",
    "nbformat>=5.10",
    "jupytext>=1.19",  # notebooks/*.py are the sources of notebooks/*.ipynb (tests/code/test_notebooks.py)
    "ipykernel>=6.29",
    "opencv-python-headless>=4.8",  # tests of the drive loop's video source (optional on the car)
    "playwright==1.65.2",  # drives Debian's Chromium (system-packages.txt) in the review page's test
]

setup(
    name="robocar-pipeline",
    version="0.1.0",
    description="SageMaker Pipeline: DonkeyCar tubs -> trained, evaluated, Neo-compiled, registered pilot",
    python_requires=">=3.11",
    packages=find_packages(
        include=["pipelines*", "steps*", "processing*", "training*", "inference*", "edge*"]
    ),
    include_package_data=True,
    package_data={
        "": ["*.json", "*.yaml", "*.jpg", "*.html"],
        "pipelines.local": ["requirements/*.txt"],
        "pipelines.labelling": ["review_page/*", "templates/*.html"],
    },
    install_requires=["numpy>=1.26", "Pillow>=10"],
    extras_require={
        "pipeline": PIPELINE,
        "train": TRAIN,
        "edge": EDGE,
        "dev": PIPELINE + TRAIN + EDGE + DEV,
    },
    entry_points={"console_scripts": ["robocar=pipelines.cli:main", "robocar-edge=edge.cli:main"]},
)
