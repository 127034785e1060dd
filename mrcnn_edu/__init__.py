"""mrcnn_edu: Mask R-CNN from scratch, one stage at a time."""
