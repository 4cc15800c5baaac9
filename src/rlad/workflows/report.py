"""`report.html`, written by `rlad test` into the run: what the numbers mean and what the model got
wrong, in one self-contained page (every picture embedded).

Sections: the run (method, data, backbone, thresholds), the metrics with their definitions, ROC and
precision-recall curves (image level and pixel level), one row per defect type, the histogram of
image scores of normal and defective images on the run's 0-1 scale (the threshold at 0.5, as
`rlad predict` prints scores), and the highest-scoring normal and lowest-scoring defective images
(with how many of each are errors at the run's threshold) as labelled overlays (image | heat map,
ground truth outlined in white, the predicted mask in red), drawn at least `PANEL_SIDE` pixels a side.
"""

from __future__ import annotations

import warnings
from html import escape
from pathlib import Path

import numpy as np

from rlad.metrics.pixel import UndefinedMetricWarning, auroc
from rlad.tables import html_table

# Shown next to each metric (the same words as docs/metrics.md).
DEFINITIONS = {
    "image_auroc": "Area under the ROC curve of the image scores: the chance that a random defective image "
                   "scores above a random normal one (1 = perfect ranking, 0.5 = chance).",
    "pixel_auroc": "The same over all pixels of all test images: a defect pixel against a normal pixel.",
    "aupro": "Area under the per-region overlap curve up to 30% false-positive rate, normalised to 1: "
             "every defect region counts equally, however small (MVTec AD's localisation metric).",
    "pixel_ap": "Average precision over pixels: the area under the pixel precision-recall curve.",
    "pixel_f1_max": "The best pixel F1 over all thresholds (an oracle: the threshold is chosen on the test set).",
    "image_f1_max": "The best image F1 over all thresholds (an oracle, as above).",
    "pixel_f1_at_val_threshold": "Pixel F1 at the run's threshold, fitted on the validation split: what a user gets.",
    "image_f1_at_val_threshold": "Image F1 at the run's threshold, fitted on the validation split: what a user gets.",
    "ms_per_image": "Milliseconds per image for the model's forward pass and map (batched, this machine).",
    "n_test": "Images scored (the test split minus labelled training and development images).",
}
WORST = 4  # overlays per kind of error
PANEL_SIDE = 256  # error panels show each image at least this large
CURVE_PIXELS = 200_000  # pixels sampled for the pixel curves (the metrics use all of them)


def curve_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate = recall, precision) at every distinct threshold,
    from the highest score down."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    ranked, truth = np.asarray(scores)[order], np.asarray(labels, bool)[order]
    last_of_value = np.r_[np.nonzero(np.diff(ranked))[0], len(ranked) - 1]
    tp = np.cumsum(truth)[last_of_value]
    fp = np.cumsum(~truth)[last_of_value]
    positives, negatives = max(int(truth.sum()), 1), max(int((~truth).sum()), 1)
    return np.r_[0, fp / negatives], np.r_[0, tp / positives], np.r_[1, tp / np.maximum(tp + fp, 1)]


def _quiet_auroc(scores, labels) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return auroc(scores, labels)


def per_type_rows(samples, pred, masks: np.ndarray, post) -> list[dict]:
    """One row per defect type (and one for the normal images): how many, how many flagged at the
    run's threshold, image AUROC against the normal test images, pixel AUROC over that type's images."""
    types = np.array([s.defect_type for s in samples])
    flagged = post.is_anomalous(pred.scores)
    normal = types == "good"
    rows = []
    for kind in ["good"] + sorted(set(types) - {"good"}):
        of_kind = types == kind
        row = {"type": kind, "images": int(of_kind.sum()), "flagged": f"{flagged[of_kind].mean():.0%}",
               "mean_score": float(post.normalise_scores(pred.scores[of_kind]).mean())}
        if kind != "good":
            both = of_kind | normal
            row["image_auroc"] = _quiet_auroc(pred.scores[both], of_kind[both])
            row["pixel_auroc"] = _quiet_auroc(pred.maps[of_kind].ravel(), masks[of_kind].ravel())
        rows.append(row)
    return rows


def _curves_figure(pred, labels: np.ndarray, masks: np.ndarray, roc: bool) -> str:
    from rlad.viz import figure_png_uri

    rng = np.random.default_rng(0)
    pixels = pred.maps.ravel()
    pick = rng.choice(pixels.size, size=min(CURVE_PIXELS, pixels.size), replace=False)
    curves = {"image": curve_points(pred.scores, labels), "pixel": curve_points(pixels[pick], masks.ravel()[pick])}

    def draw(axes):
        for name, (fpr, tpr, precision) in curves.items():
            if roc:
                axes.plot(fpr, tpr, label=name)
            else:
                axes.plot(tpr, precision, label=name)
        if roc:
            axes.plot([0, 1], [0, 1], color="#bbb", linestyle=":", label="chance")
        axes.set_xlabel("false-positive rate" if roc else "recall")
        axes.set_ylabel("true-positive rate" if roc else "precision")
        axes.set_title("ROC" if roc else "precision-recall")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.legend(loc="lower right" if roc else "lower left")

    return figure_png_uri(draw)


def _histogram_figure(pred, labels: np.ndarray, post) -> str:
    """Image scores on the run's 0-1 scale (as `rlad predict` and the panels print them), so the
    threshold sits at 0.5 whatever the model's raw units."""
    from rlad.viz import figure_png_uri

    scores = post.normalise_scores(pred.scores)

    def draw(axes):
        bins = np.linspace(0.0, 1.0, 41)
        axes.hist(scores[labels == 0], bins=bins, alpha=0.6, label=f"normal ({int((labels == 0).sum())})", color="#2a9d3c")
        axes.hist(scores[labels == 1], bins=bins, alpha=0.6, label=f"defective ({int((labels == 1).sum())})", color="#d33")
        axes.axvline(0.5, color="black", linestyle="--", label=f"threshold (raw {post.image_threshold:.4g})")
        axes.set_xlim(0, 1)
        axes.set_xlabel("image score (0.5 = the run's threshold)")
        axes.set_ylabel("images")
        axes.legend()

    return figure_png_uri(draw, size=(6.0, 3.4))


def _error_figures(indices, samples, images, masks, pred, post, folder_root: Path) -> str:
    from rlad.boxes import mask_to_boxes
    from rlad.data.paths import relative_to
    from rlad.viz import labelled_panel, png_data_uri

    figures = []
    for i in indices:
        # A small model input is drawn at a whole multiple of its size (pixels repeated, not blurred), so
        # the labels are written at a size a person can read.
        factor = max(1, -(-PANEL_SIDE // max(images.shape[-2:])))
        enlarge = (lambda a: np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)) if factor > 1 else (lambda a: a)
        image = enlarge(images[i].transpose(1, 2, 0).astype(np.float32) / 255.0)
        scores = enlarge(post.normalise_maps(pred.maps[i]))
        predicted = enlarge(post.masks(pred.maps[i]))
        score = float(post.normalise_scores(pred.scores[i : i + 1])[0])
        flagged = bool(post.is_anomalous(pred.scores[i : i + 1])[0])
        boxes = [(list(b), float(scores[b[1]:b[3], b[0]:b[2]].max())) for b in mask_to_boxes(predicted)][:8]
        title = f"score {score:.2f}   {'ANOMALOUS' if flagged else 'normal'}"
        panel = labelled_panel(image, scores, boxes, title, flagged, truth=enlarge(masks[i]), mask=predicted)
        name = relative_to(samples[i].path, folder_root)
        figures.append(f"<figure><img src='{png_data_uri(panel)}' alt='{escape(name)}'>"
                       f"<figcaption>{escape(name)} (truth: {escape(samples[i].defect_type)})</figcaption></figure>")
    return "".join(figures) or "<p>None.</p>"


def write_test_report(path: Path, loaded, folder, samples, images: np.ndarray, masks: np.ndarray, pred,
                      metrics: dict) -> Path:
    """The page for one `rlad test` (see the module docstring); returns its path."""
    from rlad.viz import write_report

    post = loaded.post
    labels = np.array([s.label for s in samples])
    backbones = loaded.backbones
    if backbones is None:
        backbone_text = "not recorded (a run saved by an older rlad)"
    elif not backbones:
        backbone_text = "none (this method uses no pretrained network)"
    else:
        backbone_text = "; ".join(f"{b['arch']}: " + (f"pretrained, {b['file']}" if b["pretrained"] else "RANDOM weights")
                                  for b in backbones)
    warning = ""
    if backbones and not all(b["pretrained"] for b in backbones):
        warning = ("<p class='warn'>This run's backbone has random weights (fitted with weights=random): its maps "
                   "and scores are poor. Refit with the default weights=imagenet.</p>")
    intro = warning + "<div class='text-last'>" + html_table([
        {"": "run", "value": str(loaded.run.path)},
        {"": "method", "value": loaded.cfg.method},
        {"": "data", "value": f"{folder.root} (category {folder.category}, split {metrics['split']})"},
        {"": "backbone", "value": backbone_text},
        {"": "image threshold", "value": f"{post.image_threshold:.6g} (raw score; {post.rule})"},
        {"": "pixel threshold", "value": f"{post.pixel_threshold:.6g} (raw map value; {post.rule})"},
        {"": "images", "value": f"{metrics['n_test']} scored, {metrics['n_excluded_labeled']} labelled and "
                                f"{metrics['n_excluded_dev']} development images left out"},
    ], ["", "value"]) + "</div>"
    metric_rows = [{"metric": k, "value": metrics[k], "definition": v} for k, v in DEFINITIONS.items() if k in metrics]

    defective = np.nonzero(labels == 1)[0]
    normal = np.nonzero(labels == 0)[0]
    false_positives = normal[np.argsort(-pred.scores[normal], kind="stable")][:WORST]
    false_negatives = defective[np.argsort(pred.scores[defective], kind="stable")][:WORST]
    flagged = post.is_anomalous(pred.scores)
    legend = ("<p>Each panel: the image (ground truth outlined in white) beside its heat map on the 0-1 scale "
              "(0.5 = the pixel threshold), the predicted defect region outlined in red and boxed with its peak score; "
              "the strip above gives the image score and the decision at the run's threshold.</p>")
    errors_fp = (f"<p>{int(flagged[normal].sum())} of {len(normal)} normal images are flagged (false positives). "
                 f"Shown: the {min(WORST, len(normal))} highest-scoring normal images, flagged or not.</p>")
    errors_fn = (f"<p>{int((~flagged[defective]).sum())} of {len(defective)} defective images are missed (false "
                 f"negatives). Shown: the {min(WORST, len(defective))} lowest-scoring defective images, missed or not.</p>")
    sections = [
        ("Metrics", f"<div class='text-last'>{html_table(metric_rows, ['metric', 'value', 'definition'])}</div>"),
        ("ROC and precision-recall curves",
         f"<div class='plots'><img src='{_curves_figure(pred, labels, masks, roc=True)}' alt='ROC curves'>"
         f"<img src='{_curves_figure(pred, labels, masks, roc=False)}' alt='precision-recall curves'></div>"),
        ("Per defect type", html_table(per_type_rows(samples, pred, masks, post),
                                       ["type", "images", "flagged", "mean_score", "image_auroc", "pixel_auroc"])
         + "<p>flagged: share at or above the run's image threshold (for good: the false-positive rate); "
           "mean_score on the 0-1 scale where 0.5 is the threshold; AUROCs against the normal test images.</p>"),
        ("Image scores of normal and defective images",
         f"<img src='{_histogram_figure(pred, labels, post)}' alt='score histogram'>"),
        ("Worst false positives: the highest-scoring normal images",
         f"{errors_fp}{legend}<div class='panels'>{_error_figures(false_positives, samples, images, masks, pred, post, folder.root)}</div>"),
        ("Worst false negatives: the lowest-scoring defective images",
         f"{errors_fn}<div class='panels'>{_error_figures(false_negatives, samples, images, masks, pred, post, folder.root)}</div>"),
    ]
    return write_report(path, f"rlad test: {loaded.cfg.method} on {folder.category}", sections, intro=intro)
