"""Image preprocessing (rbridge/worker/images.py) and the "image" block of <name>.json
(catalog.image_config), without a server: decoding, the arithmetic of each key, the limits, and
every kind of bad file becoming a 413/422 that names the image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="the python-models extra (Pillow) is not installed")
from PIL import Image  # noqa: E402

from rbridge.errors import InvalidInput, TooLarge  # noqa: E402
from rbridge.models.catalog import image_config  # noqa: E402
from rbridge.worker import images  # noqa: E402


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality=95) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def config(**keys) -> dict:
    return image_config({"size": [4, 3], **keys}, "t.json: image")


def gradient_rgb(w=4, h=3) -> np.ndarray:
    """A (h, w, 3) uint8 image whose every pixel and channel differ."""
    return (np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3) * 7)


# ------------------------------------------------------------------ arithmetic and layout
def test_rgb_layouts_keep_every_pixel_in_its_place():
    pixels = gradient_rgb()
    data = png(Image.fromarray(pixels, "RGB"))
    nchw = images.preprocess(config(), [data, data])
    assert nchw.shape == (2, 3, 3, 4) and nchw.dtype == np.float32
    np.testing.assert_array_equal(nchw[0], pixels.transpose(2, 0, 1))
    nhwc = images.preprocess(config(layout="NHWC"), [data])
    np.testing.assert_array_equal(nhwc[0], pixels)
    flat = images.preprocess(config(layout="flat", dtype="float64"), [data])
    assert flat.shape == (1, 36) and flat.dtype == np.float64
    np.testing.assert_array_equal(flat[0], pixels.reshape(-1))
    raw = images.preprocess(config(layout="NHWC", dtype="uint8"), [data])
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[0], pixels)


def test_scale_range_invert_mean_std():
    pixels = gradient_rgb()
    data = png(Image.fromarray(pixels, "RGB"))
    v = pixels.astype(np.float64).transpose(2, 0, 1)
    scaled = images.preprocess(config(scale=1 / 255, dtype="float64"), [data])[0]
    np.testing.assert_allclose(scaled, v / 255)
    ranged = images.preprocess(config(range=[0, 16], invert=True, dtype="float64"), [data])[0]
    np.testing.assert_allclose(ranged, (255 - v) * 16 / 255)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    norm = images.preprocess(config(scale=1 / 255, mean=mean, std=std, dtype="float64"), [data])[0]
    np.testing.assert_allclose(norm, (v / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None])


def test_grayscale_and_resize_follow_pillow():
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB")
    got = images.preprocess(config(mode="L", layout="NHWC"), [png(rgb)])[0]
    want = np.asarray(rgb.convert("L").resize((4, 3), Image.Resampling.BILINEAR), dtype=np.float32)
    assert got.shape == (3, 4, 1)
    np.testing.assert_array_equal(got[:, :, 0], want)
    nearest = images.preprocess(config(mode="L", layout="flat", resample="nearest"), [png(rgb)])[0]
    np.testing.assert_array_equal(nearest, np.asarray(rgb.convert("L").resize((4, 3), Image.Resampling.NEAREST)).reshape(-1))


def test_transparent_background_is_white():
    rgba = np.zeros((3, 4, 4), np.uint8)          # all clear ...
    rgba[1, 2] = (0, 0, 0, 255)                   # ... but one opaque black pixel
    got = images.preprocess(config(mode="L", layout="NHWC"), [png(Image.fromarray(rgba, "RGBA"))])[0][:, :, 0]
    want = np.full((3, 4), 255.0)
    want[1, 2] = 0
    np.testing.assert_array_equal(got, want)


def test_jpeg_decodes_like_pillow():
    rgb = Image.fromarray(np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8), "RGB")
    data = jpeg(rgb)
    got = images.preprocess(config(layout="NHWC"), [data])[0]
    np.testing.assert_array_equal(got, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32))


def test_digits_convention_dark_ink_on_white_reads_as_the_dataset():
    """scikit-learn's digits are 0..16, ink bright on black; an upload is a dark digit on white.
    With invert and range [0, 16], a dataset image saved the way people draw reads back as itself
    (to the 8-bit rounding of the PNG)."""
    sklearn = pytest.importorskip("sklearn.datasets")
    digit = sklearn.load_digits().images[0]                      # (8, 8), 0..16
    drawn = np.rint(255 - digit * 255 / 16).astype(np.uint8)     # dark on white
    cfg = image_config({"size": [8, 8], "mode": "L", "invert": True, "range": [0, 16], "layout": "flat"}, "d")
    got = images.preprocess(cfg, [png(Image.fromarray(drawn, "L"))])[0]
    np.testing.assert_allclose(got, digit.reshape(-1), atol=16 / 255 / 2 + 1e-6)


# ------------------------------------------------------------------ bad files and limits
def _error(exc_type, cfg, blobs):
    with pytest.raises(exc_type) as info:
        images.preprocess(cfg, blobs)
    return info.value


def test_not_an_image_names_the_image():
    good = png(Image.new("RGB", (4, 3)))
    err = _error(InvalidInput, config(), [good, b"hello, I am text"])
    assert err.status == 422 and err.code == "invalid_image"
    assert err.message == "image 2 is not a PNG or JPEG image"
    assert _error(InvalidInput, config(), [b""]).message.startswith("image 1 is empty")


def test_other_formats_are_not_tried():
    gif = io.BytesIO()
    Image.new("RGB", (4, 3)).save(gif, "GIF")
    assert _error(InvalidInput, config(), [gif.getvalue()]).message == "image 1 is not a PNG or JPEG image"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_and_jpeg_are_422(cut):
    noisy = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    for data in (png(noisy), jpeg(noisy)):
        err = _error(InvalidInput, config(), [data[:int(len(data) * cut)]])
        assert err.status == 422 and "image 1 is corrupt or cut short" in err.message


def test_bad_crc_is_422():
    data = bytearray(png(Image.new("RGB", (4, 3), "white")))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF                         # a byte of the compressed pixels
    err = _error(InvalidInput, config(), [bytes(data)])
    assert "corrupt" in err.message


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds (almost) no pixels: a decompression bomb's header."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_too_many_pixels_is_413_before_decoding():
    err = _error(TooLarge, config(max_pixels=10_000), [_png_header_only(101, 100)])
    assert err.status == 413 and err.code == "image_too_large"
    assert err.message == ("image 1 is 101 x 100 = 10100 pixels; this model takes at most 10000 "
                           "(image.max_pixels)")
    # far past Pillow's own limit: refused by Pillow while reading the header, the same 413
    err = _error(TooLarge, config(), [_png_header_only(100_000, 100_000)])
    assert err.status == 413 and "too many pixels" in err.message


def test_too_many_bytes_is_413():
    data = png(Image.new("RGB", (4, 3)))
    err = _error(TooLarge, config(max_bytes=len(data) - 1), [data])
    assert err.message == (f"image 1 is {len(data)} bytes; this model takes images of at most "
                           f"{len(data) - 1} bytes (image.max_bytes)")


# ------------------------------------------------------------------ the "image" block
def test_defaults_fill_in():
    cfg = image_config({"size": [8, 8]}, "d.json: image")
    assert cfg["mode"] == "RGB" and cfg["layout"] == "NCHW" and cfg["dtype"] == "float32"
    assert cfg["max_images"] == 32 and cfg["max_pixels"] == 4096 * 4096


@pytest.mark.parametrize("block, message", [
    ({}, 'd.json: image must be an object with at least "size": [width, height]'),
    ({"size": [8]}, "d.json: image.size must be [width, height] in pixels, each 1 to 4096"),
    ({"size": [8, 0]}, "d.json: image.size must be [width, height] in pixels, each 1 to 4096"),
    ({"size": [8, 8], "mode": "CMYK"}, "d.json: image.mode must be one of L, RGB"),
    ({"size": [8, 8], "layout": "CHW"}, "d.json: image.layout must be one of NCHW, NHWC, flat"),
    ({"size": [8, 8], "dtype": "int64"}, "d.json: image.dtype must be one of float32, float64, uint8"),
    ({"size": [8, 8], "scale": 0.1, "range": [0, 1]}, "d.json: image: give scale or range, not both"),
    ({"size": [8, 8], "range": [16, 0]}, "d.json: image.range must be [low, high], what 0 and 255 "
                                         "become (e.g. [0, 16])"),
    ({"size": [8, 8], "mean": [0.5]}, "d.json: image: mean and std go together"),
    ({"size": [8, 8], "mean": [0.5], "std": [0.2]},
     "d.json: image.mean must be a list of 3 number(s), one per channel of mode RGB"),
    ({"size": [8, 8], "mode": "L", "mean": [0.5], "std": [0]},
     "d.json: image.std must be a list of 1 number(s), one per channel of mode L, each above 0"),
    ({"size": [8, 8], "max_images": 0}, "d.json: image.max_images must be a whole number, at least 1"),
    ({"size": [8, 8], "invert": "yes"}, "d.json: image.invert must be true or false"),
    ({"size": [8, 8], "dtype": "uint8", "scale": 2}, "d.json: image: dtype uint8 takes the pixels as they "
                                                     "are; leave out scale, range, mean and std"),
    ({"size": [8, 8], "colour": "L"}, "d.json: image: unknown key(s) colour; allowed: dtype, invert, "
                                      "layout, max_bytes, max_images, max_pixels, mean, mode, range, "
                                      "resample, scale, size, std"),
])
def test_bad_blocks_name_the_key(block, message):
    with pytest.raises(ValueError) as info:
        image_config(block, "d.json: image")
    assert str(info.value) == message


# ------------------------------------------------------------------ the catalogue reads them
def test_catalog_fills_the_image_block_in_and_refuses_keys_of_another_kind(tmp_path):
    import json
    from rbridge.models.catalog import read_entry
    (tmp_path / "d.onnx").write_bytes(b"onnx")
    (tmp_path / "d.json").write_text(json.dumps({"image": {"size": [8, 8], "mode": "L"},
                                                  "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}))
    entry = read_entry(tmp_path, "d")
    assert entry.error is None
    assert entry.spec.image == {**image_config({"size": [8, 8], "mode": "L"}, "x")}
    assert entry.spec.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    (tmp_path / "d.json").write_text(json.dumps({"image": {"size": [8, 8], "layout": "CHW"}}))
    assert read_entry(tmp_path, "d").error == "d.json: image.layout must be one of NCHW, NHWC, flat"
    (tmp_path / "d.json").write_text(json.dumps({"providers": "CUDAExecutionProvider"}))
    assert read_entry(tmp_path, "d").error.startswith("d.json: providers must be a list of onnxruntime "
                                                      "execution providers")
    (tmp_path / "s.joblib").write_bytes(b"joblib")
    (tmp_path / "s.json").write_text(json.dumps({"providers": ["CPUExecutionProvider"]}))
    assert read_entry(tmp_path, "s").error == "s.json: providers are onnxruntime's and apply to .onnx models only"
    (tmp_path / "r.rds").write_bytes(b"rds")
    (tmp_path / "r.json").write_text(json.dumps({"image": {"size": [8, 8]}}))
    assert read_entry(tmp_path, "r").error == ("r.json: image applies to Python models (.joblib, .pkl, .onnx); "
                                               "an R model takes rows")


def test_onnx_providers_this_onnxruntime_lacks_fail_the_model_naming_those_it_has():
    ort = pytest.importorskip("onnxruntime")
    from pathlib import Path
    from rbridge.pool import protocol
    from rbridge.worker.pysession import PySession
    onnx = str(Path(__file__).resolve().parents[2] / "models" / "digits.onnx")
    cfg = image_config({"size": [8, 8], "mode": "L", "layout": "flat", "dtype": "float64"}, "x")

    def spec(providers):
        return protocol.ModelSpec("digits", onnx, None, "1", "0" * 64, {}, None, kind="onnx", top_k=3,
                                  image=cfg, providers=providers)
    missing = "NoSuchExecutionProvider"
    info = PySession().load(spec([missing, "CPUExecutionProvider"]))
    assert not info.ok
    assert info.error == (f"providers {missing} are not in this onnxruntime ({ort.__version__}, which has "
                          f"{', '.join(ort.get_available_providers())}); CUDAExecutionProvider comes with the "
                          "onnxruntime-gpu package, installed instead of onnxruntime")
    session = PySession()
    info = session.load(spec(["CPUExecutionProvider"]))
    assert info.ok and info.packages == [f"onnxruntime {ort.__version__} (CPUExecutionProvider)"]
    (out,), _ = session.score("digits", [protocol.Part("r", 1, {"image": ("image", [images.blank(cfg)])})])
    assert out.kind == "table" and len(out.names) == 10
