"""``agoplight report RUN_DIR``: a static HTML page (``index.html`` and PNG files) drawn from what a run saved.

The page reads a run folder, ``<trainer.default_root_dir>/<timestamp>/``: the scalars in ``metrics.csv``, the
matrices in ``agop/step_<step>.pt``, the settings in ``config.yaml`` and, for convolution patch shapes, the weight
shapes of a checkpoint. It has no scripts and no network resources, so it opens from disk anywhere.

For a network it shows a summary, the NFA correlation of each layer over steps, the validation metrics and, per
layer at chosen steps (the first and last saved by default), the AGOP and NFM heatmaps, their spectra and the
AGOP's top eigenvectors as images where the layer's input is an image (the data's images, or a convolution's
patches). For a Recursive Feature Machine (matrices named ``rfm``, with ``M`` and ``agop``), one epoch is one
iteration: the page shows ``M`` and the AGOP of every iteration and the validation metrics against ``epoch``.
Whatever cannot be drawn is listed under "Skipped", with the reason.

Example::

    agoplight report runs/mlp_digits/20261204-165356 --steps 0 250 510
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import importlib
import math
import pickle
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from torch import Tensor

from agoplight.errors import ConfigurationError
from agoplight.features import all_finite
from agoplight.plots import eigenvector_grid, matrix_panels, save_png, spectrum

__all__ = ["Report", "build_report", "main"]

RFM_NAME = "rfm"
MAX_RFM_ITERATIONS = 12  # iterations drawn by default; more are thinned evenly, first and last kept
UNREADABLE = (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError)  # from torch.load
NFA_CURVES = {
    "pearson_sqrt": "NFM vs AGOP^1/2",
    "pearson": "NFM vs AGOP",
    "delta_pearson_sqrt": "NFM of W - W0 vs AGOP^1/2",
    "delta_pearson": "NFM of W - W0 vs AGOP",
}
STYLE = """
body { font-family: sans-serif; max-width: 1260px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
.row { display: flex; gap: .8em; align-items: flex-start; margin: .4em 0 .9em; }
.wrap { flex-wrap: wrap; }
figure { margin: 0; flex: 0 1 auto; min-width: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; }
.skipped { background: #fff7e0; border: 1px solid #e8c66a; padding: .5em 1.5em; }
"""


@dataclass
class Report:
    """What ``build_report`` wrote: the page, its pictures, and what it left out and why."""

    index: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class RunFolder:
    """The parts of a run folder the report reads."""

    path: Path
    rows: list[dict[str, float]]  # metrics.csv, empty cells left out
    files: dict[int, Path]  # step -> agop/step_<step>.pt
    config: dict[str, Any]


def build_report(run_dir: str | Path, out: str | Path | None = None, steps: Sequence[int] | None = None) -> Report:
    """Write ``index.html`` and its PNG files for the run folder ``run_dir`` into ``out`` (``<run_dir>/report``).

    Args:
        run_dir: a run folder written by ``train.py fit``.
        out: output folder, created if needed; files of an earlier report with the same names are replaced.
        steps: steps (RFM: iterations) whose matrices are drawn; by default the first and last saved (RFM: every
            iteration, up to 12).

    Raises:
        ConfigurationError: ``run_dir`` is not a run folder, or a step in ``steps`` has no saved matrices.
    """
    run = open_run(Path(run_dir))
    page = _Page(Path(out) if out is not None else run.path / "report")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # eigendecompositions of saved matrices (at most save_max_dim wide) need no more
    try:
        return _draw(run, page, steps)
    finally:
        torch.set_num_threads(threads)


def _draw(run: RunFolder, page: _Page, steps: Sequence[int] | None) -> Report:
    is_rfm = bool(run.files) and RFM_NAME in _load(run.files[max(run.files)], page)
    loaded = {step: _load(run.files[step], page) for step in _choose_steps(run, steps, is_rfm, page)}
    matrices = {step: entry for step, entry in loaded.items() if entry}

    model, data = ((run.config.get(key) or {}).get("class_path", "unknown") for key in ("model", "data"))
    saved = f"{len(run.files)} saved {'iterations' if is_rfm else 'measurements'}"
    if run.files:
        saved += f" ({'' if is_rfm else 'steps '}{min(run.files)} to {max(run.files)})"
    page.title = f"agoplight report: {run.path.name}"
    page.add(
        f"<p class='note'>{'RFM' if is_rfm else 'Network'} run <code>{html.escape(run.path.name)}</code>: model "
        f"<code>{html.escape(model)}</code>, data <code>{html.escape(data)}</code>; {saved}.</p>"
    )

    if is_rfm:
        _rfm_sections(run, matrices, page)
    else:
        _network_sections(run, matrices, page)
    return page.write()


def open_run(path: Path) -> RunFolder:
    """Read a run folder's metrics, list its matrix files and read its config; fail if it is not a run folder."""
    if not path.is_dir():
        problem = "is a file" if path.exists() else "does not exist"
        raise ConfigurationError(f"'{path}' {problem}. Pass a run folder, `<default_root_dir>/<timestamp>/`.")
    metrics, files = path / "metrics.csv", sorted((path / "agop").glob("step_*.pt"))
    if not metrics.is_file() and not files:
        runs = sorted(p.name for p in path.iterdir() if (p / "metrics.csv").is_file())
        hint = f" It holds run folders ({', '.join(runs[-3:])}): pass one of them." if runs else ""
        raise ConfigurationError(f"'{path}' is not a run folder: it has neither metrics.csv nor agop/step_*.pt.{hint}")

    rows = []
    if metrics.is_file():
        with open(metrics, newline="") as file:
            rows = [{k: v for k, v in map(_number, row.items()) if v is not None} for row in csv.DictReader(file)]
    config = {}
    if (path / "config.yaml").is_file():
        with open(path / "config.yaml") as file, contextlib.suppress(yaml.YAMLError):  # unreadable: no config
            config = yaml.safe_load(file) or {}
    steps = {}
    for file in files:
        match = re.fullmatch(r"step_(\d+)\.pt", file.name)
        if match:
            steps[int(match.group(1))] = file
    return RunFolder(path, rows, dict(sorted(steps.items())), config if isinstance(config, dict) else {})


# ---- sections --------------------------------------------------------------------------------------------------


def _network_sections(run: RunFolder, matrices: dict[int, dict[str, dict[str, Tensor]]], page: _Page) -> None:
    layers = _nfa_layers(run.rows)
    for entry in matrices.values():
        layers += [name for name in entry if name not in layers]

    page.heading("Summary", "summary")
    rows = []
    for layer in _nfa_layers(run.rows):
        keys = [f"nfa/{layer}/{key}" for key in ("pearson_sqrt", "pearson", "delta_pearson_sqrt")]
        rows.append(
            [html.escape(layer), _first_last(run.rows, keys[0], x=True)] + [_first_last(run.rows, k) for k in keys]
        )
    page.table(
        ["layer", "steps", "Pearson(NFM, AGOP^1/2)", "Pearson(NFM, AGOP)", "Pearson(NFM of W - W0, AGOP^1/2)"], rows
    )
    _metric_table(run.rows, page)

    page.heading("NFA correlation over training", "nfa")
    page.add(
        "<p class='note'>Pearson correlation of the entries of the layer's neural feature matrix NFM = W^T W "
        "(dashed: of W - W0) with its AGOP and AGOP^1/2, measured on the probe set.</p>"
    )
    curves = []
    for layer in _nfa_layers(run.rows):
        series = {label: _series(run.rows, f"nfa/{layer}/{key}") for key, label in NFA_CURVES.items()}
        curves.append(
            (_curves(series, layer, "step", "Pearson correlation"), f"nfa_{layer}", f"NFA correlation, {layer}")
        )
    if curves:
        page.figures(*curves, wrap=True)
    else:
        page.skip(f"NFA correlation curves: {_no_column(run, 'nfa/<layer>/pearson_sqrt')}.")

    _validation_section(run, "step", page)

    shapes = _picture_shapes(run, matrices, page)
    for layer in layers if matrices else []:
        page.heading(f"Layer {layer}", f"layer-{layer}")
        for step, entry in matrices.items():
            page.add(f"<h3>Step {step}</h3>")
            if layer not in entry:
                reason = f"not in {run.files[step].name} (the monitor saves no layer wider than its save_max_dim)"
            elif not all_finite(*entry[layer].values()):
                reason = f"its matrices in {run.files[step].name} are not finite (the model diverged?)"
            else:
                reason = ""
            if reason:
                page.add(f"<p class='note'>Not drawn: {reason}.</p>")
                page.skip(f"Matrices of {layer} at step {step}: {reason}.")
                continue
            _matrix_figures(entry[layer], f"{layer}, step {step}", f"{layer}_step{step:07d}", shapes.get(layer), page)


def _rfm_sections(run: RunFolder, matrices: dict[int, dict[str, dict[str, Tensor]]], page: _Page) -> None:
    val_rows = [row for row in run.rows if any(key.startswith("val/") for key in row)]
    x = "epoch" if any("epoch" in row for row in val_rows) else "step"
    page.heading("Summary", "summary")
    page.add(
        f"<p>Matrices drawn for iterations {', '.join(map(str, matrices))}. Validation metrics are drawn against "
        f"<code>{x}</code> (one epoch is one RFM iteration).</p>"
    )
    best = _series(run.rows, "rfm/best_iteration", x)
    if best:
        score = _series(run.rows, "rfm/best_score", x)
        page.add(
            f"<p>Best iteration by validation score: {best[-1][1]:.0f}"
            + (f" ({score[-1][1]:.4g})" if score else "")
            + ".</p>"
        )
    _metric_table(run.rows, page)
    _validation_section(run, x, page)

    shapes = _picture_shapes(run, matrices, page, convolutions=False)
    page.heading("M and AGOP per iteration", "iterations")
    page.add(
        "<p class='note'>AGOP is the average gradient outer product of the iteration's fitted predictor, M the "
        "metric learned from it (a power of it, normalised) for the next iteration; the eigenvectors are the "
        "AGOP's.</p>"
    )
    for step, entry in matrices.items():
        if RFM_NAME not in entry:
            page.skip(f"Iteration {step}: {run.files[step].name} holds no matrices named {RFM_NAME!r}.")
            continue
        page.add(f"<h3>Iteration {step}</h3>")
        _matrix_figures(entry[RFM_NAME], f"iteration {step}", f"rfm_iter{step:04d}", shapes.get(RFM_NAME), page)


def _validation_section(run: RunFolder, x: str, page: _Page) -> None:
    page.heading("Validation metrics", "validation")
    keys = sorted({key for row in run.rows for key in row if key.startswith("val/")})
    if not keys:
        page.skip(f"Validation metrics: {_no_column(run, 'val/*')}.")
        return
    label = "iteration" if x == "epoch" else x
    fig = Figure(figsize=(3.6 * len(keys), 2.8), dpi=90, layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        points = _series(run.rows, key, x)
        ax.plot(*np.array(points).T, marker="o", markersize=3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    page.figures((fig, "validation", f"validation metrics against {label}"))


def _matrix_figures(
    entry: dict[str, Tensor], title: str, stem: str, shape: tuple[int, ...] | None, page: _Page
) -> None:
    """Heatmaps and spectrum of one measurement's matrices, and the AGOP's top eigenvectors as images."""
    entry = {kind: _as_matrix(value) for kind, value in entry.items()}
    bad = [kind for kind, value in entry.items() if not torch.isfinite(value).all()]
    if bad:
        page.skip(f"Pictures of {title}: {', '.join(bad)} not finite (NaN or inf).")
        return
    page.figures(
        (matrix_panels(entry, title), f"matrices_{stem}", f"heatmaps, {title}"),
        (spectrum(entry, title), f"spectrum_{stem}", f"spectra, {title}"),
    )
    if shape is not None:
        top = entry.get("agop", entry.get("M"))
        image = "x".join(map(str, shape))
        grid = eigenvector_grid(top, shape, title=f"top eigenvectors as {image} images, {title}")
        page.figures((grid, f"eigenvectors_{stem}", f"top eigenvectors as {image} images, {title}"))


# ---- what the figures need ---------------------------------------------------------------------------------------


def _choose_steps(run: RunFolder, steps: Sequence[int] | None, is_rfm: bool, page: _Page) -> list[int]:
    saved = list(run.files)
    if not saved:
        page.skip(
            "Heatmaps, spectra and eigenvectors: the run saved no matrices (agop/step_*.pt); the monitor's "
            "save_matrices was off, or it had no monitor."
        )
        return []
    if steps:
        missing = [step for step in steps if step not in run.files]
        if missing:
            listing = ", ".join(map(str, saved if len(saved) <= 20 else [*saved[:10], "...", *saved[-5:]]))
            raise ConfigurationError(f"`--steps`: no matrices saved at step {missing}. Saved steps: {listing}.")
        return sorted(set(steps))
    if not is_rfm:
        return sorted({saved[0], saved[-1]})
    if len(saved) <= MAX_RFM_ITERATIONS:
        return saved
    keep = sorted({saved[round(i)] for i in np.linspace(0, len(saved) - 1, MAX_RFM_ITERATIONS)})
    page.skip(
        f"Iterations {', '.join(str(s) for s in saved if s not in keep)}: more than {MAX_RFM_ITERATIONS} "
        "saved; pass --steps to draw them."
    )
    return keep


def _picture_shapes(
    run: RunFolder, matrices: dict[int, dict[str, dict[str, Tensor]]], page: _Page, convolutions: bool = True
) -> dict[str, tuple[int, ...]]:
    """How one input of each saved layer looks as an image: the data's image, or a convolution's ``(c_in, k, k)``
    patch (read from a checkpoint when ``convolutions``)."""
    sizes = {}
    for entry in matrices.values():
        for name, kinds in entry.items():
            sizes.setdefault(name, _as_matrix(kinds.get("agop", kinds.get("M"))).shape[0])
    image, source = _image_shape(run.config)
    image_size = math.prod(image) if image is not None else None
    others = [layer for layer, size in sizes.items() if size != image_size]
    patches = _patch_shapes(run.path, others) if convolutions else {}

    shapes, not_conv = {}, ", and it is not a convolution" if convolutions else ""
    for layer, size in sizes.items():
        if size == image_size:
            shapes[layer] = image
        elif layer in patches and math.prod(patches[layer]) == size:
            shapes[layer] = patches[layer]
        elif image is not None:
            page.skip(
                f"Eigenvector images of {layer}: its input has {size} values, not the "
                f"{'x'.join(map(str, image))} image of {source}{not_conv}."
            )
        else:
            page.skip(f"Eigenvector images of {layer}: {source}{not_conv}.")
    return shapes


def _image_shape(config: dict[str, Any]) -> tuple[tuple[int, ...] | None, str]:
    """The shape of one input sample, from the monitor's ``image_shape`` or the data class; and where it came from."""
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        shape = ((callback or {}).get("init_args") or {}).get("image_shape") if isinstance(callback, dict) else None
        if shape:
            return tuple(shape), "the monitor's image_shape"
    if not config:
        return None, "there is no readable config.yaml, so the input image shape is unknown"
    class_path = (config.get("data") or {}).get("class_path", "")
    if not class_path:
        return None, "config.yaml names no data class, so the input image shape is unknown"
    module, _, name = class_path.rpartition(".")
    shape = None
    if module.startswith("agoplight."):  # only our own classes are imported; a user's may have side effects
        try:
            shape = getattr(getattr(importlib.import_module(module), name), "image_shape", None)
        except (ImportError, AttributeError):
            shape = None
    if shape is None:
        return None, f"the data ({class_path}) has no known image shape"
    return tuple(shape), f"the data ({name})"


def _patch_shapes(run_dir: Path, layers: list[str]) -> dict[str, tuple[int, ...]]:
    """``(c_in, k, k)`` of each convolution among ``layers``, from the weight shapes of the run's last checkpoint."""
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not layers or not checkpoints:
        return {}
    try:
        state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    except UNREADABLE:  # an unreadable checkpoint only costs the patch pictures
        return {}
    weights = {layer: state.get(f"{layer}.weight") for layer in layers}
    return {layer: tuple(w.shape[1:]) for layer, w in weights.items() if w is not None and w.dim() == 4}


def _load(path: Path, page: _Page) -> dict[str, dict[str, Tensor]]:
    """The matrices of one ``agop/step_<step>.pt``; none, noted as skipped, if the file cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["matrices"]
    except UNREADABLE as error:
        page.skip(f"{path.parent.name}/{path.name}: unreadable ({type(error).__name__}: {error}).")
        return {}


def _no_column(run: RunFolder, column: str) -> str:
    if run.rows:
        return f"metrics.csv has no {column} column"
    return "metrics.csv is missing or empty" if (run.path / "metrics.csv").exists() else "there is no metrics.csv"


def _number(item: tuple[str | None, Any]) -> tuple[str | None, float | None]:
    """A metrics.csv cell as a number; empty or non-numeric cells (and cells without a column) as None."""
    key, value = item
    try:
        return key, float(value) if key else None
    except (TypeError, ValueError):
        return key, None


def _as_matrix(value: Tensor) -> Tensor:
    """A diagonal metric saved as its ``(d,)`` diagonal becomes the ``(d, d)`` matrix."""
    return torch.diag(value) if value.dim() == 1 else value


def _nfa_layers(rows: list[dict[str, float]]) -> list[str]:
    suffix = "/pearson_sqrt"
    keys = {key for row in rows for key in row if key.startswith("nfa/") and key.endswith(suffix)}
    return sorted(key[len("nfa/") : -len(suffix)] for key in keys if "/delta_" not in key)


def _series(rows: list[dict[str, float]], key: str, x: str = "step") -> list[tuple[float, float]]:
    return [(row[x], row[key]) for row in rows if key in row and x in row]


def _first_last(rows: list[dict[str, float]], key: str, x: bool = False) -> str:
    """``"first -> last"`` value of a scalar, or with ``x`` its first and last step."""
    points = _series(rows, key)
    if not points:
        return "-"
    (s0, v0), (s1, v1) = points[0], points[-1]
    return f"{s0:.0f} &rarr; {s1:.0f}" if x else f"{v0:.3f} &rarr; {v1:.3f}"


def _metric_table(rows: list[dict[str, float]], page: _Page) -> None:
    keys = sorted({key for row in rows for key in row if key.startswith(("val/", "test/"))})
    values = {key: [row[key] for row in rows if key in row] for key in keys}
    page.table(
        ["metric", "first", "last", "min", "max"],
        [[html.escape(key), *(f"{v:.4g}" for v in (vs[0], vs[-1], min(vs), max(vs)))] for key, vs in values.items()],
    )


def _curves(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str) -> Figure:
    fig = Figure(figsize=(4.8, 3.1), dpi=90, layout="constrained")
    ax = fig.subplots()
    for label, points in series.items():
        if points:
            style = "--" if "W - W0" in label else "-"
            ax.plot(*np.array(points).T, linestyle=style, marker="o", markersize=3, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


# ---- the page ----------------------------------------------------------------------------------------------------


class _Page:
    """HTML parts in order, PNG files beside ``index.html``, and the list of what was skipped."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.title = "agoplight report"
        self.parts: list[str] = []
        self.contents: list[tuple[str, str]] = []
        self.report = Report(index=out / "index.html")

    def add(self, part: str) -> None:
        self.parts.append(part)

    def heading(self, text: str, anchor: str) -> None:
        anchor = _file_name(anchor)
        self.contents.append((text, anchor))
        self.parts.append(f"<h2 id='{anchor}'>{html.escape(text)}</h2>")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        if rows:
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
            body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
            self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def figures(self, *figures: tuple[Figure, str, str], wrap: bool = False) -> None:
        """A row of ``(figure, file name, alt text)``, saved as PNG files; the row shrinks to the page's width, or
        wraps onto more lines with ``wrap``."""
        items = []
        for fig, name, alt in figures:
            path = save_png(fig, self.out / f"{_file_name(name)}.png")
            self.report.images.append(path)
            items.append(f"<figure><img src='{quote(path.name)}' alt='{html.escape(alt, quote=True)}'></figure>")
        self.parts.append(f"<div class='row{' wrap' if wrap else ''}'>{''.join(items)}</div>")

    def skip(self, reason: str) -> None:
        if reason not in self.report.skipped:
            self.report.skipped.append(reason)

    def write(self) -> Report:
        skipped = self.report.skipped
        if skipped:
            self.contents.append((f"Skipped ({len(skipped)})", "skipped"))
            items = "".join(f"<li>{html.escape(reason)}</li>" for reason in skipped)
            self.parts.append(f"<h2 id='skipped'>Skipped</h2><ul class='skipped'>{items}</ul>")
        nav = " | ".join(f"<a href='#{anchor}'>{html.escape(text)}</a>" for text, anchor in self.contents)
        title = html.escape(self.title)
        page = (
            "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>{STYLE}</style></head>\n<body>\n<h1>{title}</h1>\n"
            f"<nav>{nav}</nav>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )
        self.out.mkdir(parents=True, exist_ok=True)
        self.report.index.write_text(page, encoding="utf-8")
        return self.report


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


# ---- command line ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``agoplight report RUN_DIR [--out DIR] [--steps STEP ...]``; returns the exit status (2 on a bad folder)."""
    parser = argparse.ArgumentParser(
        prog="agoplight report", description="Draw a static HTML report (index.html and PNGs) of a run folder."
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, <default_root_dir>/<timestamp>/")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: RUN_DIR/report)")
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        metavar="STEP",
        help="steps (RFM: iterations) whose matrices to draw; default: the first and last (RFM: all, up to 12)",
    )
    args = parser.parse_args(argv)

    try:
        report = build_report(args.run_dir, args.out, args.steps)
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Report: {report.index} ({len(report.images)} pictures)")
    for reason in report.skipped:
        print(f"  skipped: {reason}")
    return 0
