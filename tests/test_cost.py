"""minift.train.cost: the report's arithmetic, budgets that stop the trainer before the
step that would overspend, and budgets that cannot fit one step. Time is a scripted clock
(one second per reading), so nothing depends on how fast this machine is."""

import pytest
import torch

from minift.errors import UserError
from minift.model import GPT, GPTConfig
from minift.train import TrainConfig, Trainer
from minift.train.cost import Budget, CostMeter
from minift.train.flops import flops_per_step


class Clock:
    def __init__(self, step=1.0):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


def run(meter, steps=10):
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31)
    model = GPT(config)
    data = torch.randint(0, 31, (4, 9))
    trainer = Trainer(model, TrainConfig(steps=steps, lr=1e-3, progress=False),
                      lambda s, m: (data[:, :-1], data[:, 1:]), on_step=meter)  # fmt: skip
    meter.start()
    return trainer.fit(), config


def test_flop_budget_stops_before_overspending():
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=31)
    per_step = flops_per_step(config, 4, 8)
    meter = CostMeter(per_step, 32, Budget(flops=3.5 * per_step))
    result, _ = run(meter)
    assert result.steps_done == 3 and result.stopped_early
    report = meter.report()
    assert report.flops == 3 * per_step and report.tokens == 96
    assert report.stopped_by_budget == "flops" and report.flops <= 3.5 * per_step
    assert report.peak_memory_bytes > 0


def test_time_and_money_budgets_on_a_scripted_clock():
    # start() reads t=1; step k reads t=1+k: each step "takes" one second.
    meter = CostMeter(1e6, 10, Budget(seconds=4.5), watts=360.0, price_per_hour=7.2,
                      peak_flops_per_s=4e6, clock=Clock(1.0))  # fmt: skip
    result, _ = run(meter)
    assert result.steps_done == 4  # a fifth would end at 5 s > 4.5 s
    r = meter.report()
    assert r.seconds == 4.0 and r.stopped_by_budget == "seconds"
    assert r.energy_wh == pytest.approx(360 * 4 / 3600)
    assert r.money == pytest.approx(7.2 * 4 / 3600)
    assert r.mfu == pytest.approx(4e6 / 4.0 / 4e6)
    assert "4 steps" in r.line()

    meter = CostMeter(1e6, 10, Budget(money=7.2 * 6.5 / 3600), price_per_hour=7.2, clock=Clock())
    assert run(meter)[0].steps_done == 6


def test_budgets_that_cannot_fit_one_step():
    with pytest.raises(UserError, match="FLOP budget 100 cannot fit one step"):
        CostMeter(1e6, 10, Budget(flops=100))
    with pytest.raises(UserError, match="seconds budget 0.5 cannot fit one step"):
        run(CostMeter(1e6, 10, Budget(seconds=0.5), clock=Clock()))
    with pytest.raises(UserError, match="budget seconds must be > 0"):
        Budget(seconds=0)
    with pytest.raises(UserError, match="money budget needs price_per_hour"):
        CostMeter(1e6, 10, Budget(money=1.0))
