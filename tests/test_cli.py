import csv

from deepfake.__main__ import main

ARGS = ["--params", "", "--n-identities", "4", "--images-per-identity", "1", "--image-size", "32", "--workers", "1"]


def test_synth_writes_dataset_and_respects_existing(tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["synth", "--out", str(out), *ARGS]) == 0
    with open(out / "manifest.csv") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert main(["synth", "--out", str(out), *ARGS]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--if-missing", *ARGS]) == 0
    assert main(["synth", "--out", str(out), "--overwrite", *ARGS, "--seed", "9"]) == 0


def test_synth_if_missing_skips_when_the_pipeline_reads_another_dataset(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  raw_dir: {tmp_path / 'my_photos'}\nsynth:\n  n_identities: 2\n  family_size: 2\n  workers: 1\n")
    out = tmp_path / "raw"
    assert main(["synth", "--out", str(out), "--params", str(params), "--if-missing"]) == 0
    assert not out.exists() and "nothing to render" in capsys.readouterr().out
    params.write_text(params.read_text().replace(str(tmp_path / "my_photos"), str(out)))
    assert main(["synth", "--out", str(out), "--params", str(params), "--if-missing", "--image-size", "32"]) == 0
    assert (out / "manifest.csv").is_file()


def test_synth_reads_params_yaml(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  n_identities: 2\n  family_size: 2\n  images_per_identity: 2\n  image_size: 32\n  jpeg_quality: [80, 80]\n  workers: 1\n")
    out = tmp_path / "raw"
    assert main(["synth", "--out", str(out), "--params", str(params)]) == 0
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["quality"] for r in rows} == {"80"}
