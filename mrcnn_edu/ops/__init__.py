"""The PyTorch twins of `mrcnn_edu.reference`: same names, same signatures, same contracts.

torch tensors in, torch tensors out, on any device, float32 or float64; vectorised, because
this is what the model in `mrcnn_edu.model` trains with.
"""
