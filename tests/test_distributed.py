import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake.pipeline import sandbox
from deepfake.pipeline.quick import write_params
from deepfake.pipeline.tracking import read_history
from deepfake.training import distributed as D
from deepfake.training.train import TrainConfig, TrainResult, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {
    **os.environ,
    "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    "TQDM_DISABLE": "1",
    "OMP_NUM_THREADS": "1",
}
HISTORY = ["train_loss", "train_accuracy", "train_auc", "val_loss", "val_accuracy", "val_auc", "lr"]


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = D.setup("cpu")
    assert info == D.DistInfo() and info.is_main and not info.enabled
    a, b = np.arange(3), np.ones(2)
    assert D.gather_arrays(info, a, b) == (a, b)
    assert D.all_gather_objects({"x": 1}, info) == [{"x": 1}] and D.broadcast_object(5, info) == 5
    D.barrier(info)
    D.teardown(info)


def frozen_backbone_config(arch: str, folder: Path) -> dict:
    """Train settings whose multi-process result equals the single-process one: a frozen pretrained
    backbone (its BatchNorm layers use their running statistics). Without SyncBatchNorm, which needs
    CUDA, per-rank batch statistics would legitimately differ from whole-batch ones."""
    torch.manual_seed(7)
    if arch == "resnet18":
        from torchvision.models import resnet18

        torch.save(resnet18(weights=None).state_dict(), folder / "pretrained.pt")
    else:
        import timm

        torch.save(timm.create_model(arch).state_dict(), folder / "pretrained.pt")
    return {
        "arch": arch,
        "weights": str(folder / "pretrained.pt"),
        "freeze_backbone_epochs": 2,
        "epochs": 2,
        "batch_size": 8,
        "image_size": 32,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 0.5,
        "jpeg_prob": 0.5,
        "blur_prob": 0.5,
        "deterministic": True,
    }


def train_command(params: Path, faces: Path, splits: Path, model_dir: str | Path, reports_dir: str | Path) -> list:
    """``python -m deepfake train``'s arguments (after torchrun's own)."""
    return [
        "-m",
        "deepfake",
        "train",
        "--params",
        str(params),
        "--faces-dir",
        str(faces),
        "--splits-dir",
        str(splits),
        "--model-dir",
        str(model_dir),
        "--reports-dir",
        str(reports_dir),
    ]


def assert_same_training(history, last_checkpoint: Path, single: TrainResult) -> None:
    """Per-epoch metrics and the last weights of a multi-process run equal single-process training's."""
    np.testing.assert_allclose(history[HISTORY].to_numpy(), single.history[HISTORY].to_numpy(), rtol=1e-4, atol=1e-5)
    a = torch.load(last_checkpoint, weights_only=True)
    b = torch.load(single.last_checkpoint, weights_only=True)
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "test_resnet"])  # torchvision's, and a timm backbone
def test_torchrun_with_two_gloo_processes_matches_single_process_training(tiny_dataset, tiny_splits, tmp_path, arch):
    """Two CPU processes under torchrun train what one process trains with the same global batch.

    Everything is shared (``frozen_backbone_config``): the global batches and their per-image
    augmentations, the loss averaged over the global batch (DDP's gradient all-reduce; weight
    decay makes Adam's update sensitive to a wrong gradient scale), the schedule, and metrics
    over every image gathered from both ranks.
    """
    train_cfg = frozen_backbone_config(arch, tmp_path)
    write_params(tmp_path / "params.yaml", {"base": {"seed": 3, "device": "cpu"}, "train": train_cfg})
    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *train_command(tmp_path / "params.yaml", tiny_dataset, tiny_splits, ddp / "model", ddp / "reports"),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 alone reports

    single = train(TrainConfig(**train_cfg, seed=3, device="cpu"), tiny_splits, tiny_dataset, tmp_path / "single")
    summary = json.loads((ddp / "reports" / "details.json").read_text())
    assert summary["world_size"] == 2 and single.summary["world_size"] == 1
    assert summary["n_val"] == single.summary["n_val"] and summary["best_epoch"] == single.summary["best_epoch"]
    # DVCLive's per-epoch files, written by rank 0
    assert_same_training(read_history(ddp / "reports"), ddp / "model" / "last.pt", single)
    a = torch.load(ddp / "model" / "last.pt", weights_only=True)
    assert a["world_size"] == 2 and len(a["rng"]) == 2  # each rank's random state, for an exact resume


# ---------------------------------------------------------------- two nodes


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    """End the torchrun agents still running: SIGTERM, on which an agent stops its workers (they
    run in process groups of their own), then SIGKILL for any that did not end within 30 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_two_nodes(args: list, folders: list[Path], timeout: float = 300) -> list[tuple[int, str, str]]:
    """``args`` under torchrun as two "nodes" of one process each, on 127.0.0.1, each started in its
    own folder; ``(exit status, stdout, stderr)`` per node. The nodes meet through a c10d rendezvous
    (a free port, a fresh id), which numbers them: either may get rank 0."""
    endpoint, rdzv_id = f"127.0.0.1:{sandbox.free_port()}", uuid.uuid4().hex
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    torchrun += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}"]
    torchrun += ["--local-addr=127.0.0.1", "--max-restarts=0"]
    procs = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "node.out", "w") as out, open(folder / "node.err", "w") as err:
            procs.append(
                subprocess.Popen(
                    [*torchrun, *args], cwd=folder, env=ENV, stdout=out, stderr=err, start_new_session=True
                )
            )
    deadline = time.monotonic() + timeout
    try:
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    except subprocess.TimeoutExpired:
        logs = "\n".join(f"{f.name}:\n{(f / 'node.err').read_text()[-2000:]}" for f in folders)
        pytest.fail(f"the two nodes did not finish within {timeout} s\n{logs}")
    finally:
        stop_nodes(procs)
    return [(c, (f / "node.out").read_text(), (f / "node.err").read_text()) for c, f in zip(codes, folders)]


@pytest.fixture(scope="module")
def frozen_run(tiny_dataset, tiny_splits, tmp_path_factory):
    """The frozen-backbone settings in a params file, and what one process trains with them."""
    folder = tmp_path_factory.mktemp("frozen")
    train_cfg = frozen_backbone_config("resnet18", folder)
    write_params(folder / "params.yaml", {"base": {"seed": 3, "device": "cpu"}, "train": train_cfg})
    single = train(TrainConfig(**train_cfg, seed=3, device="cpu"), tiny_splits, tiny_dataset, folder / "single")
    return train_cfg, folder / "params.yaml", single


@pytest.mark.slow
def test_torchrun_on_two_nodes_trains_what_one_process_trains_and_rank_0_alone_writes(
    frozen_run, tiny_dataset, tiny_splits, tmp_path
):
    """``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d``: two machines' worth of
    processes on 127.0.0.1, gloo. Each node starts in its own folder and is given relative output
    folders, so that a write by the other rank would land in its own folder: only one folder gets
    the checkpoints and reports, and the other stays empty (as on nodes without shared storage)."""
    _, params, single = frozen_run
    nodes = [tmp_path / "node-a", tmp_path / "node-b"]
    for node in nodes:  # relative paths that exist are taken from the working folder
        (node / "model").mkdir(parents=True)
        (node / "reports").mkdir()
    results = run_two_nodes(train_command(params, tiny_dataset, tiny_splits, "model", "reports"), nodes)
    for code, out, err in results:
        assert code == 0, out[-3000:] + err[-3000:]

    wrote = [node for node in nodes if any((node / "model").iterdir())]
    assert len(wrote) == 1, "checkpoints must be written by rank 0 alone"
    main, other = wrote[0], next(n for n in nodes if n != wrote[0])
    assert sorted(p.name for p in (main / "model").iterdir()) == ["best.pt", "last.pt"]  # no temporary left
    assert not any((other / "model").iterdir()) and not any((other / "reports").iterdir())
    outs = {node: out for node, (_, out, _) in zip(nodes, results)}
    assert outs[main].count("best epoch") == 1 and "best epoch" not in outs[other]  # rank 0 reports

    summary = json.loads((main / "reports" / "details.json").read_text())
    assert summary["world_size"] == 2 and summary["best_epoch"] == single.summary["best_epoch"]
    assert_same_training(read_history(main / "reports"), main / "model" / "last.pt", single)
    last = torch.load(main / "model" / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["rng"]) == 2


INTERRUPTED = textwrap.dedent("""
    import json, sys
    from deepfake.training.train import TrainConfig, train

    cfg, splits, faces, out = json.loads(sys.argv[1])

    class Interrupted(Exception):
        pass

    def stop(epoch, step):
        if epoch == 2:  # every rank, at the same step: no process waits for another
            raise Interrupted(f"interrupted in epoch {epoch} after batch {step}")

    train(TrainConfig(**cfg), splits, faces, out, callback=stop)
    """)


@pytest.mark.slow
def test_a_run_of_two_nodes_resumes_in_one_process_to_the_same_result(frozen_run, tiny_dataset, tiny_splits, tmp_path):
    """The training state does not depend on the world size (global batches from the seed and the
    epoch, the optimizer and schedule of the global batch): a run of two nodes stopped after its
    first epoch continues in a single process and ends where one process alone would have."""
    train_cfg, _, single = frozen_run
    cfg = {**train_cfg, "seed": 3, "device": "cpu"}
    (tmp_path / "interrupted.py").write_text(INTERRUPTED)
    args = [
        str(tmp_path / "interrupted.py"),
        json.dumps([cfg, str(tiny_splits), str(tiny_dataset), str(tmp_path / "model")]),
    ]
    results = run_two_nodes(args, [tmp_path / "node-a", tmp_path / "node-b"])
    for code, out, err in results:
        assert code != 0 and "interrupted in epoch 2 after batch 1" in err, out[-3000:] + err[-3000:]
    stopped = torch.load(tmp_path / "model" / "last.pt", weights_only=True)
    assert (stopped["epoch"], stopped["step"], stopped["world_size"]) == (1, 0, 2)

    with pytest.warns(UserWarning, match=r"written by 2 process\(es\), this run has 1: the weights, optimizer"):
        resumed = train(TrainConfig(**{**cfg, "resume": True}), tiny_splits, tiny_dataset, tmp_path / "model")
    assert list(resumed.history["epoch"]) == [1, 2] and resumed.summary["best_epoch"] == single.summary["best_epoch"]
    assert_same_training(resumed.history, resumed.last_checkpoint, single)
    assert torch.load(resumed.last_checkpoint, weights_only=True)["world_size"] == 1
