"""Mask R-CNN as nn.Modules built on `mrcnn_edu.ops` (lessons 05 and 08-10)."""
