"""The report: one self-contained HTML page (opens from disk: figures inline, no scripts, no server)
and a markdown twin that links the same figures as files."""

from __future__ import annotations

import base64
import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup
from PIL import Image, ImageDraw

from dsah.data.loading import PreparedData
from dsah.data.protocols import LABEL_TABLE_CHANCE
from dsah.evaluation.figures import line_chart, png_bytes
from dsah.evaluation.markdown import markdown_table
from dsah.io import atomic_path
from dsah.evaluation.metrics import hamming_distances
from dsah.evaluation.paper import paper_value

THUMB = 64


@dataclass
class GalleryRow:
    query_id: str
    query_labels: str
    query_image: Image.Image | None
    results: list[tuple[str, int, bool, str, Image.Image | None]]  # id, distance, relevant, labels, image


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f, delimiter=delimiter)]


def read_live(folder: Path, name: str) -> tuple[list[float], list[float]]:
    """One metric of the training log DVCLive wrote (the train stage): its steps (outer iterations) and
    values, from folder/<name>.tsv (folder: DVCLive's plots/metrics)."""
    rows = read_csv(folder / f"{name}.tsv", delimiter="\t")
    return [r["step"] for r in rows], [r[Path(name).name] for r in rows]


SKIPPED_SHOWN = 20  # skipped images listed in the report (all are in skipped.csv)


def label_names(bits: str, classes: list[str]) -> str:
    return ", ".join(c for c, b in zip(classes, bits) if b == "1")


def gallery(data: PreparedData, query_codes: np.ndarray, db_codes: np.ndarray, rows: int = 5,
            top: int = 10) -> list[GalleryRow]:
    """A few queries spread over the query set, each with its top database results (ties by index)."""
    picks = np.linspace(0, len(query_codes) - 1, rows).round().astype(int)
    distances = hamming_distances(query_codes[picks], db_codes)
    classes = data.meta["classes"]
    has_images = data.store is not None
    gallery_rows = []
    for pick, d in zip(picks, distances):
        order = np.argsort(d, kind="stable")[:top]
        q = data.query.table.iloc[pick]
        results = []
        for j in order:
            item = data.database.table.iloc[j]
            relevant = bool(data.query.labels[pick] @ data.database.labels[j] > 0)
            results.append((item["id"], int(d[j]), relevant, label_names(item["labels"], classes),
                            thumbnail(data.store[item["store_index"]]) if has_images else None))
        gallery_rows.append(GalleryRow(q["id"], label_names(q["labels"], classes),
                                       thumbnail(data.store[q["store_index"]]) if has_images else None, results))
    return gallery_rows


def thumbnail(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(pixels)).resize((THUMB, THUMB), Image.Resampling.NEAREST)


def gallery_image(rows: list[GalleryRow]) -> Image.Image:
    """The gallery as one PNG (for the markdown report): query, then results framed green/red."""
    cell, gap = THUMB + 8, 12
    width = cell * (1 + max(len(r.results) for r in rows)) + gap
    image = Image.new("RGB", (width, cell * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(rows):
        if row.query_image is not None:
            image.paste(row.query_image, (4, y * cell + 4))
        for x, (_, _, relevant, _, thumb) in enumerate(row.results, 1):
            left, top = x * cell + gap, y * cell
            draw.rectangle([left, top, left + cell - 2, top + cell - 2], fill="#2ca02c" if relevant else "#d62728")
            if thumb is not None:
                image.paste(thumb, (left + 3, top + 3))
    return image


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def dataset_line(meta: dict[str, Any]) -> str:
    return f"{meta['dataset']} (protocol {meta['protocol']})"


def dataset_warnings(meta: dict[str, Any]) -> list[str]:
    """What makes this run's figures incomparable with published ones: a stand-in, reduced lists, a subset,
    skipped images (each named in the protocol too)."""
    notes = meta.get("notes", [])
    warnings = []
    if meta.get("stand_in"):
        warnings.append("STAND-IN: " + "; ".join(n for n in notes if "stand-in" in n))
    if meta.get("base_protocol", "").endswith("-reduced"):
        warnings.append("REDUCED protocol: only the public train/test lists")
    if meta.get("subset"):
        warnings.append("SUBSET: " + "; ".join(n for n in notes if n.startswith("subset")))
    if meta.get("skipped"):
        warnings.append(f"REDUCED protocol: {meta['skipped']} images were missing or unreadable and skipped "
                        "(listed below and in data/images/skipped.csv)")
    return warnings


def validation_slice(meta: dict[str, Any]) -> str:
    """The validation slice's size, and why where it is smaller than prepare.validation_size."""
    count, asked = meta["counts"]["validation"], meta.get("validation_size", meta["counts"]["validation"])
    if count >= asked:
        return f"{count} database images"
    return f"{count} database images (prepare.validation_size {asked}: at most a tenth of the database)"


def build_report(shown_params: dict[str, Any], metrics: dict[str, Any], data: PreparedData, plots: Path,
                 training: Path, lae: dict[str, Any], validation: dict[str, Any], query_codes: np.ndarray,
                 db_codes: np.ndarray, commit: str, data_docs: str | None = None,
                 trained: dict[str, Any] | None = None) -> tuple[str, str, dict[str, bytes]]:
    """-> (html, markdown, figure files for the markdown: name -> bytes). shown_params: the params table,
    dotted key -> value; validation: the validate stage's per-check file; data_docs: a link (relative to
    the report) to the validation's Data Docs; training: the train stage's DVCLive plots/metrics folder;
    trained: the train stage's train.json (the values it used where the data bounded a param)."""
    method, bits = metrics["method"], metrics["bits"]
    pk = read_csv(plots / "precision_at_k.csv")
    pr = read_csv(plots / "pr_curve.csv")
    loss, validated = read_live(training, "loss/total"), read_live(training, "val/mAP")
    heatmap_png = (plots / "bit_correlation.png").read_bytes()
    figures_svg = {
        "pr_curve.svg": line_chart({method: ([r["recall"] for r in pr], [r["precision"] for r in pr])},
                                   "Precision-recall (Hamming radius 0..c)", "recall", "precision",
                                   y_range=(0, 1)),
        "precision_at_k.svg": line_chart({method: ([r["k"] for r in pk], [r["precision"] for r in pk])},
                                         "Precision@K", "K (log scale)", "precision", log_x=True, y_range=(0, 1)),
        "training.svg": line_chart({"loss": loss}, "Training loss", "outer iteration", "loss"),
    }
    if len(validated[0]) > 1:  # DVCLive logs it only at the iterations that validated
        figures_svg["validation_map.svg"] = line_chart({"validation mAP": validated}, "Validation-slice mAP",
                                                       "outer iteration", "mAP", y_range=(0, 1))
    rows = gallery(data, query_codes, db_codes)
    gallery_png = png_bytes(gallery_image(rows))
    topk = next(k for k in metrics if k.startswith("mAP@"))
    graded = next(k for k in metrics if k.startswith("NDCG@")).removeprefix("NDCG@")
    metric_rows = [("mAP (whole database)", metrics["mAP"]), (topk, metrics[topk]), ("P@5000", metrics["P@5000"]),
                   (f"NDCG@{graded} (gain 2^r - 1, r: labels shared with the query)", metrics[f"NDCG@{graded}"]),
                   (f"ACG@{graded} (labels shared, mean over the top {graded})", metrics[f"ACG@{graded}"]),
                   ("chance mAP (a ranking that knows nothing; on the label tables: "
                    + ", ".join(f"{name} {value:.3f}" for name, value in LABEL_TABLE_CHANCE.items()) + ")",
                    metrics["chance_mAP"]),
                   ("precision within Hamming radius 2", metrics["precision_radius2"]),
                   ("mAC, database codes", metrics["mAC"]), ("mAC, query codes", metrics["mAC_query"]),
                   ("validation-slice mAP", metrics["val_mAP"]),
                   *([(f"validation-slice {metrics['val_metric']} (the protocol's: selects and promotes)",
                       metrics["val_score"])] if metrics.get("val_metric", "mAP") != "mAP" else []),
                   ("training seconds", metrics["train_seconds"]),
                   ("learned from", metrics.get("features", "")), ("training set size", metrics.get("train_size", "")),
                   ("queries / database", f"{metrics['queries']} / {metrics['database']}"),
                   ("validation slice (held out of training)", validation_slice(data.meta))]
    metric_rows += [("database codes per label pattern (1: retrieval is classification)",
                     metrics["codes_per_label_pattern"]),
                    ("queries whose code is nearest their label pattern's", metrics["query_pattern_accuracy"])]
    if metrics.get("query_label_errors") is not None:  # records from before 2026-12-07 lack it
        metric_rows.append(("labels in which a query's nearest pattern differs from its own (mean)",
                            metrics["query_label_errors"]))
    if (trained or {}).get("samples") is not None:
        metric_rows.append(("database images sampled per outer iteration", trained["samples"]))
    paper = paper_value(method, bits) if metrics.get("protocol", metrics["dataset"]) == "cifar10" else None
    if paper is not None:
        metric_rows.append((f"paper's {method.upper()} at {bits} bits (Tab.1, pretrained backbone)", paper))
    title = f"DSAH report: {method} on {metrics['dataset']}, {bits} bits"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    dataset = dataset_line(data.meta)
    warnings = dataset_warnings(data.meta)
    skipped = [(r["image"], r["split"], r["reason"]) for _, r in data.skipped.head(SKIPPED_SHOWN).iterrows()]
    more = (f"{len(data.skipped) - len(skipped)} more in data/images/skipped.csv"
            if len(data.skipped) > len(skipped) else "")
    checks = validation.get("checks", [])
    validation_line = (f"{sum(c['success'] for c in checks)} of {len(checks)} checks of the "
                       f"{validation.get('protocol')} suite passed")
    docs_md = f" ([Data Docs]({data_docs}))" if data_docs else ""
    lae_line = (f"reconstruction {lae['reconstruction_exact']:.3f}, bit balance {lae['bit_balance']:.3f}, "
                f"mAC {lae['mAC']:.3f}, {lae['distinct_codes']} codes for {lae['distinct_label_vectors']} label vectors"
                if lae.get("used", True) else f"not used by {method}")
    metrics_shown = [(k, fmt(v)) for k, v in metric_rows]
    params_shown = [(k, fmt(v)) for k, v in shown_params.items()]
    page = template("report.html").render(
        title=title, dataset=dataset, commit=commit, when=when, warnings=warnings, skipped=skipped, more=more,
        metrics=metrics_shown, validation=validation_line, data_docs=data_docs, lae=lae_line,
        figures=[Markup(svg) for svg in figures_svg.values()], heatmap=data_uri(heatmap_png),  # ours: trusted
        gallery=[{"id": row.query_id, "labels": row.query_labels,
                  "image": data_uri(png_bytes(row.query_image)) if row.query_image is not None else "",
                  "results": [{"id": rid, "distance": dist, "relevant": relevant, "labels": labels,
                               "image": data_uri(png_bytes(thumb)) if thumb is not None else ""}
                              for rid, dist, relevant, labels, thumb in row.results]} for row in rows],
        params=params_shown)

    md = [f"# {title}", "", f"Dataset: **{dataset}**. Commit {commit}, generated {when}.", "",
          *([f"> **Not comparable with published figures.** {' '.join(w + '.' for w in warnings)}", ""]
            if warnings else []),
          *(["## Skipped images", "", markdown_table(["image", "split", "why"], skipped),
             *(["", more] if more else []), ""] if skipped else []),
          markdown_table(["metric", "value"], metrics_shown), "",
          f"Data validation: {validation_line}{docs_md}. Label auto-encoder: {lae_line}.", "",
          "## Curves", "", *(f"![{name}](figures/{name})" for name in figures_svg), "",
          "## Bit correlation (database codes)", "", "![bit correlation](plots/bit_correlation.png)", "",
          "## Retrieval gallery", "", "Queries (left) and their top 10 results; green frame = relevant.", "",
          "![gallery](figures/gallery.png)", "",
          "## Parameters", "", markdown_table(["param", "value"], params_shown), ""]
    files = {name: svg.encode() for name, svg in figures_svg.items()}
    files["gallery.png"] = gallery_png
    return page, "\n".join(md), files


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def template(name: str) -> jinja2.Template:
    """A page of templates/, every value it is given escaped unless marked Markup."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.get_template(name)


def write_report(out_html: Path, out_md: Path, figures: Path, page: str, md: str, files: dict[str, bytes]) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with atomic_path(figures / name) as tmp:
            tmp.write_bytes(content)
    with atomic_path(out_md) as tmp:
        tmp.write_text(md)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page)
