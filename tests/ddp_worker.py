"""Run by test_trainer under torchrun (2 processes) and alone: train, then dump results."""

import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from test_trainer import cfg, model_factory, windows  # noqa: E402

from minift.train import Trainer  # noqa: E402
from minift.train.distributed import cleanup, setup_distributed  # noqa: E402


def main(out: str) -> None:
    info = setup_distributed("cpu")
    torch.set_num_threads(1)
    model = model_factory(dropout=0.0).double()  # float64: the ranks sum in another order
    result = Trainer(model, cfg(steps=6), windows(8)).fit()
    if info.is_main:
        weights = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
        pathlib.Path(out + ".json").write_text(
            json.dumps(
                {"losses": result.losses(), "weights": weights, "world_size": info.world_size}
            )
        )
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
