import csv
import io

import numpy as np
import pytest
from PIL import Image

from deepfake.data.synth import MANIPULATIONS, SynthConfig, generate, make_image, sample_identity

CFG = SynthConfig(n_identities=6, images_per_identity=2, image_size=48, seed=11, workers=1)


def _manifest(root):
    with open(root / "manifest.csv") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_identical_bytes():
    a, row_a = make_image(CFG, 2, 1, True)
    b, row_b = make_image(CFG, 2, 1, True)
    assert a == b and row_a == row_b


def test_different_seed_or_index_differs():
    a, _ = make_image(CFG, 2, 1, False)
    assert make_image(SynthConfig(n_identities=6, image_size=48, seed=12), 2, 1, False)[0] != a
    assert make_image(CFG, 2, 0, False)[0] != a


def test_image_is_rgb_jpeg_of_requested_size():
    data, row = make_image(CFG, 0, 0, False)
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (48, 48)
    assert CFG.jpeg_quality[0] <= row["quality"] <= CFG.jpeg_quality[1]


def test_identities_differ():
    a, b = sample_identity(0, 1), sample_identity(0, 2)
    assert not np.allclose(a["skin"], b["skin"])


def test_fake_differs_from_real_render_of_same_scene():
    # a fake of identity i, index j is the real scene manipulated: pixels must differ somewhere
    real = np.asarray(Image.open(io.BytesIO(make_image(CFG, 1, 0, False)[0])), dtype=float)
    fake = np.asarray(Image.open(io.BytesIO(make_image(CFG, 1, 0, True)[0])), dtype=float)
    assert np.abs(real - fake).mean() > 1.0


def test_generate_writes_balanced_grouped_dataset(tmp_path):
    root = generate(tmp_path / "raw", CFG, progress=False)
    rows = _manifest(root)
    assert len(rows) == 2 * CFG.n_identities * CFG.images_per_identity
    assert sum(r["label"] == "fake" for r in rows) == len(rows) // 2
    assert len({r["identity"] for r in rows}) == CFG.n_identities
    assert len({r["group"] for r in rows}) == CFG.n_identities // CFG.family_size
    for r in rows:
        assert (root / r["file"]).is_file()
        assert r["file"].startswith(r["label"] + "/")
        assert (r["manipulation"] in MANIPULATIONS) == (r["label"] == "fake")
    assert not (tmp_path / "raw.partial").exists()


def test_donors_come_from_the_targets_group(tmp_path):
    cfg = SynthConfig(n_identities=12, images_per_identity=3, image_size=32, family_size=3, workers=1)
    rows = _manifest(generate(tmp_path / "raw", cfg, progress=False))
    group_of = {r["identity"]: r["group"] for r in rows}
    donors = [r for r in rows if r["donor"]]
    assert donors, "swaps and partial edits need donors"
    for r in donors:
        assert r["donor"] != r["identity"] and group_of[r["donor"]] == r["group"]
    assert len(set(group_of.values())) == 4


def test_last_family_absorbs_the_remainder():
    from deepfake.data.synth import family_members

    cfg = SynthConfig(n_identities=10, family_size=4)
    assert list(family_members(cfg, 0)) == [0, 1, 2, 3]
    assert list(family_members(cfg, 9)) == list(range(4, 10))


def test_generate_is_deterministic_across_runs_and_worker_counts(tmp_path):
    a = generate(tmp_path / "a", CFG, progress=False)
    b = generate(tmp_path / "b", SynthConfig(**{**CFG.__dict__, "workers": 2}), progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_both_classes_share_the_quality_distribution(tmp_path):
    rows = _manifest(
        generate(
            tmp_path / "raw",
            SynthConfig(n_identities=40, images_per_identity=2, image_size=32, workers=1),
            progress=False,
        )
    )
    q = {lab: np.array([int(r["quality"]) for r in rows if r["label"] == lab]) for lab in ("real", "fake")}
    assert abs(q["real"].mean() - q["fake"].mean()) < 4


def test_generate_refuses_to_overwrite(tmp_path):
    generate(tmp_path / "raw", CFG, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        generate(tmp_path / "raw", CFG, progress=False)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"n_identities": 1}, "n_identities"),
        ({"images_per_identity": 0}, "images_per_identity"),
        ({"image_size": 16}, "image_size"),
        ({"jpeg_quality": (90, 80)}, "jpeg_quality"),
        ({"manipulations": ("morph",)}, "manipulations"),
        ({"n_identities": 3, "family_size": 4}, "family_size"),
    ],
)
def test_invalid_config_is_rejected(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SynthConfig(**kwargs)
