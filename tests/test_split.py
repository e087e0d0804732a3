import pandas as pd
import pytest

from deepfake.split import (
    LeakageError,
    SplitConfig,
    balance_table,
    check_leakage,
    leakage_report,
    split_dataset,
    write_splits,
)


def _frame(n_groups=40, per_group=4, fake_every=2):
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            fake = k % fake_every == 0
            rows.append(
                {
                    "path": f"{g}_{k}.jpg",
                    "label": "fake" if fake else "real",
                    "target": int(fake),
                    "group": f"g{g}",
                    "sha256": f"{g:04d}{k:04d}",
                }
            )
    return pd.DataFrame(rows)


def test_groups_never_cross_splits_and_fractions_are_close():
    df = split_dataset(_frame(), SplitConfig(val_frac=0.2, test_frac=0.2, seed=1))
    assert df.groupby("group")["split"].nunique().max() == 1
    share = df.groupby("split")["group"].nunique() / 40
    assert abs(share["test"] - 0.2) <= 0.05 and abs(share["val"] - 0.2) <= 0.05
    assert check_leakage(df)["groups_across_splits"] == []


def test_split_is_stratified():
    df = split_dataset(_frame(n_groups=60), SplitConfig(val_frac=0.15, test_frac=0.15))
    for _, part in df.groupby("split"):
        assert part["target"].mean() == pytest.approx(0.5, abs=0.05)


def test_split_is_deterministic_and_seed_dependent():
    a = split_dataset(_frame(), SplitConfig(seed=5))["split"].tolist()
    assert a == split_dataset(_frame(), SplitConfig(seed=5))["split"].tolist()
    assert a != split_dataset(_frame(), SplitConfig(seed=6))["split"].tolist()


def test_leakage_of_groups_and_identical_files_is_detected():
    df = split_dataset(_frame(), SplitConfig())
    moved = df.copy()
    i = moved.index[moved["split"] == "train"][0]
    moved.loc[i, "split"] = "test"  # one image of a train identity lands in test
    assert leakage_report(moved)["groups_across_splits"] == [moved.loc[i, "group"]]
    with pytest.raises(LeakageError, match="1 group"):
        check_leakage(moved)
    dup = df.copy()
    a = dup.index[dup["split"] == "train"][0]
    b = dup.index[dup["split"] == "test"][0]
    dup.loc[b, "sha256"] = dup.loc[a, "sha256"]  # the same file under two identities
    with pytest.raises(LeakageError, match="1 identical file"):
        check_leakage(dup)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        split_dataset(_frame(n_groups=3), SplitConfig(test_frac=0.2))


@pytest.mark.parametrize("frac", [0.0, 0.5, -0.1])
def test_bad_fractions_rejected(frac):
    with pytest.raises(ValueError, match="split"):
        SplitConfig(val_frac=frac)


def test_balance_table_and_manifests(tmp_path):
    df = split_dataset(_frame(), SplitConfig())
    t = balance_table(df)
    assert list(t.index) == ["train", "val", "test"]
    assert t["total"].sum() == len(df) and (t["real"] + t["fake"] == t["total"]).all()
    paths = write_splits(df, tmp_path)
    back = pd.concat(pd.read_csv(p) for p in paths.values())
    assert len(back) == len(df) and "split" not in back.columns
