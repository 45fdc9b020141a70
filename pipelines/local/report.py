"""An execution's HTML report: the step graph with status and timings, evaluation metrics, plots.

One self-contained file (plots embedded as data URIs) written next to the execution record as
``report.html``; the executor writes it when an execution ends, ``robocar run`` prints its path.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_bytes
from pipelines.definition_steps import walk_steps
from pipelines.local.expressions import referenced_steps
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import Execution, StepRecord

STATUS_COLOURS = {
    "Succeeded": "#2e7d32",
    "Failed": "#c62828",
    "Stopped": "#ef6c00",
    "Executing": "#1565c0",
    "Starting": "#1565c0",
    "NotRun": "#9e9e9e",
}
PLOT_SUFFIXES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}
MAX_PLOT_BYTES = 2 * 1024 * 1024
NODE_W, NODE_H, GAP_X, GAP_Y = 170, 54, 60, 22


def _esc(value: Any) -> str:
    return html.escape(str(value))


def graph_edges(definition: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """Step names (definition order, branches after their condition) and dependency edges."""
    names: list[str] = []
    edges: list[tuple[str, str]] = []
    for step, branch in walk_steps(definition.get("Steps", [])):
        names.append(step["Name"])
        if branch:
            edges.append((branch[0], step["Name"]))
        arguments = step.get("Arguments", {})
        expressions = arguments.get("Conditions", []) if step["Type"] == "Condition" else [arguments]
        for dependency in sorted(referenced_steps(expressions) | set(step.get("DependsOn", []))):
            edges.append((dependency, step["Name"]))
    return names, sorted(set(edges) - {(a, b) for a, b in edges if a == b})


def _levels(names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    level = dict.fromkeys(names, 0)
    for _ in names:  # longest-path layering; the graph is acyclic (the executor checked)
        for a, b in edges:
            if a in level and b in level:
                level[b] = max(level[b], level[a] + 1)
    return level


def graph_svg(definition: dict[str, Any], steps: dict[str, StepRecord]) -> str:
    names, edges = graph_edges(definition)
    level = _levels(names, edges)
    rows: dict[int, int] = {}
    position = {}
    for name in names:
        row = rows.get(level[name], 0)
        rows[level[name]] = row + 1
        position[name] = (20 + level[name] * (NODE_W + GAP_X), 20 + row * (NODE_H + GAP_Y))
    width = 40 + (max(level.values(), default=0) + 1) * (NODE_W + GAP_X)
    height = 40 + max(rows.values(), default=1) * (NODE_H + GAP_Y)
    parts = [
        # viewBox + max-width: the graph scales down to the page instead of running off its edge.
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        'style="max-width:100%;height:auto" font-family="sans-serif">',
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#777"/></marker></defs>',
    ]
    for a, b in edges:
        (x1, y1), (x2, y2) = position[a], position[b]
        parts.append(
            f'<line x1="{x1 + NODE_W}" y1="{y1 + NODE_H / 2}" x2="{x2}" y2="{y2 + NODE_H / 2}" '
            'stroke="#777" marker-end="url(#arrow)"/>'
        )
    for name in names:
        x, y = position[name]
        record = steps.get(name)
        status = record.status if record else "NotRun"
        timing = f"{record.seconds:.1f} s" if record and record.seconds is not None else ""
        cached = " (cached)" if record and record.cache_hit_from else ""
        parts.append(
            f'<g><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" '
            f'fill="{STATUS_COLOURS.get(status, "#9e9e9e")}"/>'
            f'<text x="{x + 10}" y="{y + 22}" fill="white" font-size="14" font-weight="bold">'
            f"{_esc(name)}</text>"
            f'<text x="{x + 10}" y="{y + 42}" fill="white" font-size="12">'
            f"{_esc(status)} {timing}{cached}</text>"
            f"<title>{_esc(name)}: {_esc(status)}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _steps_table(execution: Execution) -> str:
    rows = []
    for record in sorted(execution.steps.values(), key=lambda s: s.start_time or ""):
        seconds = f"{record.seconds:.2f}" if record.seconds is not None else ""
        log = f'<a href="file://{_esc(record.log_path)}">log</a>' if record.log_path else ""
        rows.append(
            f"<tr><td>{_esc(record.name)}</td><td>{_esc(record.type)}</td>"
            f'<td style="color:{STATUS_COLOURS.get(record.status, "#000")}">{_esc(record.status)}</td>'
            f"<td>{seconds}</td><td>{record.script_seconds:.2f}</td><td>{record.attempts}</td>"
            f"<td>{'yes' if record.cache_hit_from else ''}</td><td>{_esc(record.failure_reason or '')}</td>"
            f"<td>{log}</td></tr>"
        )
    return (
        "<table><tr><th>step</th><th>type</th><th>status</th><th>wall s</th><th>script s</th>"
        "<th>attempts</th><th>cached</th><th>failure</th><th></th></tr>" + "".join(rows) + "</table>"
    )


def _metric_rows(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.get("value") if isinstance(value, dict) else value
        for name, value in (metrics or {}).items()
    }


def metrics_table(evaluation: dict[str, Any]) -> str:
    """The evaluation metrics against the baseline and the champion (docs/contracts.md section 4)."""
    model = _metric_rows(evaluation.get("regression_metrics", {}))
    baseline = _metric_rows((evaluation.get("baseline") or {}).get("regression_metrics", {}))
    champion_block = evaluation.get("champion") or {}
    champion = _metric_rows(champion_block.get("regression_metrics", {}))
    rows = []
    for name in model:
        cells = [model.get(name), baseline.get(name), champion.get(name)]
        rows.append(
            f"<tr><td>{_esc(name)}</td>"
            + "".join(f"<td>{v:.4f}</td>" if isinstance(v, int | float) else "<td></td>" for v in cells)
            + "</tr>"
        )
    champion_arn = _esc(champion_block.get("model_package_arn", "none"))
    return (
        f"<p>test frames: {_esc(evaluation.get('test_frames', '?'))}; champion: {champion_arn}</p>"
        "<table><tr><th>metric</th><th>this model</th><th>baseline</th><th>champion</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def data_table(report: dict[str, Any]) -> str:
    """The preprocess accounting (read = accepted + rejected + deleted, per tub) and the split sizes."""
    columns = ("tub", "format", "read", "accepted", "rejected", "deleted")
    tubs = [*report.get("tubs", []), *([report["total"]] if report.get("total") else [])]
    rows = "".join(
        "<tr>" + "".join(f"<td>{_esc(t.get(c, ''))}</td>" for c in columns) + "</tr>" for t in tubs
    )
    splits = ", ".join(
        f"{_esc(name)} {_esc(s.get('frames'))}" for name, s in report.get("splits", {}).items()
    )
    return (
        "<table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + f"</tr>{rows}</table>"
        f"<p>frames per split: {splits or 'none'}</p>"
    )


def _output_folders(execution: Execution, s3_root: Path, marker: str) -> list[Path]:
    """Local S3 folders of Processing outputs that hold the file ``marker``."""
    folders = []
    for record in execution.steps.values():
        outputs = record.properties.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for output in outputs:
            uri = output.get("S3Output", {}).get("S3Uri", "")
            if isinstance(uri, str) and uri.startswith("s3://"):
                try:  # local S3's own mapping: never a folder outside a bucket
                    folder = LocalS3Client(s3_root.parent).uri_to_path(uri)
                except ValueError:
                    continue
                if (folder / marker).is_file():
                    folders.append(folder)
    return folders


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _plots(folder: Path) -> str:
    images = []
    for path in sorted(folder.rglob("*")):
        mime = PLOT_SUFFIXES.get(path.suffix.lower())
        if mime and path.is_file() and path.stat().st_size <= MAX_PLOT_BYTES:
            data = base64.b64encode(path.read_bytes()).decode()
            images.append(
                f'<figure><img src="data:{mime};base64,{data}" style="max-width:640px">'
                f"<figcaption>{_esc(path.name)}</figcaption></figure>"
            )
    return "".join(images)


def render(execution: Execution, definition: dict[str, Any], workspace: Path) -> str:
    s3_root = workspace / "s3"
    sections = [
        f"<h1>{_esc(execution.pipeline_name)} — execution {_esc(execution.execution_id)}</h1>",
        f'<p>status: <b style="color:{STATUS_COLOURS.get(execution.status, "#000")}">'
        f"{_esc(execution.status)}</b>"
        f"; started {_esc(execution.start_time)}; ended {_esc(execution.end_time or '')}</p>",
    ]
    if execution.failure_reason:
        sections.append(f"<p>failure: {_esc(execution.failure_reason)}</p>")
    sections.append("<h2>Parameters</h2><table>")
    sections += [f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in execution.parameters.items()]
    sections.append("</table><h2>Steps</h2>")
    sections.append(graph_svg(definition, execution.steps))
    sections.append(_steps_table(execution))
    for folder in _output_folders(execution, s3_root, "data_report.json"):
        report = _read_json(folder / "data_report.json")
        if isinstance(report, dict):
            sections.append(f"<h2>Data ({_esc(folder.relative_to(s3_root))})</h2>")
            sections.append(data_table(report))
    for folder in _output_folders(execution, s3_root, "evaluation.json"):
        evaluation = _read_json(folder / "evaluation.json")
        if not isinstance(evaluation, dict):
            continue
        sections.append(f"<h2>Evaluation ({_esc(folder.relative_to(s3_root))})</h2>")
        sections.append(metrics_table(evaluation))
        sections.append(_plots(folder))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}figure{display:inline-block}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(execution.pipeline_name)} "
        f"{_esc(execution.execution_id)}</title><style>{style}</style></head><body>"
        + "".join(sections)
        + "</body></html>\n"
    )


def write_report(execution: Execution, workspace: Path | None = None) -> Path:
    """Render the report next to the execution record; returns its path."""
    definition = json.loads((execution.path / "definition.json").read_text())
    workspace = workspace or execution.path.parents[2]  # WORKSPACE/executions/<pipeline>/<id>
    path = execution.path / "report.html"
    atomic_write_bytes(path, render(execution, definition, workspace).encode())
    return path
