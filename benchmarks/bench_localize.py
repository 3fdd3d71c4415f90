"""Localisation (Appendix A) benchmarks, each against a named baseline in the same run.

Sections (``--section``):

- ``merge``: OverFeat greedy merging, ``vgg.localize.greedy_merge`` (vectorised: one score
  matrix per class, cached row minima) against ``greedy_merge_reference`` (every pair in
  Python every iteration), on boxes jittered around 10 objects of 3 labels plus 10%
  outliers, as dense application of a localisation net gives them, for 100, 1,000 and
  5,000 boxes. The two are first checked to give the same result. The reference runs in
  full when its estimated time fits ``--reference-budget``; otherwise its first k merges
  are timed and the whole run extrapolated from its cost per pair visit and the pair
  visits of the merges the fast version performed (both perform the same merges).
- ``threshold``: the sweep behind ``DEFAULT_MERGE_THRESHOLD``: how well merged boxes
  localise the objects of such scenes at several thresholds and jitter levels.
- ``protocol``: images/s of the simple and the full localisation protocol against the
  classification evaluator's dense images/s, same images and nets (those of a
  ``vgg demo`` folder by default: ``--demo DIR``).
- ``all``: every section.

    python benchmarks/bench_localize.py --section merge --write docs/benchmarks.md
    python benchmarks/bench_localize.py --section protocol --demo vgg-demo \\
        --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vgg.localize import box_iou, greedy_merge, greedy_merge_reference  # noqa: E402
from vgg.localize.merge import DEFAULT_MERGE_THRESHOLD, MergeResult  # noqa: E402

HEADING = "## Localisation: greedy merging"


@dataclass
class Scene:
    """Ground-truth objects and the box cloud a dense localisation net predicts for them."""

    objects: Tensor  # (K, 4) xyxy pixels
    object_labels: Tensor  # (K,) int64
    boxes: Tensor  # (N, 4) xyxy pixels
    scores: Tensor  # (N,) class scores of the windows
    labels: Tensor  # (N,) int64


def make_scene(n_boxes: int, gen: torch.Generator, n_objects: int = 10, n_labels: int = 3,
               sigma: float = 0.1, outliers: float = 0.1, width: int = 500,
               height: int = 400) -> Scene:
    """Objects of side 40-200 px in a width x height image; each predicted box is its
    object's box with centre noise sigma x side and log-size noise sigma (a regressor's
    error), class score U[0.5, 1]; a fraction ``outliers`` are uniform random boxes of
    random labels with score U[0, 0.5] (windows on background)."""
    side = torch.rand(n_objects, 2, generator=gen) * 160 + 40
    room = torch.tensor([width, height]) - side
    centre = torch.rand(n_objects, 2, generator=gen) * room + side / 2
    objects = torch.cat((centre - side / 2, centre + side / 2), dim=1)
    object_labels = torch.randint(n_labels, (n_objects,), generator=gen)
    n_out = int(round(outliers * n_boxes))
    owner = torch.arange(n_boxes - n_out) % n_objects  # boxes spread evenly over objects
    s = side[owner]
    c = centre[owner] + torch.randn(len(owner), 2, generator=gen) * sigma * s
    s = s * torch.exp(torch.randn(len(owner), 2, generator=gen) * sigma)
    oc = torch.rand(n_out, 2, generator=gen) * torch.tensor([width, height])
    os_ = torch.rand(n_out, 2, generator=gen) * 160 + 40
    boxes = torch.cat((torch.cat((c - s / 2, c + s / 2), dim=1),
                       torch.cat((oc - os_ / 2, oc + os_ / 2), dim=1)))
    scores = torch.cat((torch.rand(len(owner), generator=gen) * 0.5 + 0.5,
                        torch.rand(n_out, generator=gen) * 0.5))
    labels = torch.cat((object_labels[owner], torch.randint(n_labels, (n_out,), generator=gen)))
    perm = torch.randperm(n_boxes, generator=gen)  # windows arrive in scan order, not by object
    return Scene(objects, object_labels, boxes[perm], scores[perm], labels[perm])


def same_result(a: MergeResult, b: MergeResult, exact: bool) -> bool:
    if a.boxes.shape != b.boxes.shape:
        return False
    close = torch.equal if exact else (lambda x, y: torch.allclose(x, y, rtol=1e-5, atol=1e-4))
    return (close(a.boxes, b.boxes) and torch.allclose(a.scores, b.scores)
            and torch.equal(a.labels, b.labels) and torch.equal(a.counts, b.counts))


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def pair_visits(n: int, scans: int) -> int:
    """Pairs the reference visits in its first ``scans`` scans of n, n - 1, ... boxes; a
    run of m merges makes m + 1 scans (the last finds no pair under the threshold)."""
    return sum((n - t) * (n - t - 1) // 2 for t in range(scans))


def time_reference(scene: Scene, merges: int, budget: float) -> tuple[float, str]:
    """(seconds, how): the full run if its estimate fits the budget, else extrapolated
    from the first k merges' cost per pair visit, which stays nearly constant over a run
    (1,000 boxes: 641, 635, 629, 624, 623 ns per visit over the first 1, 5, 50, 200, 500
    merges)."""
    n = len(scene.boxes)
    args = (scene.boxes, scene.scores, scene.labels)
    t1 = best_of(lambda: greedy_merge_reference(*args, max_merges=1), 1)
    per_visit = t1 / pair_visits(n, 1)
    total_visits = pair_visits(n, merges + 1)
    if per_visit * total_visits <= budget:
        return best_of(lambda: greedy_merge_reference(*args), 1), "full run"
    # Enough merges to fill a third of the budget, then extrapolate by pair visits.
    k = 1
    while k < merges and per_visit * pair_visits(n, k + 1) <= budget / 3:
        k += 1
    t = t1 if k == 1 else best_of(lambda: greedy_merge_reference(*args, max_merges=k), 1)
    return t / pair_visits(n, k) * total_visits, f"extrapolated from {k} iteration{'s' * (k > 1)}"


def section_merge(args: argparse.Namespace) -> str:
    gen = torch.Generator().manual_seed(args.seed)
    check = make_scene(100, gen)
    check64 = Scene(check.objects, check.object_labels, check.boxes.double(),
                    check.scores.double(), check.labels)
    ok64 = same_result(greedy_merge(check64.boxes, check64.scores, check64.labels),
                       greedy_merge_reference(check64.boxes, check64.scores, check64.labels),
                       exact=True)
    ok32 = same_result(greedy_merge(check.boxes, check.scores, check.labels),
                       greedy_merge_reference(check.boxes, check.scores, check.labels),
                       exact=False)
    if not (ok64 and ok32):
        raise SystemExit("greedy_merge and greedy_merge_reference disagree on the 100-box scene")
    rows = []
    load0 = os.getloadavg()[0]
    for n in args.sizes:
        scene = make_scene(n, gen)
        call = lambda s=scene: greedy_merge(s.boxes, s.scores, s.labels)  # noqa: E731
        result = call()  # warm-up, and the number of merges
        merges = n - len(result.boxes)
        fast = best_of(call, args.repeats)
        ref, how = time_reference(scene, merges, args.reference_budget)
        rows.append(f"| {n:,} | {merges:,} | {len(result.boxes)} | {fast:.4f} | "
                    f"{ref:.2f}{'' if how == 'full run' else f' ({how})'} | {ref / fast:,.0f}x |")
        print(rows[-1], flush=True)
    cmd = "python benchmarks/bench_localize.py" + "".join(f" {a}" for a in sys.argv[1:])
    return "\n".join([
        f"Command: `{cmd}` ({platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, float32 CPU tensors; 1-minute load average {load0:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores).",
        "",
        "Input: boxes jittered around 10 objects of 3 labels (centre noise 10% of the side, "
        "log-size noise 0.1) plus 10% uniform outlier boxes, in a 500x400 image; threshold "
        f"{DEFAULT_MERGE_THRESHOLD}. Both implementations were checked to give the same "
        "result on a 100-box scene (bit-identical in float64) before timing. "
        f"`greedy_merge`: best of {args.repeats} runs; reference: one run.",
        "",
        "| boxes | merges | merged boxes | `greedy_merge` (s) | `greedy_merge_reference` (s) "
        "| speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "The reference scores every same-label pair in Python at every merge, O(N^3) in all; "
        "`greedy_merge` computes each class's score matrix once and then does O(N) tensor "
        "work per merge (the merged box's row and column, plus rescans of the rows whose "
        "minimum it removed). Extrapolated times assume the reference's cost per pair visit "
        "stays that of its first iterations.",
    ])


def localisation_quality(scenes: list[Scene], threshold: float) -> tuple[float, float, float]:
    """(merged boxes holding >= 5 windows per object, recall, top-1 accuracy) in %: recall
    matches the top-n merged boxes of each class (n = its objects) to objects at IoU > 0.5;
    top-1 = the best-scoring merged box of each class present overlaps one of its objects
    at IoU > 0.5 (the ILSVRC criterion)."""
    big = found = top1 = classes = objects = 0
    for sc in scenes:
        r = greedy_merge(sc.boxes, sc.scores, sc.labels, threshold)
        big += int((r.counts >= 5).sum())
        objects += len(sc.objects)
        for c in sc.object_labels.unique().tolist():
            obj = sc.objects[sc.object_labels == c]
            mine = r.labels == c
            ranked = r.boxes[mine][r.scores[mine].argsort(descending=True)][:len(obj)]
            iou = box_iou(ranked, obj)
            used: set[int] = set()
            for row in iou:  # greedy one-to-one matching in score order
                free = [q for q in row.argsort(descending=True).tolist()
                        if q not in used and row[q] > 0.5]
                used.update(free[:1])
            found += len(used)
            top1 += bool(len(iou)) and bool((iou[0] > 0.5).any())
            classes += 1
    return 100 * big / objects, 100 * found / objects, 100 * top1 / classes


def section_threshold(args: argparse.Namespace) -> str:
    header = ["| jitter (sigma) | " + " | ".join(f"t = {t:g}" for t in args.thresholds) + " |",
              "|---|" + "---:|" * len(args.thresholds)]
    rows = []
    for sigma in args.sigmas:
        gen = torch.Generator().manual_seed(args.seed)
        scenes = [make_scene(args.sweep_boxes, gen, sigma=sigma) for _ in range(args.scenes)]
        cells = [localisation_quality(scenes, t) for t in args.thresholds]
        rows.append(f"| {sigma:g} | " + " | ".join(
            f"{big / 100:.2f} / {rec:.1f}% / {t1:.1f}%" for big, rec, t1 in cells) + " |")
        print(rows[-1], flush=True)
    cmd = "python benchmarks/bench_localize.py" + "".join(f" {a}" for a in sys.argv[1:])
    return "\n".join([
        f"Command: `{cmd}`.",
        "",
        f"{args.scenes} scenes per row of {args.sweep_boxes} boxes: 10 objects of 3 labels "
        "(side 40-200 px in 500x400) with centre noise sigma x side and log-size noise sigma, "
        "plus 10% uniform outlier boxes of lower score. Each cell: merged boxes holding >= 5 "
        "windows per object (1 = one per object) / recall (the top-n merged boxes of each "
        "class, n = its objects, matched one-to-one at IoU > 0.5) / top-1 (the best-scoring "
        "merged box of each class has IoU > 0.5 with one of its objects, the ILSVRC "
        "criterion).",
        "",
        *header,
        *rows,
    ])


def section_protocol(args: argparse.Namespace) -> str:
    """Images/s of the localisation protocols against the classification evaluator's
    dense images/s, on the same images and nets, in one run (end to end: decoding,
    rescaling, nets, merging)."""
    from vgg.checkpoint import load_checkpoint
    from vgg.eval import evaluate
    from vgg.localize.data import box_index
    from vgg.localize.evaluate import full_protocol, simple_protocol

    demo = args.demo
    cls = args.classifier or demo / "run" / "best.pt"
    loc = args.loc or demo / "localize" / "best.pt"
    data = args.data or demo / "data"
    for p in (cls, loc, data):
        if not Path(p).exists():
            raise SystemExit(f"{p} not found: run `vgg demo --out {demo}` first, or give "
                             f"--classifier, --loc and --data")
    torch.set_num_threads(args.protocol_threads)
    classes = load_checkpoint(loc).classes
    index, _ = box_index(data, "val", classes, quiet=True)
    if args.limit and args.limit < len(index):
        index = index.subset(list(range(0, len(index), len(index) // args.limit))[:args.limit])
    q = load_checkpoint(loc).meta.get("train_scale", [None])[0]
    kw = dict(workers=args.workers, progress=False, batch_size=16)
    runs = [("classification dense (image + mirror)",
             lambda: evaluate(str(cls), index, method="dense", scales=[q], **kw)),
            ("localisation simple (centre crop)",
             lambda: simple_protocol(str(loc), index, q, **kw)),
            ("localisation full (dense boxes + classifier + merging)",
             lambda: full_protocol(str(loc), str(cls), index, [q], **kw))]
    times = {}
    for _ in range(args.repeats):
        for name, fn in runs:
            t = time.perf_counter()
            fn()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - t)
    base = times[runs[0][0]]
    rows = [f"| {name} | {len(index) / t:.1f} | {base / t:.2f}x |" for name, t in times.items()]
    cmd = "python benchmarks/bench_localize.py " + " ".join(sys.argv[1:])
    return "\n".join([
        f"Command: `{cmd}` ({platform.machine()}, {args.protocol_threads} threads, torch "
        f"{torch.__version__}); {len(index)} validation images of the demo's shapes set, "
        f"the demo's classification net and PCR net (A-BN, crop 32), Q = {q}, best of "
        f"{args.repeats} interleaved runs, end to end (decode, rescale, nets, merging).",
        "", "| protocol | images/s | vs classification dense |", "|---|---:|---:|", *rows, "",
        "The full protocol runs the classification net densely twice (once for the image's "
        "top-5 classes, once more for the per-position class scores of those classes) and "
        "the localisation net densely once, then merges per image and class: about a third "
        "of classification dense's rate is what that costs."])


# name -> (function, docs marker, docs subheading)
SECTIONS: dict[str, tuple[Callable[[argparse.Namespace], str], str, str]] = {
    "merge": (section_merge, "merge", "Merge speed"),
    "threshold": (section_threshold, "merge-threshold", "Merge threshold"),
    "protocol": (section_protocol, "loc-protocol", "Protocol speed"),
}


def write(path: Path, name: str, title: str, text: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``; a new
    block goes under the localisation heading (appended at the end if missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        if HEADING not in doc:
            doc = doc.rstrip("\n") + f"\n\n{HEADING}\n"
        doc = doc.rstrip("\n") + f"\n\n### {title}\n\n{block}\n"
    path.write_text(doc)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--section", choices=[*SECTIONS, "all"], default="merge")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100, 1000, 5000], help="merge: box counts (default 100,1000,5000)")
    ap.add_argument("--reference-budget", type=float, default=60.0,
                    help="merge: seconds the reference may run before its time is "
                         "extrapolated (default 60)")
    ap.add_argument("--repeats", type=int, default=3, help="merge: runs of greedy_merge, best kept")
    ap.add_argument("--thresholds", type=floats, default=[0.5, 0.75, 1.0, 1.5],
                    help="threshold: merge thresholds (default 0.5,0.75,1,1.5)")
    ap.add_argument("--sigmas", type=floats, default=[0.05, 0.1, 0.2],
                    help="threshold: jitter levels (default 0.05,0.1,0.2)")
    ap.add_argument("--scenes", type=int, default=40, help="threshold: scenes per row")
    ap.add_argument("--sweep-boxes", type=int, default=660, help="threshold: boxes per scene")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the reference is single-threaded Python)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo", type=Path, default=Path("vgg-demo"),
                    help="protocol: a `vgg demo` output folder (its nets and data)")
    ap.add_argument("--classifier", type=Path, default=None, help="protocol: classifier")
    ap.add_argument("--loc", type=Path, default=None, help="protocol: localisation net")
    ap.add_argument("--data", type=Path, default=None, help="protocol: dataset with boxes")
    ap.add_argument("--limit", type=int, default=300, help="protocol: validation images")
    ap.add_argument("--workers", type=int, default=2, help="protocol: loader processes")
    ap.add_argument("--protocol-threads", type=int, default=2,
                    help="protocol: torch threads (default 2)")
    ap.add_argument("--write", type=Path, default=None,
                    help="replace this section's block in a markdown file (docs/benchmarks.md)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in SECTIONS if args.section == "all" else [args.section]:
        fn, marker, title = SECTIONS[name]
        text = fn(args)
        print(text)
        if args.write is not None:
            write(args.write, marker, title, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
