"""MCU_DEVICES_PER_JOB as a number of ranks and the problems of failed ranks (worker/data_parallel.py)."""

import pytest
import torch

from settings import Settings
from worker.data_parallel import devices_per_job


def test_cpu_ranks_are_as_many_as_set_and_all_is_one_without_a_gpu() -> None:
    assert devices_per_job(2, "cpu") == 2
    assert devices_per_job(1, "cpu") == 1
    assert devices_per_job("all", "cpu") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_job_uses_at_most_the_visible_gpus() -> None:
    visible = torch.cuda.device_count()
    assert devices_per_job("all", "cuda") == visible
    assert devices_per_job(visible + 3, "cuda") == visible


@pytest.mark.parametrize("value", ["0", "-1", "some", "65"])
def test_bad_settings_are_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCU_DEVICES_PER_JOB", value)
    with pytest.raises(ValueError, match="devices_per_job"):
        Settings()


def test_the_setting_reads_a_number_or_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCU_DEVICES_PER_JOB", "4")
    assert Settings().devices_per_job == 4
    monkeypatch.setenv("MCU_DEVICES_PER_JOB", "all")
    assert Settings().devices_per_job == "all"


def test_a_ranks_own_problem_is_the_requests_and_a_death_is_training_processes_failed() -> None:
    from unlearning.training import DivergenceError
    from worker.data_parallel import DataParallelError
    from worker.errors import problem_for

    diverged = problem_for(DivergenceError("curve training diverged"))
    assert problem_for(DataParallelError("curve training diverged", diverged)) == diverged
    died = problem_for(DataParallelError("failed 3 times"))
    assert died["type"].endswith("/training-processes-failed") and died["detail"] == "failed 3 times"
