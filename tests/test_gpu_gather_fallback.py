"""core.gather's Triton fallback sorts what it catches: compile and launch failures fall back to index_select
(tests/test_gather.py's broken_triton); a bad argument (ValueError, TypeError) or a CUDA out-of-memory is
raised and leaves Triton on. On the CPU, with the CUDA method table and a mocked launch."""
import pytest
import torch

from core import gather


def _raising(monkeypatch, exc: BaseException):
    """The CUDA method table on the CPU, with a Triton launch that raises exc."""
    from core import triton_gather

    def launch(gy, idx, tile=None, out=None):
        raise exc

    monkeypatch.setattr(triton_gather, "gather_columns", launch)
    monkeypatch.setattr(gather, "_triton_ok", True)
    monkeypatch.setattr(gather, "_triton_failure", None)
    monkeypatch.setattr(gather, "_used", {})
    monkeypatch.setitem(gather.METHODS, "cpu", gather._cuda_method)


@pytest.mark.parametrize("exc", [ValueError("out must be (9, 20)"), TypeError("bad tile"),
                                 torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")])
def test_a_bad_argument_or_oom_is_raised_and_triton_stays_on(monkeypatch, exc):
    import warnings
    _raising(monkeypatch, exc)
    G, idx = torch.randn(9, 50), torch.arange(0, 40, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # no "Triton gather kernel failed"
        with pytest.raises(type(exc), match=str(exc).split(".")[0][:12]):
            gather.gather_columns(G, idx)
    assert gather.method_for(G.device) is gather.triton_or_index_select   # not disabled for the process
    assert gather._triton_failure is None


def test_a_triton_compile_error_falls_back():
    CompilationError = type("CompilationError", (Exception,), {"__module__": "triton.compiler.errors"})
    OutOfResources = type("OutOfResources", (Exception,), {"__module__": "triton.runtime.errors"})
    for e in (CompilationError("at 3:4: bad"), OutOfResources("shared memory"), RuntimeError("no kernel image"),
              ImportError("libcuda.so")):
        assert gather.kernel_failure(e)
    for e in (ValueError("x"), TypeError("x"), KeyError("x"), torch.cuda.OutOfMemoryError("x")):
        assert not gather.kernel_failure(e)


def test_the_real_wrong_out_raises_before_any_launch():
    from core import triton_gather as T
    G, idx = torch.randn(9, 50), torch.arange(0, 40, 2)
    with pytest.raises(ValueError, match="unit column stride"):
        T.gather_columns(G, idx, out=torch.empty(9, 21))
    with pytest.raises(ValueError, match="unit column stride"):
        T.gather_columns(G, idx, out=torch.empty(20, 9).t())
