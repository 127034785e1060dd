"""The numpy/numba reference implementation of every Mask R-CNN stage, one module per lesson.

numpy arrays in, numpy arrays out; numba where the algorithm is a loop; never imports torch.
Each public name here has a torch twin of the same name in `mrcnn_edu.ops`.
"""
