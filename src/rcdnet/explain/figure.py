"""The paper's Figure 4, made honest: for each dataset, the most confident correct and wrong case of each class."""

from __future__ import annotations

from pathlib import Path

from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.samples import Sample
from rcdnet.explain.images import iter_explained, mapper
from rcdnet.explain.render import grid_figure
from rcdnet.predict.pytorch import TorchPredictor

FIGURE_COLUMNS = ["benign, correct", "benign, wrong", "malignant, correct", "malignant, wrong"]


def figure4(predictor: TorchPredictor, datasets: dict[str, list[Sample]], path: Path, method: str = "gradcam",
            layer: str | None = None, target: str = "malignant", cache_dir: Path | None = None) -> dict:
    """The paper's Figure 4, made honest: per dataset (row), the most confident correct and the most confident
    wrong benign and malignant case at the default operating point (column). Returns the chosen keys."""
    threshold = predictor.thresholds.get("default", 0.5)
    cells, chosen = {}, {}
    with mapper(predictor, method, layer, target) as hm:
        for name, samples in datasets.items():
            pre_rows = []
            kept, images, _ = preprocess_samples(samples, predictor.preprocessor, cache_dir)
            p = predictor.predict_arrays(images)[:, predictor.malignant_index]
            for s, pm in zip(kept, p):
                pred_mal = pm >= threshold
                correct = pred_mal == (s.label == "malignant")
                conf = pm if pred_mal else 1 - pm
                pre_rows.append((f"{s.label}, {'correct' if correct else 'wrong'}", conf, s))
            for col in FIGURE_COLUMNS:
                cands = [r for r in pre_rows if r[0] == col]
                if not cands:
                    continue
                s = max(cands, key=lambda r: r[1])[2]
                it = next(iter_explained(predictor, hm, [s], []))
                it["caption"] = f"{Path(s.path).name}\np(malignant)={it['p_malignant']:.2f}"
                cells[(name, col)] = it
                chosen[f"{name}: {col}"] = s.key
    grid_figure(cells, list(datasets), FIGURE_COLUMNS, path,
                f"{method} ({target}) on {hm.layer}; green: radiologist's lesion mask; threshold p>={threshold:.2f}")
    return chosen
