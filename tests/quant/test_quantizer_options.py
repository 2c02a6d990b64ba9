"""The options every quantizer takes are checked in one place (the base class), each with its
own one-line error naming the option, the same for every structure."""

from __future__ import annotations

import pytest

from rpq_units import QuantizerError, make_quantizer
from rpq_units.quant.base import METHODS

# the structures fitted by iterations take max_iter, tol and max_frames; random projection
# learns nothing but per-dim statistics and takes none of them
ITERATIVE = sorted(set(METHODS) - {"random_projection"})

COMMON = [("num_codebooks", 0, "num_codebooks must be >= 1, got 0"),
          ("codebook_size", 1, "codebook_size must be >= 2, got 1"),
          ("seed", -1, "seed must be >= 0, got -1")]
FIT = [("max_iter", 0, "max_iter must be >= 1, got 0"),
       ("tol", -1e-4, "tol must be >= 0, got -0.0001"),
       ("max_frames", 0, "max_frames must be >= 1, got 0")]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name,value,message", COMMON)
def test_common_option_out_of_range(method, name, value, message):
    if method == "kmeans" and name == "num_codebooks":  # one codebook, said in its own words
        message = "kmeans has a single codebook (num_codebooks=1), got 0; use method 'pq' or " \
                  "'rpq' for several unit streams"
    with pytest.raises(QuantizerError) as e:
        make_quantizer(method, **{name: value})
    assert str(e.value) == message


@pytest.mark.parametrize("method", ITERATIVE)
@pytest.mark.parametrize("name,value,message", FIT)
def test_fit_option_out_of_range(method, name, value, message):
    with pytest.raises(QuantizerError) as e:
        make_quantizer(method, **{name: value})
    assert str(e.value) == message


@pytest.mark.parametrize("method", ITERATIVE)
def test_fit_options_kept(method):
    q = make_quantizer(method, max_iter=3, tol=0, max_frames=500, seed=7)
    assert (q.max_iter, q.tol, q.max_frames, q.seed) == (3, 0.0, 500, 7)
    assert {"max_iter": 3, "tol": 0.0, "max_frames": 500}.items() <= q.config().items()
    assert make_quantizer(method).max_frames is None


@pytest.mark.parametrize("name", ["max_iter", "tol", "max_frames"])
def test_random_projection_takes_no_fit_options(name):
    with pytest.raises(TypeError):
        make_quantizer("random_projection", **{name: 1})


@pytest.mark.parametrize("method,name", [("rvq", "beam_width"), ("avq", "beam_width"),
                                         ("random_projection", "proj_dim"),
                                         ("random_projection", "stack_frames")])
def test_structure_option_out_of_range(method, name):
    with pytest.raises(QuantizerError, match=f"^{name} must be >= 1, got 0$"):
        make_quantizer(method, **{name: 0})
