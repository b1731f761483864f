"""Images as training data: finding them (a folder of class folders, or a table of paths), decoding
them once (Pillow, upright, RGB) and turning them into the backbone's pixel values.

Two layouts name the images of a split:

    photos/<class>/<image>          one level of class folders; hidden files and folders skipped
    images.csv (or .jsonl)          a column of paths (relative to the table's folder) and a label column

Both become a raw table with a path column and a label column (`folder_table` for a folder), so
the image task reads either the same way. Finding and checking the files is what images share with
audio clips (data/media_files.py, with IMAGE_FILES describing images); paths never leave the data
folder (data/paths.py).

Preprocessing follows the backbone's own image processor (its size, crop, mean, std and resampling),
done here with Pillow, numpy and torch: `DecodedImages` decodes every file once into a uint8 array
whose short side is the processor's resize size, and the crops, flips and normalisation of each
batch are cut from those arrays, so epochs after the first never decode a file again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import TunesmithError
from . import media_files
from .media_files import DecodedFiles, MediaKind, is_hidden, listed  # noqa: F401  (is_hidden, listed: the image task uses them)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff")
SUFFIX_LIST = "JPEG, PNG, WebP, BMP, GIF or TIFF"
# column names that hold image paths, best first (the name alone is not enough: the cells must be image files too)
PATH_NAMES = ("path", "image", "image_path", "file", "filename", "file_name", "filepath", "file_path", "img", "image_file",
              "picture", "photo")
IMAGE_FILES = MediaKind("image", "images", "<image>", IMAGE_SUFFIXES, SUFFIX_LIST, PATH_NAMES, "--image-column")


def is_image_name(name) -> bool:
    return IMAGE_FILES.is_file_name(name)


# -- finding the images of a split ----------------------------------------------------------------

def folder_table(folder, min_classes: int = 2) -> pd.DataFrame:
    """A folder of class sub-folders of images as a raw table: `path` (relative to the folder) and `label`
    (the sub-folder's name). attrs['image_folder'] marks the layout; attrs['notes'] says what was skipped."""
    return media_files.folder_table(folder, (IMAGE_FILES,), min_classes)


def images_in(folder) -> list[Path]:
    """The images of a folder to predict on: those in it and in its (class) sub-folders, sorted."""
    return media_files.files_in(folder, IMAGE_FILES)


def image_column_of(raw: pd.DataFrame) -> str | None:
    """The column of image paths, by name (path, image, file, ...) or by its cells, or None."""
    return media_files.path_column_of(raw, IMAGE_FILES)


def find_image_column(raw: pd.DataFrame, source, given: str | None = None, trained: str | None = None) -> str:
    """--image-column, else the training run's column name (predict/eval), else inferred."""
    return media_files.find_path_column(raw, source, IMAGE_FILES, given, trained)


def resolve_image_paths(raw: pd.DataFrame, column: str, source) -> tuple[list[str], list[str]]:
    """(resolved file of each row, the path as a person reads it); a bad cell is one sentence naming the rows."""
    return media_files.resolve_paths(raw, column, source, IMAGE_FILES)

# -- decoding -----------------------------------------------------------------------------------

def decode_image(source):
    """An image file (or an in-memory PIL image or uint8 array) as an upright RGB PIL image: the first
    frame of an animation, EXIF orientation applied, alpha composited on white."""
    from PIL import Image

    if isinstance(source, np.ndarray):
        return upright_rgb(Image.fromarray(source))
    if isinstance(source, Image.Image):
        return upright_rgb(source)
    with Image.open(source) as image:  # closed here, not whenever the garbage collector gets to it
        result = upright_rgb(image)
        result.load()
        return result


def upright_rgb(image):
    from PIL import ImageOps

    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image):
    """RGB from any mode Pillow opens: grayscale, palette, CMYK, 16-bit, and alpha over a white background."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grayscale: Pillow's own convert would clip at 255
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if image.mode.startswith("I") else (255.0 if values.max(initial=0) <= 1.0 else 1.0)
        image = Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def decode_problem(exc: Exception) -> str:
    """A few words on why a file did not decode."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "truncated" if "truncated" in text.lower() else text[:80]


def check_decodes(path) -> None:
    """Raise if the file does not decode. JPEGs decode at 1/8 scale (Pillow's draft mode): every byte is
    still read and entropy-decoded, so damage shows, at a fraction of the work of a full decode."""
    from PIL import Image

    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (64, 64))
        image.load()


def undecodable(files: list[str]) -> list[tuple[int, str]]:
    """(row, why) of every file that does not decode."""
    bad = []
    for i, path in enumerate(files):
        try:
            check_decodes(path)
        except Exception as exc:  # noqa: BLE001  (Pillow's plugins raise OSError, SyntaxError, ValueError, struct.error ...)
            bad.append((i, decode_problem(exc)))
    return bad


def bad_files_message(bad: list[tuple[str, str]], total: int, role: str, can_skip: bool = True) -> str:
    """One sentence naming the first few images that do not decode (and why), the count, and the fix."""
    return media_files.bad_files_message(bad, total, role, IMAGE_FILES, can_skip)

# -- the backbone's preprocessing ---------------------------------------------------------------

@dataclass(frozen=True)
class ImageSteps:
    """An image processor's steps, as numbers: resize, center crop, rescale, normalise.

    resize: ("shortest_edge", s) keeps the aspect ratio, ("exact", h, w) does not, None skips it;
    crop: (h, w) of the center crop, or None; the output is `size` in both cases."""

    resize: tuple | None
    crop: tuple[int, int] | None
    resample: int
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the pixel values the model sees."""
        if self.crop:
            return self.crop
        if self.resize and self.resize[0] == "exact":
            return self.resize[1], self.resize[2]
        raise TunesmithError("This model's image processor neither crops nor resizes to a fixed size, so its images would differ in size "
                             "within a batch; use a model whose preprocessor_config.json sets a fixed size or crop_size.")


def size_entries(value) -> dict:
    """A processor's size or crop_size (a dict, transformers' SizeDict, or an int) as a plain dict."""
    if value is None:
        return {}
    if isinstance(value, int):
        return {"shortest_edge": value}
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return {k: getattr(value, k) for k in ("height", "width", "shortest_edge", "longest_edge") if getattr(value, k, None) is not None}


def steps_from_processor(processor) -> ImageSteps:
    """The steps of a transformers image processor (what `processor(images)` does, for one image)."""
    get = lambda name, default=None: getattr(processor, name, default)  # noqa: E731
    size, crop = size_entries(get("size")), size_entries(get("crop_size"))
    resize = None
    if get("do_resize", True) and size:
        if type(processor).__name__.startswith("ConvNext") and "shortest_edge" in size:  # ResNet's processor too
            resize = convnext_resize(size["shortest_edge"], get("crop_pct"))
        elif "height" in size and "width" in size:
            resize = ("exact", int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size and "longest_edge" not in size:
            resize = ("shortest_edge", int(size["shortest_edge"]))
        else:
            raise TunesmithError(f"This model's image processor resizes by {size}, which tunesmith does not reproduce yet; use a model whose "
                                 f"preprocessor_config.json resizes to a shortest edge or to a height and width.")
    cropped = (int(crop["height"]), int(crop["width"])) if get("do_center_crop", False) and "height" in crop else None
    if resize and resize[0] == "convnext":
        resize, cropped = resize[1], resize[2]
    resample = 2 if get("resample") is None else int(get("resample"))  # 2: PIL's BILINEAR, transformers' default
    rescale = float(get("rescale_factor", 1 / 255)) if get("do_rescale", True) else None
    mean, std = get("image_mean"), get("image_std")
    normalise = get("do_normalize", True) and mean is not None and std is not None
    as_tuple = lambda v: tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))  # noqa: E731
    return ImageSteps(resize, cropped, resample, rescale, as_tuple(mean) if normalise else None, as_tuple(std) if normalise else None)


def convnext_resize(shortest_edge: int, crop_pct: float | None) -> tuple:
    """ConvNeXt's and ResNet's rule: below 384, resize the short side to shortest_edge / crop_pct, then
    center-crop a shortest_edge square; at 384 and above, warp to a square with no crop."""
    if shortest_edge >= 384 or crop_pct is None:
        return ("convnext", ("exact", shortest_edge, shortest_edge), None)
    return ("convnext", ("shortest_edge", int(shortest_edge / crop_pct)), (shortest_edge, shortest_edge))


def resized(image, steps: ImageSteps) -> np.ndarray:
    """The RGB image after the processor's resize step, as a (H, W, 3) uint8 array."""
    if steps.resize is None:
        return np.asarray(image, dtype=np.uint8)
    if steps.resize[0] == "exact":
        height, width = steps.resize[1], steps.resize[2]
    else:  # transformers' rule (get_resize_output_image_size): the short side to s, the long side truncated
        s, (width, height) = steps.resize[1], image.size
        short, long = min(width, height), max(width, height)
        new_long = int(s * long / short)
        height, width = (new_long, s) if width <= height else (s, new_long)
    return np.asarray(image.resize((width, height), resample=steps.resample), dtype=np.uint8)


def center_crop(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """transformers' center_crop on a (H, W, 3) array: the middle, zero-padded where the image is smaller."""
    height, width = array.shape[:2]
    crop_h, crop_w = size
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return array[top:top + crop_h, left:left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    padded = np.zeros((new_h, new_w, array.shape[2]), dtype=array.dtype)
    pad_top, pad_left = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
    padded[pad_top:pad_top + height, pad_left:pad_left + width] = array
    top, left = top + pad_top, left + pad_left
    return padded[max(top, 0):max(top, 0) + crop_h, max(left, 0):max(left, 0) + crop_w]


def eval_view(array: np.ndarray, steps: ImageSteps) -> np.ndarray:
    """The processor's own view of a cached image: its center crop (the resize is in the cache)."""
    return center_crop(array, steps.crop) if steps.crop else array


def random_crop_box(height: int, width: int, min_scale: float, ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop, as torchvision's RandomResizedCrop draws it: an area of
    min_scale..1 of the image and an aspect ratio of 3/4..4/3 (log-uniform), ten tries, then the center.
    The numbers come from torch's global generator, which fit() seeds and checkpoints restore."""
    area, log_ratio = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(min_scale, 1.0).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)).item())
            left = int(torch.randint(0, width - w + 1, (1,)).item())
            return top, left, h, w
    in_ratio = width / height
    w, h = (width, int(round(width / ratio[0]))) if in_ratio < ratio[0] else \
        (int(round(height * ratio[1])), height) if in_ratio > ratio[1] else (width, height)
    h, w = min(h, height), min(w, width)
    return (height - h) // 2, (width - w) // 2, h, w


def augmented_view(array: np.ndarray, steps: ImageSteps, augment: str, min_scale: float) -> np.ndarray:
    """A training view of a cached image: 'crop-flip' (random resized crop to the model's size, then a
    flip half the time), 'flip' (the eval view, flipped half the time) or 'none' (the eval view)."""
    from PIL import Image

    if augment == "crop-flip":
        top, left, h, w = random_crop_box(array.shape[0], array.shape[1], min_scale)
        out_h, out_w = steps.size
        view = np.asarray(Image.fromarray(array).resize((out_w, out_h), resample=steps.resample, box=(left, top, left + w, top + h)))
    else:
        view = eval_view(array, steps)
    if augment != "none" and torch.rand(1).item() < 0.5:
        view = view[:, ::-1]
    return view


def pixel_values(views: list[np.ndarray], steps: ImageSteps) -> torch.Tensor:
    """(B, 3, H, W) float32, rescaled and normalised as transformers does (float64 rescale, float32 normalise)."""
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(views))).permute(0, 3, 1, 2)
    values = (batch.double() * steps.rescale).float() if steps.rescale is not None else batch.float()
    if steps.mean is not None:
        mean, std = torch.tensor(steps.mean).view(1, -1, 1, 1), torch.tensor(steps.std).view(1, -1, 1, 1)
        values = (values - mean) / std
    return values.contiguous()

# -- the decode cache -----------------------------------------------------------------------------

class DecodedImages(DecodedFiles):
    """Every image decoded once (decode_image), resized as the processor resizes, kept as uint8 by its
    resolved path (media_files.DecodedFiles: in memory, then in an unlinked temporary file)."""

    def __init__(self, steps: ImageSteps, limit_bytes: int | None = None):
        # decode_image is looked up at each call, so a test can count the decodes
        super().__init__(lambda source: resized(decode_image(source), steps), decode_problem, IMAGE_FILES, limit_bytes)
        self.steps = steps
