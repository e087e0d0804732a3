import csv

from deepfake.__main__ import main
from deepfake.pipeline.quick import write_params

ARGS = ["--n-identities", "4", "--images-per-identity", "1", "--image-size", "32", "--workers", "1"]


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
    small = {"n_identities": 2, "family_size": 2}
    params = write_params(tmp_path / "params.yaml", {"data": {"raw_dir": str(tmp_path / "my_photos")}, "synth": small})
    out = tmp_path / "raw"
    assert main(["synth", "--out", str(out), "--params", str(params), "--if-missing"]) == 0
    assert not out.exists() and "nothing to render" in capsys.readouterr().out
    write_params(params, {"data": {"raw_dir": str(out)}, "synth": small})
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "--params",
                str(params),
                "--if-missing",
                "--image-size",
                "32",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert (out / "manifest.csv").is_file()


def test_synth_reads_params_yaml(tmp_path):
    synth = {"n_identities": 2, "family_size": 2, "images_per_identity": 2, "image_size": 32, "jpeg_quality": [80, 80]}
    params = write_params(tmp_path / "params.yaml", {"synth": synth})
    out = tmp_path / "raw"
    assert main(["synth", "--out", str(out), "--params", str(params), "--workers", "1"]) == 0
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["quality"] for r in rows} == {"80"}


def test_a_faulty_params_file_stops_synth_naming_the_key(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", {"synth": {"n_identites": 4}})
    assert main(["synth", "--out", str(tmp_path / "raw"), "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "synth.n_identites" in err and "did you mean synth.n_identities" in err
    assert not (tmp_path / "raw").exists()
