"""Images as data (data/images.py): every format Pillow reads, EXIF orientation, modes to RGB, the folder
and table layouts and their bad inputs, the undecodable-file check, preprocessing equal to the
backbone's own image processor, augmentation under a seed, and the decode cache in memory and on disk."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, features

from tunesmith.data import images as img
from tunesmith.errors import TunesmithError


def picture(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    """A smooth RGB picture (lossy formats keep it close) with a little structure to tell rotations apart."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 60 + 40 * seed)], -1)
    return Image.fromarray(np.clip(base + rng.integers(0, 3, base.shape), 0, 255).astype(np.uint8), "RGB")


def decoded(path) -> np.ndarray:
    image = img.decode_image(str(path))
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


# -- decoding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, options", [(".png", {}), (".bmp", {}), (".tiff", {}), (".tif", {"compression": "tiff_lzw"}),
                                             (".webp", {"lossless": True})])
def test_lossless_formats_decode_to_the_same_pixels(tmp_path, suffix, options):
    if suffix == ".webp" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP codec")
    original = picture()
    original.save(tmp_path / f"x{suffix}", **options)
    assert np.array_equal(decoded(tmp_path / f"x{suffix}"), np.asarray(original).astype(int))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    original = picture(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": a phone held upright
    original.save(tmp_path / "phone.jpg", quality=95, exif=exif)
    pixels = decoded(tmp_path / "phone.jpg")
    upright = np.asarray(original.transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert pixels.shape == (40, 20, 3)  # width and height swapped
    assert np.abs(pixels - upright).mean() < 4  # JPEG's loss only; unrotated it is far off
    with Image.open(tmp_path / "phone.jpg") as raw:
        assert raw.size == (40, 20)  # the file itself is stored sideways


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere ...
    rgba[:2, :, 3] = 0  # ... transparent in the top half, opaque below
    rgba[2:, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    pixels = decoded(tmp_path / "alpha.png")
    assert (pixels[:2] == 255).all()
    assert (pixels[2:] == [200, 0, 0]).all()


def test_palette_gif_grayscale_16_bit_and_cmyk(tmp_path):
    palette = picture().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.gif")
    assert decoded(tmp_path / "palette.gif").shape == (30, 40, 3)
    gray = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5, "L")
    gray.save(tmp_path / "gray.png")
    pixels = decoded(tmp_path / "gray.png")
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == np.asarray(gray)).all()
    deep = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    deep.save(tmp_path / "deep.png")
    assert decoded(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 128, 255]  # scaled to 8 bits, not clipped at 255
    picture().convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(decoded(tmp_path / "cmyk.jpg") - np.asarray(picture()).astype(int)).mean() < 8


def test_transparent_gif_and_the_first_frame_of_an_animation(tmp_path):
    frames = [Image.new("P", (6, 6), 1), Image.new("P", (6, 6), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert (decoded(tmp_path / "anim.gif") == [255, 0, 0]).all()  # the red first frame, not the blue second
    clear = Image.new("P", (4, 4), 1)
    clear.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    clear.save(tmp_path / "clear.gif", transparency=1)
    assert (decoded(tmp_path / "clear.gif") == 255).all()


def test_undecodable_files_are_found_with_a_reason(tmp_path):
    picture().save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.webp").write_bytes(b"")
    picture().save(tmp_path / "fine.png")
    files = [str(tmp_path / n) for n in ("good.jpg", "cut.jpg", "text.png", "empty.webp", "fine.png")]
    bad = dict(img.undecodable(files))
    assert sorted(bad) == [1, 2, 3]
    assert bad[1] == "truncated" and bad[2] == "not an image Pillow can read"


# -- layouts ------------------------------------------------------------------------------------

def class_folder(root, layout: dict) -> None:
    for label, count in layout.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            picture(seed=i).save(root / label / f"{i}.png")


def test_folder_table_skips_hidden_files_and_says_what_it_skipped(tmp_path):
    class_folder(tmp_path, {"rose": 2, "tulip": 3})
    (tmp_path / "rose" / ".DS_Store").write_text("x")
    (tmp_path / "rose" / "notes.txt").write_text("x")
    (tmp_path / ".cache").mkdir()
    picture().save(tmp_path / ".cache" / "thumb.png")
    picture().save(tmp_path / "loose.jpg")
    table = img.folder_table(tmp_path)
    assert table["path"].tolist() == ["rose/0.png", "rose/1.png", "tulip/0.png", "tulip/1.png", "tulip/2.png"]
    assert table["label"].tolist() == ["rose"] * 2 + ["tulip"] * 3
    notes = " ".join(table.attrs["notes"])
    assert "Skipped 1 file in the class folders" in notes and "without an image suffix" in notes and "'loose.jpg'" in notes
    assert table.attrs["image_folder"] == str(tmp_path)


@pytest.mark.parametrize("layout, expected", [
    ({}, "is a folder with no images in class sub-folders"),
    ({"rose": 2, "tulip": 0}, "tulip' of .* holds no JPEG, PNG"),
    ({"rose": 3}, "has a single class folder \\('rose'\\); a classifier needs at least two"),
])
def test_folder_layout_errors(tmp_path, layout, expected):
    class_folder(tmp_path, layout)
    with pytest.raises(TunesmithError, match=expected):
        img.folder_table(tmp_path)


def test_images_in_deeper_folders_are_named_as_the_reason_a_class_is_empty(tmp_path):
    class_folder(tmp_path, {"rose": 2})
    (tmp_path / "tulip" / "2019").mkdir(parents=True)
    picture().save(tmp_path / "tulip" / "2019" / "a.png")
    with pytest.raises(TunesmithError, match="images in deeper folders do not count"):
        img.folder_table(tmp_path)


def test_table_paths_resolve_against_the_table_folder_and_stay_inside_it(tmp_path):
    (tmp_path / "data" / "img").mkdir(parents=True)
    picture().save(tmp_path / "data" / "img" / "a.png")
    picture().save(tmp_path / "secret.png")
    csv = tmp_path / "data" / "images.csv"
    files, shown = img.resolve_image_paths(pd.DataFrame({"path": ["img/a.png", "./img/a.png"]}), "path", csv)
    assert files == [str((tmp_path / "data" / "img" / "a.png").resolve())] * 2
    assert shown == [str(tmp_path / "data" / "img" / "a.png")] * 2
    with pytest.raises(TunesmithError, match="Line 3 of .*images.csv' lists '../secret.png', which is outside the data folder"):
        img.resolve_image_paths(pd.DataFrame({"path": ["img/a.png", "../secret.png"]}), "path", csv)
    with pytest.raises(TunesmithError, match="outside the data folder"):
        img.resolve_image_paths(pd.DataFrame({"path": [str(tmp_path / "secret.png")]}), "path", csv)
    with pytest.raises(TunesmithError, match="2 of 3 image paths in .* name no file: line 3 \\('img/b.png'\\), line 4 \\('c.jpg'\\)"):
        img.resolve_image_paths(pd.DataFrame({"path": ["img/a.png", "img/b.png", "c.jpg"]}), "path", csv)
    with pytest.raises(TunesmithError, match="no image path on line 3"):
        img.resolve_image_paths(pd.DataFrame({"path": ["img/a.png", " "]}), "path", csv)
    jsonl = tmp_path / "data" / "images.jsonl"
    with pytest.raises(TunesmithError, match="name no file: row 2"):
        img.resolve_image_paths(pd.DataFrame({"path": ["img/a.png", "nope.png"]}), "path", jsonl)


def test_image_column_by_name_or_by_its_cells():
    assert img.image_column_of(pd.DataFrame({"file": ["a.jpg", "b.png"], "label": ["x", "y"]})) == "file"
    assert img.image_column_of(pd.DataFrame({"where": ["a.JPG", "b/c.webp"], "label": ["x", "y"]})) == "where"
    assert img.image_column_of(pd.DataFrame({"text": ["a good film", "bad"], "label": ["x", "y"]})) is None
    assert img.image_column_of(pd.DataFrame({"path": ["notes.txt", "b.csv"], "label": ["x", "y"]})) is None
    with pytest.raises(TunesmithError, match="has no column 'img'"):
        img.find_image_column(pd.DataFrame({"file": ["a.jpg"]}), "x.csv", given="img")


# -- preprocessing --------------------------------------------------------------------------------

def processors():
    from transformers import ConvNextImageProcessorPil, MobileNetV2ImageProcessorPil, ViTImageProcessorPil

    return {
        "mobilenet": MobileNetV2ImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}),
        "mobilenet-default": MobileNetV2ImageProcessorPil(),
        "vit": ViTImageProcessorPil(size={"height": 24, "width": 24}),
        "convnext": ConvNextImageProcessorPil(size={"shortest_edge": 32}),
        "convnext-warp": ConvNextImageProcessorPil(size={"shortest_edge": 384}),
    }


@pytest.mark.parametrize("name", ["mobilenet", "mobilenet-default", "vit", "convnext", "convnext-warp"])
@pytest.mark.parametrize("width, height", [(40, 30), (17, 50), (20, 20), (300, 200)])
def test_eval_pixels_equal_the_image_processor_own(name, width, height):
    processor = processors()[name]
    steps = img.steps_from_processor(processor)
    image = picture(width, height)
    ours = img.pixel_values([img.eval_view(img.resized(image, steps), steps)], steps)
    theirs = torch.as_tensor(processor(images=image, return_tensors="np")["pixel_values"])
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) < 1e-5


def test_steps_of_the_mobilenet_processor():
    steps = img.steps_from_processor(processors()["mobilenet-default"])
    assert steps.resize == ("shortest_edge", 256) and steps.crop == (224, 224) and steps.size == (224, 224)
    assert steps.resample == Image.Resampling.BILINEAR and steps.mean == (0.5, 0.5, 0.5)


def test_random_crops_follow_the_seed_and_stay_in_bounds():
    torch.manual_seed(3)
    first = [img.random_crop_box(60, 80, 0.08) for _ in range(200)]
    torch.manual_seed(3)
    assert [img.random_crop_box(60, 80, 0.08) for _ in range(200)] == first
    torch.manual_seed(4)
    assert [img.random_crop_box(60, 80, 0.08) for _ in range(200)] != first
    areas = []
    for top, left, h, w in first:
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        areas.append(h * w / (60 * 80))
    assert min(areas) >= 0.06 and max(areas) <= 1.0 and np.median(areas) < 0.7  # 0.08 to 1 of the area, not the whole image
    torch.manual_seed(0)
    gentle = [img.random_crop_box(60, 80, 0.9) for _ in range(50)]
    assert min(h * w for _, _, h, w in gentle) >= 0.85 * 60 * 80


def test_augmented_views_are_seeded_and_differ_from_the_eval_view():
    steps = img.steps_from_processor(processors()["mobilenet"])
    array = img.resized(picture(50, 40), steps)
    torch.manual_seed(0)
    views = [img.augmented_view(array, steps, "crop-flip", 0.08) for _ in range(4)]
    torch.manual_seed(0)
    again = [img.augmented_view(array, steps, "crop-flip", 0.08) for _ in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(views, again))
    assert all(v.shape == (32, 32, 3) for v in views)
    eval_view = img.eval_view(array, steps)
    assert not any(np.array_equal(v, eval_view) for v in views)
    flips = []
    for seed in range(20):
        torch.manual_seed(seed)
        view = img.augmented_view(array, steps, "flip", 0.08)
        assert np.array_equal(view, eval_view) or np.array_equal(view, eval_view[:, ::-1])
        flips.append(np.array_equal(view, eval_view[:, ::-1]))
    assert 3 <= sum(flips) <= 17
    assert np.array_equal(img.augmented_view(array, steps, "none", 0.08), eval_view)


# -- the decode cache -----------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, 0, 5000])  # all in memory, all on disk, and memory first then disk
def test_decoded_images_decode_each_file_once_in_memory_or_on_disk(tmp_path, monkeypatch, limit):
    paths = []
    for i in range(6):
        picture(30 + i, 20, seed=i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    calls = []
    real = img.decode_image
    monkeypatch.setattr(img, "decode_image", lambda source: calls.append(source) or real(source))
    steps = img.steps_from_processor(processors()["mobilenet"])
    cache = img.DecodedImages(steps, limit_bytes=limit)
    entries = cache.add_all(paths)
    assert cache.add_all(paths[::-1]).tolist() == entries[::-1].tolist()  # the second time: looked up, not decoded
    assert sorted(calls) == sorted(paths)
    for entry, path in zip(entries, paths):
        expected = img.resized(real(path), steps)
        assert np.array_equal(cache[int(entry)], expected)
        assert min(expected.shape[:2]) == 36  # the processor's resize size
    assert (cache.file is None) == (limit is None)


def test_decoded_images_name_the_files_that_fail(tmp_path):
    (tmp_path / "bad.jpg").write_text("nope")
    picture().save(tmp_path / "good.png")
    cache = img.DecodedImages(img.steps_from_processor(processors()["mobilenet"]))
    with pytest.raises(TunesmithError, match="1 of 2 input images cannot be decoded: '.*bad.jpg' \\(not an image Pillow can read\\)"):
        cache.add_all([str(tmp_path / "good.png"), str(tmp_path / "bad.jpg")])
    assert len(cache.add_all([picture(), np.zeros((5, 5, 3), dtype=np.uint8)])) == 2  # in-memory images too
