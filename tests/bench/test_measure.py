import math
import time

import pytest
import torch

from bench.core import hardware
from bench.run import measure
from bench.run.measure import PhaseMeter, SavedTensorTracker, confidence_interval95, saved_bytes_of


def test_saved_bytes_count_what_autograd_keeps_and_release_it_after_backward():
    x = torch.randn(1000, requires_grad=True)
    w = torch.randn(1000, requires_grad=True)
    tracker = SavedTensorTracker()
    with tracker.track():
        y = (x * w).sum()  # mul saves both operands
        assert tracker.live == 2 * 1000 * 4
        y.backward()
    assert tracker.peak == 8000 and tracker.live == 0


def test_a_tensor_saved_twice_counts_once():
    x = torch.randn(256, requires_grad=True)
    assert saved_bytes_of(lambda: (x * x).sum().backward()) == 256 * 4


def test_saved_bytes_are_the_peak_not_the_sum_of_sequential_graphs():
    x = torch.randn(500, requires_grad=True)

    def two_backwards():
        for _ in range(2):
            (x.exp() * 2).sum().backward()  # exp saves its 2000-byte result; each graph freed before the next

    assert saved_bytes_of(two_backwards) == 2000


def test_confidence_interval_is_1_96_sample_standard_deviations_over_root_n():
    mean, half = confidence_interval95([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5
    assert math.isclose(half, 1.96 * math.sqrt(1 / 3) / 2)
    assert math.isnan(confidence_interval95([0.3])[1])


def test_phase_meter_times_after_warmup_and_counts_saved_bytes_during_it():
    meter = PhaseMeter(torch.device("cpu"), warmup=1)
    x = torch.randn(100, requires_grad=True)
    for _ in range(4):
        with meter.step():
            (x * x).sum().backward()
            time.sleep(0.002)
    summary = meter.summary("train")
    assert summary["train_timed_steps"] == 3 and summary["train_ms_median"] >= 2.0
    assert summary["train_saved_bytes_peak"] == 400
    assert summary["train_rss_peak_bytes"] > 0 and "train_cuda_peak_bytes" not in summary


def test_cuda_clock_reads_are_synchronised_and_peaks_reset_per_step(monkeypatch):
    """The CUDA path, exercised on the CPU: every clock read is preceded by a synchronize of the device, and the
    peak counter is reset at the start of each step."""
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(("sync", str(device))))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append(("reset", str(device))))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1234)
    real_clock = time.perf_counter
    monkeypatch.setattr(measure.time, "perf_counter", lambda: events.append(("clock", "")) or real_clock())
    meter = PhaseMeter(torch.device("cuda:0"), warmup=0)
    with meter.step():
        events.append(("work", ""))
    assert events == [("sync", "cuda:0"), ("reset", "cuda:0"), ("clock", ""), ("work", ""), ("sync", "cuda:0"),
                      ("clock", "")]
    assert meter.summary("train")["train_cuda_peak_bytes"] == 1234


def test_phase_peaks_leave_out_what_runs_between_steps(monkeypatch):
    """Validation runs between meta-iterations: its CUDA peak (here 9 GB) must not become the training peak."""
    state = {"peak": 0}

    def allocate(nbytes):
        state["peak"] = max(state["peak"], nbytes)

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    meter = PhaseMeter(torch.device("cuda:0"), warmup=0)
    for step_bytes in (1000, 3000, 2000):
        with meter.step():
            allocate(step_bytes)
        allocate(9 * 10**9)  # a validation pass
    assert meter.summary("train")["train_cuda_peak_bytes"] == 3000


def test_expanded_tensors_count_the_storage_they_repeat():
    base = torch.randn(10, 100, dtype=torch.float64)
    assert measure.storage_span_bytes(base.expand(32, 10, 100)) == 8000  # stride 0: the base's bytes, not 32x
    assert measure.storage_span_bytes(base[2:4]) == 1600  # a slice: its own bytes
    assert measure.storage_span_bytes(base[:, ::10]) == (9 * 100 + 9 * 10 + 1) * 8  # strided: the span it covers
    w, r = torch.randn(100, requires_grad=True), torch.randn(50, 100, requires_grad=True)
    assert saved_bytes_of(lambda: (w.expand(50, 100) * r).sum().backward()) == 400 + 50 * 100 * 4


def test_devices_that_are_not_there_say_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.device_available("cpu") == (True, "")
    available, why = hardware.device_available("cuda:1")
    assert not available and "CUDA is not available" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert hardware.device_available("cuda:1") == (False, "cuda:1: only 1 CUDA device(s) present")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; the CUDA path is also exercised "
                                                          "above with torch.cuda's functions replaced")
def test_real_cuda_peak_memory():
    meter = PhaseMeter(torch.device("cuda"), warmup=0)
    with meter.step():
        torch.empty(1 << 20, device="cuda")
    assert meter.summary("x")["x_cuda_peak_bytes"] >= 1 << 20


def test_empty_saved_tensors_hold_nothing_and_do_not_confuse_the_count():
    """cuDNN's batch norm saves an empty reserve tensor; several empties share address 0."""

    class SavesEmpties(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x, torch.empty(0), torch.empty(0))
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    x = torch.randn(10, requires_grad=True)
    tracker = SavedTensorTracker()
    with tracker.track():
        for _ in range(3):
            SavesEmpties.apply(x).sum().backward()
    assert tracker.peak == 40 and tracker.live == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (cuDNN batch norm saves empty tensors)")
def test_saved_bytes_on_cuda_with_cudnn_batch_norm():
    layer = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8, track_running_stats=False)).cuda()
    x = torch.randn(16, 1, 28, 28, device="cuda")
    tracker = SavedTensorTracker()
    with tracker.track():
        for _ in range(3):
            layer(x).sum().backward()
    torch.cuda.synchronize()
    assert tracker.peak > 16 * 8 * 26 * 26 * 4 and tracker.live == 0


def test_a_cells_phases_add_up_to_its_wall_clock_and_the_report_shows_where_the_time_went(tmp_path):
    """Every interval of a cell is one phase's: the phases sum to the cell's seconds (what they miss is the clock's
    own reading, microseconds); the report has the table per learner."""
    import yaml

    from bench.__main__ import main
    from bench.core import metrics as m
    from tests.suites import TINY, cell_runs

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**TINY, "learners": ["fomaml/functional", "protonet"],
                                    "report": {"output_dir": str(tmp_path / "reports")}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress"]) == 0
    for run in cell_runs(uri):
        metrics = run.data.metrics
        phases = sum(metrics[m.time_in(phase)] for phase in m.TIME_PHASES)
        assert metrics[m.time_in("steps")] > 0 and metrics[m.time_in("test")] > 0 and metrics[m.STORE_SECONDS] > 0
        assert 0.98 * metrics[m.CELL_SECONDS] <= phases <= metrics[m.CELL_SECONDS]
    report = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "## Where the time went" in report and "| fomaml/functional | 1 |" in report
