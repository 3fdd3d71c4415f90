"""Localisation (Appendix A): box geometry and regression parameters, and OverFeat greedy
merging of the boxes predicted by dense application of a localisation net."""

from .boxes import (box_area, box_iou, clip_boxes, cxcywh_to_xyxy, decode, encode,
                    hflip_boxes, intersection_area, scale_boxes, shift_boxes,
                    visible_fraction, xyxy_to_cxcywh)
from .merge import (DEFAULT_MERGE_THRESHOLD, MergeResult, greedy_merge,
                    greedy_merge_reference, match_score)

__all__ = [
    "DEFAULT_MERGE_THRESHOLD", "MergeResult", "box_area", "box_iou", "clip_boxes",
    "cxcywh_to_xyxy", "decode", "encode", "greedy_merge", "greedy_merge_reference",
    "hflip_boxes", "intersection_area", "match_score", "scale_boxes", "shift_boxes",
    "visible_fraction", "xyxy_to_cxcywh",
]
