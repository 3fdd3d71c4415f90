"""The data layer: index datasets as users have them, load their box annotations, decode
robustly, apply the paper's transforms (Sect. 3.1 / 3.2), load deterministic uint8
batches, batch the images rescaled to the test scales every evaluator reads, choose the
training and validation images (splits, file lists, --val-split), split a folder of
classes, and make the embedded shapes dataset. See docs/data.md."""

from .annotated import index_detection_csv, index_voc
from .annotations import load_boxes
from .box_formats import read_voc_xml
from .boxes import Box, BoxReport
from .decode import (IMAGE_EXTENSIONS, decode_image, image_size, pil_to_uint8,
                     sniff_image_format)
from .folders import index_split
from .imagefolder import index_folder, index_imagenet_val
from .index import ImageIndex
from .lists import index_csv, index_list
from .loaders import BadImages, EpochSampler, ImageDataset, collate, make_loader
from .scan import list_images
from .sources import DataSpec, eval_index, train_val_indexes
from .split import split_folder, split_index, stratified_split
from .transforms import (CenterCropTransform, ColourStats, DeviceAugment, RescaleTransform,
                         TrainTransform, rescale_size)

__all__ = ["IMAGE_EXTENSIONS", "BadImages", "Box", "BoxReport", "CenterCropTransform",
           "ColourStats", "DataSpec", "DeviceAugment", "EpochSampler", "ImageDataset",
           "ImageIndex", "RescaleTransform", "TrainTransform", "collate", "decode_image",
           "eval_index", "image_size", "index_csv", "index_detection_csv", "index_folder",
           "index_imagenet_val", "index_list", "index_split", "index_voc", "list_images",
           "load_boxes", "make_loader", "pil_to_uint8", "read_voc_xml", "rescale_size",
           "sniff_image_format", "split_folder", "split_index", "stratified_split",
           "train_val_indexes"]
