"""The data layer: index datasets as users have them, decode robustly, apply the paper's
transforms (Sect. 3.1 / 3.2), load deterministic uint8 batches, and make the embedded
shapes dataset. See docs/data.md."""

from .decode import decode_image, image_size, pil_to_uint8
from .folders import (Box, ImageIndex, index_csv, index_folder, index_imagenet_val,
                      index_split, index_voc, read_voc_xml)
from .loaders import EpochSampler, ImageDataset, collate, make_loader
from .transforms import (CenterCropTransform, ColourStats, DeviceAugment, RescaleTransform,
                         TrainTransform, crop_grid, rescale_size)

__all__ = ["Box", "CenterCropTransform", "ColourStats", "DeviceAugment", "EpochSampler",
           "ImageDataset", "ImageIndex", "RescaleTransform", "TrainTransform", "collate",
           "crop_grid", "decode_image", "image_size", "index_csv", "index_folder",
           "index_imagenet_val", "index_split", "index_voc", "make_loader", "pil_to_uint8",
           "read_voc_xml", "rescale_size"]
