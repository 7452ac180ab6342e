"""Training across processes: the checkpoint lock, DDP with gloo on the CPU against one process, the batch loader.

Real processes throughout (forked, one torch thread each, loopback only). Tolerances: each rank sums the
gradient of its rows and gloo sums the ranks, where one process sums the whole batch at once, and the forward
runs on 4 rows instead of 8: float32 reduction order alone. Measured over six AdamW steps at lr 5e-4: logged
losses differ by at most 6e-6 (1.1e-7 relative for the ViT; 1.7e-5 relative for an OFA loss part of 0.03),
weights by at most 5.6e-8 (attention key biases aside, see _without_key_bias), logits of the final models by at
most 1.1e-5. The bounds (losses and logits 1e-4 absolute + 1e-4 relative, weights 1e-6) are 10x to 20x that,
and far below what a wrong loss weight (1.6e-2 relative on the ViT's loss) or masks drawn per rank instead of
for the global batch (3.1 relative on OFA's l3) give.
"""
import copy
import io
import json
import logging
import multiprocessing
import os
import socket
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch

from xaibench.cli import main
from xaibench.errors import XaibenchError
from xaibench.io import worker_id
from xaibench.training import DataSpec, TrainConfig, checkpoint_path, distributed, load_trained, train_model, trainer

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}
LOSS_RTOL = LOSS_ATOL = 1e-4
WEIGHT_ATOL = 1e-6
FORK = multiprocessing.get_context("fork")


def _train_options(**changes) -> dict:
    return dict(dict(steps=6, batch_size=8, eval_every=1, warmup_steps=2, n_masks=2, init=None, model_options=TINY),
                **changes)


def _data(n_samples: int) -> DataSpec:
    return DataSpec("synthetic", 16, None, {"n_samples": n_samples, "seed": 5})


@pytest.fixture
def one_thread():
    """One torch thread in this process (as in the forked ones), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_rank(rank: int, port: int, tmp: str, cli_argv: list[str], results) -> None:
    """One of two gloo ranks: a `ce` ViT through train_model, then OFA through `xaibench train` (what
    `torchrun ... -m xaibench.cli train` runs on each rank)."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    vit = train_model("vit", _data(21), TrainConfig.from_dict(_train_options()), 0, "cpu", f"{tmp}/ddp",
                      progress=False)
    printed, errors = io.StringIO(), io.StringIO()
    with redirect_stdout(printed), redirect_stderr(errors):
        code = main(cli_argv)
    torch.save(vit.model.state_dict(), f"{tmp}/vit-rank{rank}.pt")  # tensors in a queue need their sender alive
    reread = None
    if rank == 0:  # the process group is gone: one process alone reads the checkpoint the collective wrote
        with distributed.local_only():
            reread = train_model("vit", _data(21), TrainConfig.from_dict(_train_options()), 0, "cpu", f"{tmp}/ddp",
                                 progress=False).record == vit.record
    results.put((rank, worker_id(), vit.record, code, printed.getvalue(), errors.getvalue(), reread))


def _history(record: dict, names: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([[entry[name] for name in names] for entry in record["history"]], dtype=torch.float64)


def _assert_close_training(ddp_record, ddp_state, one, names):
    assert [entry["step"] for entry in ddp_record["history"]] == [entry["step"] for entry in one.record["history"]]
    torch.testing.assert_close(_history(ddp_record, names), _history(one.record, names), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    assert ddp_record["best_step"] == one.record["best_step"]
    reference = one.model.state_dict()
    assert ddp_state.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(_without_key_bias(name, ddp_state[name]), _without_key_bias(name, tensor), rtol=0,
                                   atol=WEIGHT_ATOL, msg=name)
    x, _ = _data(21).load("val").batch()
    model = copy.deepcopy(one.model)
    model.load_state_dict(ddp_state)
    with torch.no_grad():  # the key biases included: the same function
        torch.testing.assert_close(model.eval()(x), one.model.eval()(x), rtol=LOSS_RTOL, atol=LOSS_ATOL)


def _without_key_bias(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """An attention's key bias has a zero gradient in exact arithmetic (softmax ignores what it adds to every
    key of a query), so AdamW turns the rounding noise of its gradient into steps of about lr either way."""
    if not name.endswith("attn.qkv.bias"):
        return tensor
    width = tensor.shape[0] // 3
    return torch.cat([tensor[:width], tensor[2 * width:]])


def test_two_gloo_ranks_train_as_one_process_with_the_global_batch(tmp_path, one_thread):
    # n_samples 21 and 17 with a global batch of 8: the last batches (5 and 1 images) split 2/3 and 0/1 over the
    # ranks (a rank without rows joins with weight 0); 6 steps cross an epoch boundary (a new order)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"train": _train_options(), "data": {"synthetic": {"n_samples": 17,
                                                                                         "seed": 5}}}))
    cli_argv = ["train", "--models", "ofa", "--datasets", "synthetic", "--size", "16", "--config", str(config_file),
                "--set", "n_masks=4", "--cache", str(tmp_path / "ddp"), "--out", str(tmp_path / "out"), "--quiet"]
    results = FORK.Queue()
    port = _free_port()
    ranks = [FORK.Process(target=_ddp_rank, args=(rank, port, str(tmp_path), cli_argv, results)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    out = dict((item[0], item[1:]) for item in (results.get(timeout=120) for _ in ranks))
    for process in ranks:
        process.join(timeout=30)
        assert process.exitcode == 0
    (main_id, vit_record, code, printed, errors, _), other = out[0], out[1]
    assert code == 0 and other[2] == 0 and other[4] == "" and "Traceback" not in errors and out[0][-1] is True
    assert vit_record["computed_by"] == main_id and vit_record["world_size"] == 2
    vit_state, other_state = (torch.load(tmp_path / f"vit-rank{rank}.pt") for rank in (0, 1))
    assert all(torch.equal(vit_state[name], other_state[name]) for name in vit_state)  # every rank: one model
    assert other[3] == "" and "Table 1 written" in errors and "| OFA |" in printed  # rank 0 alone reports
    assert "| OFA |" in (tmp_path / "out" / "table1.md").read_text()
    ofa_config = TrainConfig.from_dict(_train_options(n_masks=4))
    ofa = load_trained(checkpoint_path(_data(17), "ofa", ofa_config, 0, tmp_path / "ddp"))
    assert ofa.record["computed_by"] == main_id and ofa.record["world_size"] == 2

    one_vit = train_model("vit", _data(21), TrainConfig.from_dict(_train_options()), 0, "cpu", tmp_path / "one",
                          progress=False)
    _assert_close_training(vit_record, vit_state, one_vit, ("loss", "val_acc"))
    one_ofa = train_model("ofa", _data(17), ofa_config, 0, "cpu", tmp_path / "one", progress=False)
    assert one_ofa.path.name == ofa.path.name  # the command built the same config: the same checkpoint key
    _assert_close_training(ofa.record, ofa.model.state_dict(), one_ofa, ("loss", "l1", "l2", "l3", "val_acc"))
    assert "world_size" not in one_ofa.record and one_ofa.record["computed_by"] == worker_id()


def _train_concurrently(tmp: str, start, results) -> None:
    torch.set_num_threads(1)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("xaibench.training.trainer").addHandler(handler)
    logging.getLogger("xaibench.training.trainer").setLevel(logging.INFO)
    start.wait()
    trained = train_model("vit", _data(64), TrainConfig.from_dict(_train_options(steps=40, eval_every=20)), 0,
                          "cpu", tmp, progress=False)
    torch.save(trained.model.state_dict(), f"{tmp}/{os.getpid()}.weights")
    results.put((worker_id(), trained.record["computed_by"], os.getpid(),
                 any("trained meanwhile by another process" in line for line in seen)))


def test_two_processes_asking_for_one_checkpoint_train_it_once(tmp_path):
    start, results = FORK.Barrier(2), FORK.Queue()
    workers = [FORK.Process(target=_train_concurrently, args=(str(tmp_path), start, results)) for _ in range(2)]
    for process in workers:
        process.start()
    (first, first_by, first_pid, first_waited), (second, second_by, second_pid, second_waited) = (
        results.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert first_by == second_by and first_by in (first, second)  # one trained, the other loaded its checkpoint
    assert sorted([first_waited, second_waited]) == [False, True]  # ... after waiting for the lock
    assert (first_by == first) == second_waited
    first_state, second_state = (torch.load(tmp_path / f"{pid}.weights") for pid in (first_pid, second_pid))
    assert all(torch.equal(first_state[name], second_state[name]) for name in first_state)
    assert len(list((tmp_path / "checkpoints").glob("*.safetensors"))) == 1


def test_loader_batches_are_the_in_memory_batches_and_resume(tmp_path, monkeypatch, caplog, one_thread):
    config = TrainConfig.from_dict(_train_options(steps=8, eval_every=4))
    reference = train_model("ofa", _data(21), config, 0, "cpu", tmp_path / "memory", progress=False)
    finish = trainer._finish

    def interrupted(*args, **kwargs):
        raise RuntimeError("interrupted before the final checkpoint")

    monkeypatch.setattr(trainer, "_finish", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):  # a DataLoader with a worker process, 8 steps
        train_model("ofa", _data(21), config, 0, "cpu", tmp_path / "loader", progress=False, workers=1)
    monkeypatch.setattr(trainer, "_finish", finish)
    with caplog.at_level(logging.INFO, logger="xaibench.training.trainer"):  # resumes mid-epoch at step 4
        resumed = train_model("ofa", _data(21), config, 0, "cpu", tmp_path / "loader", progress=False, workers=1)
    assert any("from step 4" in record.getMessage() for record in caplog.records)
    timeless = [[{k: v for k, v in entry.items() if k != "images_per_s"} for entry in trained.record["history"]]
                for trained in (resumed, reference)]
    assert timeless[0] == timeless[1]
    assert all(torch.equal(tensor, reference.model.state_dict()[name])
               for name, tensor in resumed.model.state_dict().items())


def test_global_batch_must_divide_by_the_world_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(XaibenchError, match="batch_size 8 .*world size 3"):
        train_model("vit", _data(21), TrainConfig.from_dict(_train_options()), 0, "cpu", tmp_path, progress=False)
    code = main(["train", "--models", "vit", "--datasets", "synthetic", "--set", "batch_size=8", "--cache",
                 str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "world size 3" in err
