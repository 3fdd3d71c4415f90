"""Sect. 3.2 testing: dense, multi-crop, multi-scale and fused evaluation with top-1/top-5
error, saved posteriors and their fusion, and top-k prediction for users."""

from ..data.rescaled import size_buckets
from .dense import dense_posteriors
from .evaluate import EvalNet, as_net, evaluate
from .fusion import Posteriors, check_same_classes, fuse, load_and_fuse
from .metrics import confused_pairs, per_class_accuracy, summarize, top1_error, top5_error
from .multicrop import center_posteriors, grid_crops, grid_offsets, multicrop_posteriors
from .predict import Prediction, predict
from .results import METHODS, EvalResult, Piece, fuse_results, result_from_posteriors
from .scales import default_scales, parse_scales

__all__ = [
    "METHODS", "EvalNet", "EvalResult", "Piece", "Posteriors", "Prediction", "as_net",
    "center_posteriors", "check_same_classes", "confused_pairs", "default_scales",
    "dense_posteriors", "evaluate", "fuse", "fuse_results", "grid_crops", "grid_offsets",
    "load_and_fuse", "multicrop_posteriors", "parse_scales", "per_class_accuracy", "predict",
    "result_from_posteriors", "size_buckets", "summarize", "top1_error", "top5_error",
]
