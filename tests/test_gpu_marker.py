"""The `gpu` marker (tests/conftest.py): skipped with its reason without a CUDA GPU, a failure where
SFTADAPT_GPU_TESTS=1 asks for a GPU run, and run on the CPU only in an explicit rehearsal."""

from conftest import GPU_ON_CPU_ENV, GPU_TESTS_ENV, gpu_verdict


def test_a_gpu_test_runs_where_cuda_is_and_is_skipped_with_its_reason_elsewhere():
    assert gpu_verdict(True, {}) is None
    assert gpu_verdict(True, {GPU_TESTS_ENV: "1"}) is None
    assert gpu_verdict(False, {}) == ("skip", "needs a CUDA GPU")
    assert gpu_verdict(False, {GPU_TESTS_ENV: "0"}) == ("skip", "needs a CUDA GPU")


def test_a_gpu_run_without_a_gpu_fails_even_when_a_rehearsal_is_asked_for_too():
    for env in ({GPU_TESTS_ENV: "1"}, {GPU_TESTS_ENV: "1", GPU_ON_CPU_ENV: "1"}):
        action, reason = gpu_verdict(False, env)
        assert action == "fail" and "torch.cuda.is_available() is false" in reason
    assert gpu_verdict(False, {GPU_ON_CPU_ENV: "1"}) is None  # the rehearsal alone runs them on the CPU


def test_the_marker_is_registered(pytestconfig):
    assert any(m.startswith("gpu:") for m in pytestconfig.getini("markers"))
