"""Images in, arrays out: decode PNG/JPEG uploads and preprocess them as the model's `<name>.json`
says (its `"image"` block, checked and completed with defaults by catalog.image_config).

Steps for each image, in this order (the README's "Image models" tells the same):
  1. at most `max_bytes` bytes (the gateway checks too);
  2. Pillow opens it as PNG or JPEG only (other formats are never tried), reading just the header;
  3. width x height at most `max_pixels`, checked before any pixel is decoded (decompression
     bombs: a 50 KB PNG can declare 50000 x 50000 pixels);
  4. decode; a JPEG's EXIF orientation is applied; a transparent image is laid on white;
  5. convert to `mode` ("L" grayscale or "RGB") and resize to `size` [width, height];
  6. to numbers: `invert` (255 - v: a dark drawing on white becomes a bright one on black, as
     scikit-learn's digits are), then either `scale` (v * scale) or `range` [lo, hi] (0..255
     mapped linearly onto lo..hi), then `mean`/`std` per channel ((v - mean) / std);
  7. `layout`: "NCHW" (1 or 3, h, w), "NHWC" (h, w, 1 or 3) or "flat" (h * w * channels, in
     row-major h, w, channel order), as `dtype` (float32, float64 or uint8).
`preprocess` stacks the results into one array of shape (images, ...). A file that is not a PNG
or JPEG, or is cut short or corrupt, is a 422 naming the image (1-based, in request order); one
that is too large a 413. Pillow's errors never escape as anything else.

Runs in worker processes (the gateway never imports Pillow).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rbridge.errors import InvalidInput, TooLarge

FORMATS = ("PNG", "JPEG")
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX}


def preprocess(config: dict, images: list[bytes]) -> np.ndarray:
    """The images as one array the model takes: shape (len(images), ...) per `config`."""
    return np.stack([to_array(config, data, i) for i, data in enumerate(images, start=1)])


def to_array(config: dict, data: bytes, index: int = 1) -> np.ndarray:
    """One image's array (without the leading images axis)."""
    image = decode(config, data, index)
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]                  # (h, w, 1): one layout code for both modes
    if config["invert"]:
        pixels = 255.0 - pixels
    if config.get("range") is not None:
        lo, hi = config["range"]
        pixels = lo + pixels * ((hi - lo) / 255.0)
    else:
        pixels = pixels * config["scale"]
    if config.get("mean") is not None:
        pixels = (pixels - np.asarray(config["mean"])) / np.asarray(config["std"])
    layout = config["layout"]
    if layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    elif layout == "flat":
        pixels = pixels.reshape(-1)
    if config["dtype"] == "uint8":
        pixels = np.clip(np.rint(pixels), 0, 255)
    return np.ascontiguousarray(pixels, dtype=config["dtype"])


def decode(config: dict, data: bytes, index: int = 1) -> Image.Image:
    """Steps 1-5: a Pillow image of `mode` and `size`, or the request's 413/422."""
    where = f"image {index}"
    if len(data) > config["max_bytes"]:
        raise TooLarge(f"{where} is {len(data)} bytes; this model takes images of at most "
                       f"{config['max_bytes']} bytes (image.max_bytes)", code="image_too_large")
    if not data:
        raise InvalidInput(f"{where} is empty; send a PNG or JPEG file", code="invalid_image")
    max_pixels = config["max_pixels"]
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (MAX_IMAGE_PIXELS) as a backstop behind ours.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(f"{where} is {width} x {height} = {width * height} pixels; this model "
                               f"takes at most {max_pixels} (image.max_pixels)", code="image_too_large")
            image.load()
            image = _upright(image)
            image = _on_white(image).convert(config["mode"])
            if image.size != tuple(config["size"]):
                image = image.resize(tuple(config["size"]), RESAMPLE[config["resample"]])
            return image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise TooLarge(f"{where} has too many pixels: {exc}", code="image_too_large") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{where} is not a PNG or JPEG image", code="invalid_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:    # truncated, bad CRC, bad header
        raise InvalidInput(f"{where} is corrupt or cut short: {exc}", code="invalid_image") from None


def blank(config: dict) -> bytes:
    """A white PNG of the model's size and mode: what an image model's warm-up scores."""
    out = io.BytesIO()
    Image.new(config["mode"], tuple(config["size"]), "white").save(out, "PNG")
    return out.getvalue()


def _upright(image: Image.Image) -> Image.Image:
    """A photo as it is meant to be seen: a JPEG's EXIF orientation applied."""
    if image.format == "JPEG":
        return ImageOps.exif_transpose(image)
    return image


def _on_white(image: Image.Image) -> Image.Image:
    """A transparent image laid on a white background (a drawing with a clear background would
    otherwise turn black where it is clear)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image
