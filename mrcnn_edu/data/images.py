"""Decoding an image file into the model's input: float32 (3, H, W) RGB in [0, 1] (lesson 00).

    image = read_image("photo.jpg")          # the dataset and `predict` both load images here
    pixels = read_rgb("photo.jpg")           # uint8 (H, W, 3), for drawing and checking

Conversion follows the file's bit depth. 8-bit files (L, P, RGB, RGBA, CMYK, ...) become RGB
through PIL and are divided by 255. 16-bit grayscale (PIL modes "I;16*", and "I", which PIL
uses for 16-bit PNGs too) is divided by 65535 and repeated into R, G and B: PIL's own
conversion to RGB clips every value above 255, which turns such an image nearly white.
"""
import numpy as np
import torch
from PIL import Image

from .validate import CocoFormatError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MAX_16_BIT = 65535


def read_image(path, image_id=None):
    """Decode an image file to float32 (3, H, W) RGB in [0, 1], by its actual bit depth."""
    pixels, max_value = _decode(path, image_id)  # (H, W, 3), max_value 255 or 65535
    # numpy, not torch: single-threaded and ~100x faster here when the cores are busy
    # (torch's thread pool spins); bit-identical to torch's .float().div_(255)
    chw = np.divide(pixels.transpose(2, 0, 1), np.float32(max_value), dtype=np.float32,
                    order="C")
    return torch.from_numpy(chw)  # (3, H, W)


def read_rgb(path, image_id=None):
    """Decode an image file to uint8 (H, W, 3) RGB; 16-bit levels are scaled to 0..255."""
    pixels, max_value = _decode(path, image_id)
    if max_value == 255:
        return pixels
    return np.rint(pixels * (255 / max_value)).astype(np.uint8)  # (H, W, 3)


def _decode(path, image_id=None):
    """(pixels (H, W, 3), max_value): uint8 and 255, or 16-bit levels as int32 and 65535."""
    where = f" (image id {image_id})" if image_id is not None else ""
    try:
        with Image.open(path) as img:
            img.load()  # PIL decodes lazily: force it here so truncation surfaces here
            if img.mode in SIXTEEN_BIT_MODES:
                gray = np.clip(np.asarray(img, dtype=np.int32), 0, MAX_16_BIT)  # (H, W)
                return np.repeat(gray[:, :, None], 3, axis=2), MAX_16_BIT
            # P with transparency goes through RGBA so the palette's alpha is handled by PIL
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return np.array(img.convert("RGB")), 255  # a writable copy, so torch may share it
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}{where}") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for truncated/corrupt data
        raise CocoFormatError(f"{path}: cannot decode image{where}: {err}") from err
