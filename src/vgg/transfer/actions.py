"""Table 12: VOC-2012 action classification on very deep features (Appendix B).

Each annotated person of a split is a sample with a flag per action (``vgg.data.actions``).
Its descriptor is (a) the whole image's ("image only"), (b) its box's — the box region
rescaled and described exactly as a whole image is, every Q, the mirror ("box only"), or
(c) both stacked, each L2-normalised ("image + box"). One linear SVM per action
(one-vs-rest, C chosen on 20% of the training persons held out, as every protocol here),
persons not labelled for an action left out of its SVM and AP; per-action AP and mAP
with VOC-2010+'s area AP (the VOC-2012 devkit's ``VOCap``, as ``vgg transfer --protocol
voc`` computes it for VOC-2012). Trained on train and tested on val, or trainval -> test
when the test persons are labelled. The paper reports 79.2 (image only) and 84.0 (image
+ box) mAP with D and E stacked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.actions import ActionSet, action_splits, folder_actions, read_actions
from .features import ExtractOptions, Features, FeatureNet, stack_features
from .protocols import AP_NAMES, _feature_sets, dataset_name, score_ap
from .report import Outcome, TransferReport
from .svm import C_GRID

log = logging.getLogger(__name__)

VARIANTS = ("image only", "box only", "image + box")
PAPER = {"image only": 79.2, "image + box": 84.0}  # Table 12: mAP, nets D and E stacked
AP_KIND = "area"                                     # VOC-2010+ (the 2012 devkit's AP)
METRIC = AP_NAMES[AP_KIND]


def person_features(images: Features, boxes: Features, persons: ActionSet
                    ) -> dict[str, Features]:
    """One row per person whose image and box were both read: {variant: Features} for
    :data:`VARIANTS`, rows in the order of ``persons``, targets and ignore mask its
    flags. ``images`` has a row per image id, ``boxes`` per person id."""
    irow = {i: r for r, i in enumerate(images.ids)}
    brow = {i: r for r, i in enumerate(boxes.ids)}
    keep = [k for k, p in enumerate(persons.persons) if p.image in irow and p.id in brow]
    who = [persons.persons[k] for k in keep]
    common = {"ids": [p.id for p in who], "targets": persons.targets[keep],
              "classes": list(persons.actions), "ignore": persons.ignore[keep]}
    a = Features(images.X[[irow[p.image] for p in who]],
                 meta=dict(images.meta, multi_label=True, what="image only"), **common)
    b = Features(boxes.X[[brow[p.id] for p in who]],
                 meta=dict(boxes.meta, multi_label=True, what="box only"), **common)
    return {"image only": a, "box only": b, "image + box": stack_features([a, b],
                                                                          "image + box")}


def score_actions(train: Features, test: Features, label: str, seed: int = 0,
                  C_grid: Sequence[float] = C_GRID, jobs: int | None = None,
                  solver: str = "torch") -> Outcome:
    """SVMs per action on ``train``, per-action AP (area) and mAP on ``test``: the VOC
    protocol's scoring (:func:`.protocols.score_ap`) with VOC-2012's AP only."""
    return score_ap(train, test, label, seed, C_grid, jobs, AP_KIND, solver=solver,
                    kinds=(AP_KIND,))[0]


@dataclass
class ActionsReport(TransferReport):
    """Table 12's result: an outcome per (features, variant); ``persons`` what reading
    each split found."""

    persons: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)

    def _cell(self, o: Outcome | None) -> str:
        return "-" if o is None or not math.isfinite(o.value) else f"{100 * o.value:.1f}"

    def table(self) -> str:
        """Table 12's layout: a row per set of features (and the paper's), a column per
        descriptor (image only, box only, image + box), mAP; then AP per action."""
        by = {(o.label.rsplit(", ", 1)[0], o.label.rsplit(", ", 1)[-1]): o
              for o in self.outcomes}
        sets = list(dict.fromkeys(k for k, _ in by))
        head = ("features", "net(s)", "scales", "combination", "precision", "dataset",
                *VARIANTS)
        rows = [head, ("paper", "D & E", "256..768", "average", "fp32", "VOC-2012",
                       *(f"{PAPER[v]:.1f}" if v in PAPER else "-" for v in VARIANTS))]
        for s in sets:
            first = next(o for (k, _), o in by.items() if k == s)
            rows.append((s, " & ".join(first.nets), ",".join(map(str, first.scales)),
                         first.combine, first.precision, self.dataset,
                         *(self._cell(by.get((s, v))) for v in VARIANTS)))
        lines = [f"{self.protocol} protocol: trained on {self.train}, tested on {self.test}",
                 f"Table 12 (action classification): {METRIC} over "
                 f"{len(self.actions)} actions", *_aligned(rows)]
        cols = list(self.outcomes)
        per = [("action", *(o.label for o in cols))]
        per += [(a, *(f"{100 * o.per_class[a]:.1f}" if a in o.per_class else "-"
                      for o in cols)) for a in self.actions]
        lines += ["", "AP per action:", *_aligned(per)]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "paper": PAPER, "actions": self.actions,
                "persons": self.persons}


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def run_actions(nets: Sequence[FeatureNet], data_dir: str | Path, opts: ExtractOptions, *,
                baseline: bool = True, seed: int = 0, C_grid: Sequence[float] = C_GRID,
                jobs: int | None = None, variants: Sequence[str] = VARIANTS,
                solver: str = "torch") -> ActionsReport:
    """Table 12 on a VOC year folder with the action task (``VOCdevkit/VOC2012``, or
    ``vgg data synth --layout voc-action``): descriptors of every person's image and box,
    SVMs per action, AP per action and mAP for each of ``variants``."""
    data_dir = Path(data_dir)
    actions = folder_actions(data_dir)
    tr_split, te_split, notes = action_splits(data_dir, actions)
    sets = {"train": read_actions(data_dir, tr_split, actions),
            "test": read_actions(data_dir, te_split, actions)}
    outcomes, skipped = [], {}
    for label, tag, fnets in _feature_sets(nets, baseline, seed):
        parts = {}
        for part, persons in sets.items():
            img = opts.extract(fnets, persons.image_index(), f"{tag}-{persons.split}-"
                               f"action-images", ids=persons.image_ids)
            box = opts.extract(fnets, persons.box_index(), f"{tag}-{persons.split}-persons",
                               ids=persons.ids)
            skipped.update(img.skipped)
            skipped.update(box.skipped)
            parts[part] = person_features(img, box, persons)
        for v in variants:
            outcomes.append(score_actions(parts["train"][v], parts["test"][v],
                                          f"{label}, {v}", seed, C_grid, jobs,
                                          solver))
    for part, persons in sets.items():
        if persons.report.problems:
            notes.append(f"{part}: {persons.report.summary()}")
    if skipped:
        notes.append(f"{len(skipped)} unreadable images or boxes: their persons are left "
                     f"out")
    unscored = [a for a in actions if not (sets["test"].targets[:, actions.index(a)]).any()]
    if unscored:
        notes.append(f"no positive test person for {', '.join(unscored)}: not in the mAP")
    n = {k: f"{s.split} ({len(s)} persons in {len(s.image_ids)} images)"
         for k, s in sets.items()}
    return ActionsReport("actions", dataset_name(data_dir), n["train"], n["test"], outcomes,
                         notes, skipped, persons={s.split: s.report.to_dict()
                                                  for s in sets.values()},
                         actions=list(actions))
