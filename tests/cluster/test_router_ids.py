"""Routing of the sampler routes by path (fast, no workers): GET / DELETE /samplers/{id} follow the
sampler's pin, like every request naming a sampling_session_id."""

from __future__ import annotations

from mint.cluster.router import Router, _ids_of


def test_sampler_paths_follow_their_pin():
    router = Router(["http://a", "http://b"])
    router.learn(1, {"sampling_session_id": "s1"})
    for path in ("/api/v1/samplers/s1",):
        ids = _ids_of(path, "", b"")
        assert ids == {"sampling_session_id": "s1"}
        assert router.choose(path, ids) == 1
    assert router.choose("/api/v1/samplers/unknown", _ids_of("/api/v1/samplers/unknown", "", b"")) == 0
    # A checkpoint path that merely contains a "samplers"-like segment is not a sampler route.
    assert _ids_of("/api/v1/training_runs/r/checkpoints/sampler_weights/samplers", "", b"") == {}
