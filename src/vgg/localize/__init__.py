"""Localisation (Appendix A): box geometry and regression parameters, OverFeat greedy
merging of the boxes predicted by dense application of a localisation net, the simple and
full testing protocols, their results (ILSVRC localisation error, baselines, saved boxes)
and the fusion of saved results."""

from .boxes import (box_area, box_iou, class_params, clip_boxes, cxcywh_to_xyxy, decode,
                    encode, hflip_boxes, intersection_area, scale_boxes, shift_boxes,
                    visible_fraction, xyxy_to_cxcywh)
from .evaluate import LocNet, as_loc_net, full_protocol, simple_protocol
from .fusion import fuse_results, fuse_saved, merge_guesses
from .merge import (DEFAULT_MERGE_THRESHOLD, MergeResult, greedy_merge,
                    greedy_merge_reference, match_score)
from .predict import BoxPrediction, draw_guesses, predict_boxes
from .result import LocResult, load_saved
from .scoring import IOU_CORRECT, correct_at

__all__ = [
    "DEFAULT_MERGE_THRESHOLD", "IOU_CORRECT", "BoxPrediction", "LocNet", "LocResult",
    "MergeResult", "as_loc_net", "box_area", "box_iou", "class_params", "clip_boxes",
    "correct_at", "cxcywh_to_xyxy", "decode", "draw_guesses", "encode", "full_protocol",
    "fuse_results", "fuse_saved", "greedy_merge", "greedy_merge_reference", "hflip_boxes",
    "intersection_area", "load_saved", "match_score", "merge_guesses", "predict_boxes",
    "scale_boxes", "shift_boxes", "simple_protocol", "visible_fraction", "xyxy_to_cxcywh",
]
