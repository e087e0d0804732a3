import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake.data.ingest import DatasetLayoutError, IngestConfig, read_manifest, scan
from deepfake.data.media import BadInputError, decode_image, read_image
from deepfake.data.video import read_video_frames, sample_frame_indices

RNG = np.random.default_rng(0)


def _pattern(h: int = 24, w: int = 40) -> np.ndarray:
    """An asymmetric RGB test image (every pixel different)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6 % 256, y * 10 % 256, (x + 3 * y) % 256], axis=2).astype(np.uint8)


def _save(im: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def _jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few-hundred-byte PNG whose header claims width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# Images that are valid but awkward: converted, exactly
# --------------------------------------------------------------------------------------------


def test_png_round_trip_is_exact(tmp_path):
    rgb = _pattern()
    p = _save(Image.fromarray(rgb), tmp_path / "a.png")
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (24, 40, 3)
    assert np.array_equal(out, rgb)


def test_exif_orientation_is_applied(tmp_path):
    rgb = _pattern()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees clockwise
    p = _save(Image.fromarray(rgb), tmp_path / "rotated.png", exif=exif)
    assert Image.open(p).getexif()[0x0112] == 6
    out = read_image(p)
    assert out.shape == (40, 24, 3)
    assert np.array_equal(out, np.rot90(rgb, k=-1))


def test_exif_orientation_in_jpeg(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotated 90 degrees counter-clockwise for display
    p = _save(Image.fromarray(_pattern(32, 64)), tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert read_image(p).shape == (64, 32, 3)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    grey = _pattern()[:, :, 0]
    out = read_image(_save(Image.fromarray(grey, "L"), tmp_path / "g.png"))
    assert out.shape == (24, 40, 3)
    assert all(np.array_equal(out[:, :, c], grey) for c in range(3))


def test_bilevel_image_is_black_and_white(tmp_path):
    im = Image.fromarray((_pattern()[:, :, 0] > 100).astype(np.uint8) * 255, "L").convert("1")
    out = read_image(_save(im, tmp_path / "b.png"))
    assert set(np.unique(out).tolist()) == {0, 255}


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    p = _save(cmyk, tmp_path / "print.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    out = read_image(p)
    assert out.shape == (32, 32, 3)
    assert np.abs(out[16, 16].astype(int) - [255, 0, 0]).max() <= 8


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red: white
    rgba[0, 1] = (0, 0, 255, 255)  # opaque blue
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black: mid grey
    out = read_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 255]
    assert all(abs(v - 127) <= 1 for v in out[0, 2].tolist())


def test_grey_with_alpha_is_composited_too(tmp_path):
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")
    out = read_image(_save(la, tmp_path / "la.png"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 0]


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    grey16 = np.array([[0, 128 * 257, 65535, 1000]], np.uint16)
    p = _save(Image.fromarray(grey16), tmp_path / "deep.png")
    assert Image.open(p).mode.startswith("I")
    out = read_image(p)
    assert out[0, :, 0].tolist() == [0, 128, 255, 4]  # Pillow's own convert('RGB') would give 255 for the last three


def test_16_bit_colour_png_keeps_the_high_byte(tmp_path):
    bgr16 = np.zeros((2, 2, 3), np.uint16)
    bgr16[..., 0], bgr16[..., 1], bgr16[..., 2] = 1000, 30000, 65535  # B, G, R
    p = tmp_path / "deep_rgb.png"
    assert cv2.imwrite(str(p), bgr16)
    out = read_image(p)
    assert out[0, 0].tolist() == [255, 117, 3]  # R, G, B >> 8


def test_palette_images_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    out = read_image(_save(pal, tmp_path / "p.png"))
    assert out[0, 0].tolist() == [10, 200, 30]
    pal.info["transparency"] = 1  # index 1 transparent: white after compositing
    out = read_image(_save(pal, tmp_path / "pt.png", transparency=1))
    assert out[0, 0].tolist() == [255, 255, 255]
    gif = _save(Image.new("P", (4, 4), 1), tmp_path / "g.gif")
    assert read_image(gif).shape == (4, 4, 3)


def test_webp_and_bmp_are_read(tmp_path):
    rgb = _pattern()
    assert np.array_equal(read_image(_save(Image.fromarray(rgb), tmp_path / "a.bmp")), rgb)
    assert np.array_equal(read_image(_save(Image.fromarray(rgb), tmp_path / "a.webp", lossless=True)), rgb)


# --------------------------------------------------------------------------------------------
# Files that are not usable: a reason each, never a crash
# --------------------------------------------------------------------------------------------


def _reason(path, **kw) -> str:
    with pytest.raises(BadInputError) as e:
        read_image(path, **kw)
    assert str(path) in str(e.value)  # the message names the file
    return e.value.reason


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty_file"


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("<html>404 not found</html>\n")
    assert _reason(tmp_path / "notes.jpg") == "not_an_image"


def test_truncated_jpeg(tmp_path):
    data = _jpeg_bytes(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "cut.jpg") == "truncated"


def test_corrupt_jpeg_header(tmp_path):
    data = _jpeg_bytes(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "bad.jpg").write_bytes(data[:20] + bytes(200) + data[220:])  # JPEG signature, garbage tables
    assert _reason(tmp_path / "bad.jpg") == "corrupt"


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png())
    assert p.stat().st_size < 1000
    assert _reason(p) == "too_large"  # 2500 MP: refused before any pixel is allocated


def test_max_pixels_is_configurable(tmp_path):
    p = _save(Image.fromarray(_pattern(100, 100)), tmp_path / "big.png")
    assert _reason(p, max_pixels=5_000) == "too_large"
    assert read_image(p, max_pixels=10_000).shape == (100, 100, 3)


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "missing_file"


def test_decode_image_does_not_need_a_file():
    rgb = _pattern()
    out = decode_image(_jpeg_bytes(rgb, 95))
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() < 8


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write RGB frames with OpenCV (MJPG for .avi, mp4v otherwise)."""
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_sample_frame_indices_are_evenly_spaced():
    assert sample_frame_indices(100, 5) == [0, 25, 50, 74, 99]
    assert sample_frame_indices(10, 32) == list(range(10))
    assert sample_frame_indices(300, 32)[:3] == [0, 10, 19] and len(sample_frame_indices(300, 32)) == 32
    assert sample_frame_indices(0, 32) == []


@pytest.mark.parametrize("ext", [".avi", ".mp4", ".mov"])
def test_video_frames_are_the_sampled_ones(tmp_path, ext):
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(20)]  # brightness encodes the index
    p = write_video(tmp_path / f"clip{ext}", frames)
    got = read_video_frames(p, 4)
    assert [i for i, _ in got] == [0, 6, 13, 19]
    for i, rgb in got:
        assert rgb.shape == (48, 64, 3) and abs(float(rgb.mean()) - 10 * i) < 6


def test_video_that_cannot_be_opened(tmp_path):
    p = tmp_path / "broken.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    with pytest.raises(BadInputError) as e:
        read_video_frames(p, 8)
    assert e.value.reason == "video_unreadable"
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(BadInputError) as e:
        read_video_frames(tmp_path / "empty.avi", 8)
    assert e.value.reason == "empty_file"


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


def _touch_image(path: Path) -> None:
    _save(Image.fromarray(_pattern(8, 8)), path)


def test_folder_layout_at_any_depth(tmp_path):
    root = tmp_path / "ds"
    for rel in (
        "real/a.jpg",
        "real/x/y/b.png",
        "fake/c.webp",
        "extra/FAKE/deep/d.bmp",
        "misc/e.jpg",
        "real/.hidden.jpg",
    ):
        _touch_image(root / rel)
    (root / "real" / "readme.txt").write_text("hi")
    write_video(root / "fake" / "v.avi", [np.zeros((16, 16, 3), np.uint8)] * 3)
    inv = scan(root)
    got = {s.rel: (s.label, s.kind, s.group) for s in inv.sources}
    assert got == {
        "real/a.jpg": ("real", "image", "real/a.jpg"),
        "real/x/y/b.png": ("real", "image", "real/x/y/b.png"),
        "fake/c.webp": ("fake", "image", "fake/c.webp"),
        "extra/FAKE/deep/d.bmp": ("fake", "image", "extra/FAKE/deep/d.bmp"),
        "fake/v.avi": ("fake", "video", "fake/v.avi"),
    }
    assert {(s["source"], s["reason"]) for s in inv.skipped} == {
        ("misc/e.jpg", "no_label_folder"),
        ("real/readme.txt", "unsupported_extension"),
        ("real/.hidden.jpg", "hidden"),  # listed, not read
    }
    assert inv.layout == "folders" and inv.counts() == {"images": 4, "videos": 1, "skipped": 3}


def test_group_by_identity_folder(tmp_path):
    for rel in ("real/id1/a.jpg", "real/id1/b.jpg", "fake/id1/c.jpg", "fake/id2/d.jpg", "fake/e.jpg"):
        _touch_image(tmp_path / rel)
    groups = {s.rel: s.group for s in scan(tmp_path, IngestConfig(group_by="folder")).sources}
    assert groups == {
        "real/id1/a.jpg": "id1",
        "real/id1/b.jpg": "id1",
        "fake/id1/c.jpg": "id1",
        "fake/id2/d.jpg": "id2",
        "fake/e.jpg": "fake/e.jpg",
    }


def test_existing_train_valid_test_folders_when_asked(tmp_path):
    for rel in ("train/real/a.jpg", "train/fake/b.jpg", "valid/real/c.jpg", "test/fake/d.jpg", "other/real/e.jpg"):
        _touch_image(tmp_path / "set" / rel)
    inv = scan(tmp_path / "set", IngestConfig(keep_splits=True))
    assert {s.rel: s.split for s in inv.sources} == {
        "train/real/a.jpg": "train",
        "train/fake/b.jpg": "train",
        "valid/real/c.jpg": "val",
        "test/fake/d.jpg": "test",
    }
    assert [(s["source"], s["reason"]) for s in inv.skipped] == [("other/real/e.jpg", "no_split_folder")]
    assert {s.split for s in scan(tmp_path / "set").sources} == {""}  # not asked: the split stage draws its own


def test_custom_label_folder_names(tmp_path):
    _touch_image(tmp_path / "training_real" / "a.jpg")
    _touch_image(tmp_path / "training_fake" / "b.jpg")
    with pytest.raises(DatasetLayoutError, match="real_dirs"):
        scan(tmp_path)
    inv = scan(tmp_path, IngestConfig(real_dirs="real,training_real", fake_dirs="fake,training_fake"))
    assert {s.rel: s.label for s in inv.sources} == {"training_real/a.jpg": "real", "training_fake/b.jpg": "fake"}
    with pytest.raises(ValueError, match="both real and fake"):
        IngestConfig(real_dirs="real,x", fake_dirs="x")


def test_csv_manifest_with_groups_splits_and_extra_columns(tmp_path):
    for rel in ("imgs/1.jpg", "imgs/2.jpg", "imgs/3.jpg", "imgs/4.jpg"):
        _touch_image(tmp_path / rel)
    csv = tmp_path / "lists" / "all.csv"
    csv.parent.mkdir()
    pd.DataFrame(
        {
            "path": [
                "../imgs/1.jpg",
                "../imgs/2.jpg",
                str(tmp_path / "imgs/3.jpg"),
                "../imgs/4.jpg",
                "../imgs/gone.jpg",
            ],
            "label": ["Real", "1", "fake", "0", "real"],
            "group": ["p1", "p1", "", "p2", "p3"],
            "split": ["train", "valid", "test", "train", "train"],
            "method": ["none", "swap", "swap", "none", "none"],
        }
    ).to_csv(csv, index=False)
    inv = scan(csv, IngestConfig(keep_splits=True))
    assert inv.layout == "manifest"
    rows = {s.rel: (s.label, s.group, s.split, s.extra["method"]) for s in inv.sources}
    assert rows == {
        "../imgs/1.jpg": ("real", "p1", "train", "none"),
        "../imgs/2.jpg": ("fake", "p1", "val", "swap"),
        str(tmp_path / "imgs/3.jpg"): ("fake", str(tmp_path / "imgs/3.jpg"), "test", "swap"),
        "../imgs/4.jpg": ("real", "p2", "train", "none"),
    }
    assert [(s["source"], s["reason"]) for s in inv.skipped] == [("../imgs/gone.jpg", "missing_file")]


def test_manifest_named_file_in_the_dataset_folder(tmp_path):
    _touch_image(tmp_path / "real" / "a.jpg")
    _touch_image(tmp_path / "elsewhere" / "b.jpg")
    (tmp_path / "manifest.csv").write_text("file,label\nreal/a.jpg,real\nelsewhere/b.jpg,fake\n")
    inv = scan(tmp_path)
    assert inv.layout == "manifest" and {s.rel: s.label for s in inv.sources} == {
        "real/a.jpg": "real",
        "elsewhere/b.jpg": "fake",
    }


@pytest.mark.parametrize(
    "body, match",
    [
        ("path,label\na.jpg,maybe\n", "line 2"),
        ("path,kind\na.jpg,real\n", "lacks the column"),
        ("path,label\na.jpg,real\na.jpg,fake\n", r"conflicting labels: a.jpg: line 2 \(real\), line 3 \(fake\)"),
        ("path,label\na.jpg,real\nb.jpg,fake\na.jpg,real\n", r"more than once: a.jpg: line 2 \(real\), line 4"),
        ("path,label,split\na.jpg,real,holdout\n", "not train/valid/test"),
    ],
)
def test_bad_manifests_fail_clearly(tmp_path, body, match):
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(DatasetLayoutError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_empty_or_missing_dataset_fails_clearly(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        scan(tmp_path / "nope")
    (tmp_path / "real").mkdir()
    with pytest.raises(DatasetLayoutError, match="no images or videos"):
        scan(tmp_path)


def test_keep_splits_needs_a_train_and_a_held_out_split(tmp_path):
    _touch_image(tmp_path / "train" / "real" / "a.jpg")
    with pytest.raises(DatasetLayoutError, match="keep_splits"):
        scan(tmp_path, IngestConfig(keep_splits=True))
