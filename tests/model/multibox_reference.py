"""Run in the MXNet environment: MultiBoxDetection on each case of an .npz, the answers to another .npz.

``python multibox_reference.py CASES.npz ANSWERS.npz``: CASES holds ``<name>/cls_prob`` (C+1, A),
``<name>/loc_preds`` (A*4,), ``<name>/anchors`` (A, 4) and ``<name>/params`` (a JSON string of
MultiBoxDetection's keyword arguments); ANSWERS gets ``<name>`` = the operator's (A, 6) output.
"""

from __future__ import annotations

import json
import sys

import mxnet as mx
import numpy as np


def main(cases_path: str, answers_path: str) -> None:
    cases = np.load(cases_path)
    names = sorted({key.split("/")[0] for key in cases.files})
    answers = {}
    for name in names:
        params = json.loads(str(cases[f"{name}/params"]))
        out = mx.nd.contrib.MultiBoxDetection(
            mx.nd.array(cases[f"{name}/cls_prob"][None], dtype="float32"),
            mx.nd.array(cases[f"{name}/loc_preds"][None], dtype="float32"),
            mx.nd.array(cases[f"{name}/anchors"][None], dtype="float32"),
            **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()},
        )
        answers[name] = out.asnumpy()[0]
    np.savez(answers_path, **answers)
    print(f"{len(names)} cases answered")


if __name__ == "__main__":
    main(*sys.argv[1:3])
