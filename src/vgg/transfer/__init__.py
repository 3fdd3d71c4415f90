"""Very deep features on other datasets (Appendix B): dense multi-scale descriptors of a
fixed net (:mod:`.features`), linear SVMs with the regularisation chosen on held-out
training images (:mod:`.svm`), and the protocols of Tables 11 and 12 — VOC mean average
precision, Caltech mean class recall over random splits, box-level classification
(:mod:`.protocols`)."""

from .features import (DEFAULT_LAYER, ExtractOptions, Features, FeatureNet, dense_descriptor,
                       extract_features, extract_with, paper_scales, random_like,
                       stack_features)

__all__ = ["DEFAULT_LAYER", "ExtractOptions", "FeatureNet", "Features", "dense_descriptor",
           "extract_features", "extract_with", "paper_scales", "random_like", "stack_features"]
