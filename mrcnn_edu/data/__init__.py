"""COCO data: loading, synthetic shapes and subsets (lesson 00)."""
